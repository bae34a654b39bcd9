// The daemon's metrics: one prom-client registry (its own, not the library's
// global one, so two daemons in one process — tests — never share counters),
// the counters and histograms the events of src/mail/metrics-events.ts move,
// and the gauges read on scrape from the parts that know them (queue depth,
// the pool's per-owner load, worker and spam checker processes and their
// resident memory from /proc/PID/status). Nothing is kept on the delivery
// path for a gauge. Every series is documented in docs/metrics.md.
//
// Exports: createMetrics, Metrics, MetricsSources, TOP_OWNERS.
// Failure contract: the event methods never throw (prom-client's inc/observe
// do not for the label values labels.ts makes); a source that throws on
// scrape fails that scrape (server.ts answers 500 and logs it).
import { readFile } from 'node:fs/promises';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { MetricsEvents, RecipientEvent } from '../mail/metrics-events.js';
import { dsnClass, parseVmRss, pluginLabel, policyActionLabel, protocolLabel, relayLabel, statusLabel, topOwners } from './labels.js';
import { summarisePercentiles, type Bucket, type DelaySummary } from './quantile.js';

/** Owners shown in mailprocd_owner_deliveries: the busiest ones; the rest are in the totals. */
export const TOP_OWNERS = 10;

/** What the gauges are read from on scrape; each part optional (spam checking may be off). */
export interface MetricsSources {
  readonly queue?: { depth(): number };
  readonly pool?: {
    load(): readonly { key: string; queued: number; active: number }[];
    list(): readonly { pid: number | undefined }[];
  };
  readonly spam?: { pids(): readonly number[]; parentPid(): number | undefined };
  readonly tables?: { generation(): number };
}

export interface Metrics extends MetricsEvents {
  readonly registry: Registry;
  /** Where the on-scrape gauges read from; called once the parts exist. */
  watch(sources: MetricsSources): void;
  /** Delivery delay and stage percentiles since start, from the histograms (`mailproc status`). */
  delays(): Promise<DelaySummary>;
}

/** A histogram's cumulative buckets (for one stage, when given), as prom-client reports them. */
async function bucketsOf(h: Histogram, stage?: string): Promise<Bucket[]> {
  const { values } = await h.get();
  return values
    .filter((v) => v.metricName?.endsWith('_bucket') === true && (stage === undefined || v.labels.stage === stage))
    .map((v) => ({ le: v.labels.le === '+Inf' ? Infinity : Number(v.labels.le), count: v.value }));
}

/** Delivery stages, Postfix's delays=a/b/c/d (src/mail/outcome.ts DeliveryTiming). */
const STAGES = [['before', 'beforeMs'], ['slot', 'slotMs'], ['transfer', 'transferMs'], ['work', 'workMs']] as const;
/** From a millisecond write to a day in the queue. */
const DELAY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 14400, 86400];
const STAGE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const POLICY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Sum of the processes' VmRSS; a process gone between listing and reading counts 0. */
async function residentBytes(pids: readonly number[]): Promise<number> {
  const sizes = await Promise.all(pids.map((pid) => readFile(`/proc/${pid}/status`, 'utf8').then(parseVmRss, () => undefined)));
  return sizes.reduce<number>((sum, n) => sum + (n ?? 0), 0);
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  let sources: MetricsSources = {};
  const registers = [registry];
  // Not prom-client's default process and Node.js series: several of its gauges
  // end in _total, which Prometheus's own lint (promtool check metrics)
  // refuses; the master's memory is below instead.

  const accepted = new Counter({ name: 'mailprocd_messages_accepted_total', help: 'Messages taken in after DATA (the intake log line), by protocol.', labelNames: ['protocol'], registers });
  const recipients = new Counter({
    name: 'mailprocd_recipients_total', help: 'Recipient delivery attempts by result (delivered, deferred, bounced), destination kinds (the log line\'s relay=) and DSN class (2, 4, 5).',
    labelNames: ['status', 'relay', 'dsn_class'], registers,
  });
  const stages = new Histogram({ name: 'mailprocd_delivery_stage_seconds', help: 'Time a delivery attempt spent in each stage (delays=a/b/c/d: before, slot, transfer, work).', labelNames: ['stage'], buckets: STAGE_BUCKETS, registers });
  const delay = new Histogram({ name: 'mailprocd_delivery_delay_seconds', help: 'From arrival to a recipient\'s delivery log line (delay=).', buckets: DELAY_BUCKETS, registers });
  const policy = new Counter({ name: 'mailprocd_policy_requests_total', help: 'Policy requests answered, by the plugin that decided ("none": nobody objected) and action.', labelNames: ['plugin', 'action'], registers });
  const policySeconds = new Histogram({ name: 'mailprocd_policy_request_duration_seconds', help: 'Time to answer a policy request, by the plugin that decided.', labelNames: ['plugin'], buckets: POLICY_BUCKETS, registers });
  const compiles = new Counter({ name: 'mailprocd_table_compiles_total', help: 'Table compiles the daemon ran (start, SIGHUP), by result (ok, error).', labelNames: ['result'], registers });
  const outages = new Counter({ name: 'mailprocd_state_engine_outages_total', help: 'Times the shared policy state engine (state.backend) became unreachable, by engine.', labelNames: ['engine'], registers });
  const outageCalls = new Counter({ name: 'mailprocd_state_engine_refused_calls_total', help: 'Policy state calls answered with the plugin\'s failure action because the engine was unreachable, by engine.', labelNames: ['engine'], registers });
  const refused = new Counter({ name: 'mailprocd_connections_refused_total', help: 'Connections turned away by a limit, by listener and limit.', labelNames: ['listener', 'limit'], registers });

  new Gauge({
    name: 'mailprocd_queue_messages', help: 'Messages in the queue: waiting for a retry, due, being delivered, or adopted from LMTP.', registers,
    collect() { this.set(sources.queue?.depth() ?? 0); },
  });
  new Gauge({
    name: 'mailprocd_deliveries', help: 'Deliveries waiting for a slot (queued) and in a slot (active), all owners.', labelNames: ['state'], registers,
    collect() {
      const load = sources.pool?.load() ?? [];
      this.set({ state: 'queued' }, load.reduce((n, l) => n + l.queued, 0));
      this.set({ state: 'active' }, load.reduce((n, l) => n + l.active, 0));
    },
  });
  new Gauge({
    name: 'mailprocd_owner_deliveries', help: `Deliveries queued and active for the ${TOP_OWNERS} busiest owners, by delivery identity (uid:gid).`, labelNames: ['owner', 'state'], registers,
    collect() {
      this.reset();
      for (const l of topOwners(sources.pool?.load() ?? [], TOP_OWNERS)) {
        this.set({ owner: l.key, state: 'queued' }, l.queued);
        this.set({ owner: l.key, state: 'active' }, l.active);
      }
    },
  });
  const workerPids = (): number[] => (sources.pool?.list() ?? []).flatMap((w) => (w.pid !== undefined ? [w.pid] : []));
  new Gauge({ name: 'mailprocd_workers', help: 'Worker processes alive (retired ones finishing their deliveries included).', registers, collect() { this.set(workerPids().length); } });
  new Gauge({
    name: 'mailprocd_workers_resident_bytes', help: 'Resident memory of all worker processes (VmRSS).', registers,
    async collect() { this.set(await residentBytes(workerPids())); },
  });
  new Gauge({ name: 'mailprocd_spam_checkers', help: 'Per-user spam checkers listening.', registers, collect() { this.set(sources.spam?.pids().length ?? 0); } });
  new Gauge({
    name: 'mailprocd_spam_checkers_resident_bytes', help: 'Resident memory (VmRSS) of the spam checker parent and of its per-user children; shared pages count in each.', labelNames: ['process'], registers,
    async collect() {
      const parent = sources.spam?.parentPid();
      this.set({ process: 'parent' }, await residentBytes(parent !== undefined ? [parent] : []));
      this.set({ process: 'children' }, await residentBytes(sources.spam?.pids() ?? []));
    },
  });
  new Gauge({ name: 'mailprocd_master_resident_bytes', help: 'Resident memory of the master process (mailprocd itself).', registers, collect() { this.set(process.memoryUsage.rss()); } });
  new Gauge({ name: 'mailprocd_tables_generation', help: 'Compile generation of the tables in use (goes up with each compile, `mailproc db compile` included).', registers, collect() { this.set(sources.tables?.generation() ?? 0); } });

  return {
    registry,
    watch(s) { sources = s; },
    async delays() {
      const [total, before, slot, transfer, work] = await Promise.all([bucketsOf(delay), ...STAGES.map(([stage]) => bucketsOf(stages, stage))]);
      return {
        total: summarisePercentiles(total),
        stages: {
          before: summarisePercentiles(before ?? []), slot: summarisePercentiles(slot ?? []),
          transfer: summarisePercentiles(transfer ?? []), work: summarisePercentiles(work ?? []),
        },
      };
    },
    messageAccepted(protocol) { accepted.inc({ protocol: protocolLabel(protocol) }); },
    recipientLogged(e: RecipientEvent) {
      recipients.inc({ status: statusLabel(e.code), relay: relayLabel(e.relay), dsn_class: dsnClass(e.code) });
      delay.observe(e.delayMs / 1000);
      if (e.timing !== undefined) for (const [stage, key] of STAGES) stages.observe({ stage }, Math.max(0, e.timing[key]) / 1000);
    },
    policyDecided(plugin, action, seconds) {
      policy.inc({ plugin: pluginLabel(plugin), action: policyActionLabel(action) });
      policySeconds.observe({ plugin: pluginLabel(plugin) }, Math.max(0, seconds));
    },
    tablesCompiled(ok) { compiles.inc({ result: ok ? 'ok' : 'error' }); },
    connectionRefused(listener, limit) { refused.inc({ listener, limit }); },
    stateEngineDown(engine) { outages.inc({ engine }); },
    stateEngineRefused(engine) { outageCalls.inc({ engine }); },
  };
}
