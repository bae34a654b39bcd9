// Start-up and shutdown of the daemon: config → instance lock → tables →
// worker pool → spool and queue → listeners → signals. Every failure to start
// is reported with what to fix (config key, table file:line, socket in use,
// the pid of the mailprocd that already holds the state directory) and exits
// non-zero. The instance lock (src/state/instance-lock.ts) comes before
// anything that writes: a second daemon on the same paths.state compiles no
// table and removes or binds no socket of the first.
// SIGTERM/SIGINT (stop()): at once, the queue starts nothing more (a queued
// recipient still waiting for a worker slot is not started either) and the
// listeners stop accepting (idle sessions get 421 4.3.2 at once, see
// Listener.close). Transactions and deliveries in progress have
// limits.shutdown_grace; then what is left gets 421 4.3.2 and the busy workers
// are ended (WorkerPool.terminate: SIGTERM, which kills their pipe commands'
// process groups, SIGKILL after KILL_AFTER_MS), their recipients answered
// 4.3.0 and kept in the spool. The daemon is stopped within grace +
// STOP_SLACK_MS whatever a delivery waits on (the CLI exits there at the
// latest), releases the lock, exit 0. Never a 250 for mail not stored.
// SIGHUP: re-read the configuration (listeners keep their sockets; the SMTP
// listener takes a new STARTTLS certificate and key, a bad pair fails the
// reload and the running one stays), forget cached user lookups, compile table sources edited since the last compile
// (as at start: a bad source is logged with file:line and the tables in use
// stay), then rebuild the per-user control sockets from the uid table.
// `mailproc db compile` needs no signal: LMDB readers see each compile.
import { chmod, mkdir, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import type { Destination } from './classify/rules.js';
import { ConfigError, loadConfig, type Config } from './config/index.js';
import { compileTables, formatSourceError, openTables, parseTableSource, type TablesInfo } from './db/index.js';
import { createLogger, type Logger } from './log.js';
import { lookupKeys } from './mail/address.js';
import { redeliveryKey } from './mail/redelivery.js';
import { startControl } from './control/server.js';
import { createRulesService } from './control/user-rules.js';
import { startUserSockets } from './control/user-sockets.js';
import { createDnsblPlugin, createSpfPlugin, policyRequest, startPolicyService, type PolicyService } from './policy/index.js';
import { createPolicyFilter, createSpamFilter, loadMilterFilters, POLICY_FILTER_OBSERVES, SPAM_FILTER_OBSERVES, startMilterService, type MilterFilterFactory, type NamedFilter } from './milter/index.js';
import { createMetrics, startMetricsServer, type Metrics } from './metrics/index.js';
import { QueueManager } from './queue/manager.js';
import { probeRelay, Relays } from './relay/index.js';
import { Spool } from './queue/spool.js';
import { describeBusy, lockInstance, openPolicyState, openStateMigrating, type InstanceLock } from './state/index.js';
import { Listener } from './smtp/server.js';
import {
  createDecisionLog, createDuplicateFilter, createIntake, createProbeLedger, createOwnerRules, createRelayCopyContext, srsRecipient, srsSender, createSpamVerdicts, deliverToAddress, deliverToRecipient, logDelivery, type DeliveryContext,
} from './local/index.js';
import type { PlanDefaults } from './classify/plan.js';
import { clearIdentityCache, resolveIdentity } from './os/identity.js';
import { WorkerPool } from './workers/pool.js';
import { SpamCheckers, spamAssassinInstalled } from './workers/spam-checkers.js';
import { TABLE_NAMES } from './classify/rules.js';

/** After the shutdown grace, how long a busy worker has to end its pipe commands and exit before SIGKILL. */
const KILL_AFTER_MS = 2_000;
/** After that, how long the queue may take to record the killed deliveries' outcomes before the daemon stops waiting. */
const RECORD_MS = 1_000;
/** How often decisions older than rules.log_max_age are dropped from the rules log. */
const DECISION_PRUNE_MS = 3_600_000;
/** stop() ends within limits.shutdown_grace plus this (the CLI exits there whatever is left). */
export const STOP_SLACK_MS = 4_500;

export interface Daemon {
  readonly config: () => Config;
  readonly listeners: readonly Listener[];
  readonly pool: WorkerPool;
  readonly queue: QueueManager;
  /** The daemon's logger (log.format, log.file, the journal's priorities): for the command's own lines, e.g. a signal received. */
  readonly log: Logger;
  stop(): Promise<void>;
  /** SIGHUP: never rejects; what failed is logged and the running state kept. */
  reload(): Promise<void>;
  /** SIGUSR1: log.file is closed and opened again by name (after logrotate moved it). */
  reopenLogs(): void;
}

/** Parses delivery.default with the rules source parser, so it takes the same syntax as a rule. */
export function parseDefaultDestination(text: string): Destination {
  const parsed = parseTableSource('rules', `default ${text}\n`, 'delivery.default');
  const rule = parsed.entries.get('default')?.[0];
  if (parsed.errors.length > 0 || rule === undefined || rule.conditions.length > 0) {
    const why = parsed.errors.map((e) => e.message).join('; ') || 'expected a destination without conditions';
    throw new Error(`delivery.default: ${why}`);
  }
  return rule.destination;
}

/** Where the tables come from and go to; fixed for the daemon's life (its readers are open on `db`). */
interface TablePaths {
  readonly sources: string;
  readonly db: string;
}

/**
 * Compiles the table sources when nothing is compiled yet or a source is newer
 * than its compiled table, as a newcomer who edits db/rules and restarts (or
 * sends SIGHUP) expects. A bad source leaves the old tables in place (and is
 * fatal only when there is nothing compiled at all). `allowRoot` is
 * delivery.allow_root: the compiler accepts uid/gid root for those keys.
 */
async function refreshTables(paths: TablePaths, info: TablesInfo, log: Logger, allowRoot: readonly string[], metrics: Metrics): Promise<void> {
  let stale = info.generation === 0;
  for (const t of TABLE_NAMES) {
    const src = await stat(join(paths.sources, t)).catch(() => undefined);
    const compiled = info.tables[t];
    if (src && (!compiled || src.mtimeMs > Date.parse(compiled.compiledAt))) stale = true;
  }
  if (!stale) {
    log.debug(`tables are up to date with ${paths.sources}`, { generation: info.generation });
    return;
  }
  const report = await compileTables({ sourceDir: paths.sources, dbDir: paths.db, allowRoot });
  metrics.tablesCompiled(report.ok);
  if (report.ok) {
    log.info(`compiled tables from ${paths.sources} into ${paths.db}`, { generation: report.generation });
    return;
  }
  for (const e of report.errors) log.error(formatSourceError(e));
  if (info.generation === 0) throw new Error(`table sources in ${paths.sources} have errors and no compiled tables exist`);
  log.warn('table sources have errors; still using the tables compiled before', { generation: info.generation });
}

/** What the tables say before the daemon opens them for good. */
async function compiledInfo(db: string): Promise<TablesInfo> {
  const probe = openTables(db);
  try {
    return probe.info();
  } finally {
    await probe.close();
  }
}

async function prepareDirectories(c: Config, log: Logger): Promise<void> {
  await mkdir(c.paths.state, { recursive: true, mode: 0o755 });
  await mkdir(c.paths.run, { recursive: true, mode: 0o755 });
  const existed = await stat(c.paths.mail).catch(() => undefined);
  if (!existed) {
    await mkdir(c.paths.mail, { recursive: true });
    // Not world-writable: the master makes each user's directory under it
    // (0700, theirs) before their first delivery, so no local user can plant
    // another's (src/workers/mail-root.ts).
    await chmod(c.paths.mail, 0o755);
    log.info(`created mail root ${c.paths.mail}`);
  } else if ((existed.mode & 0o002) !== 0) {
    log.warn(`mail root ${c.paths.mail} is world-writable (mode ${(existed.mode & 0o7777).toString(8)}): any local user can create another user's directory there before the first delivery (it is then refused, 4.2.0); mailprocd makes per-user directories itself, chmod 755 it`);
  }
  await warnIfUnreachable(c, log);
}

/**
 * As root we deliver as another user, who must be able to traverse every
 * directory above the mail root (a checkout under /root is not). Say so at
 * start rather than only in each deferred delivery.
 */
async function warnIfUnreachable(c: Config, log: Logger): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const who = await resolveIdentity(c.deliveryUser, c.deliveryGroup);
  if (typeof who === 'string') {
    log.warn(`delivery.user: ${who}; deliveries will be deferred`);
    return;
  }
  for (let dir = c.paths.mail; ; dir = dirname(dir)) {
    const st = await stat(dir).catch(() => undefined);
    const reachable = st === undefined || st.uid === who.uid || (st.mode & 0o001) !== 0 || (st.gid === who.gid && (st.mode & 0o010) !== 0);
    if (!reachable) {
      log.warn(`${dir} (mode ${(st.mode & 0o7777).toString(8)}) cannot be traversed by ${who.user}, who deliveries run as: mail to ${c.paths.mail} will be deferred; move the state directory or set delivery.user`);
      return;
    }
    if (dir === dirname(dir)) return;
  }
}

/**
 * logFormat overrides log.format (a command-line option). The log settings
 * are read at start only: a reload keeps the logger (and its file) it has.
 */
export async function startDaemon(opts: { configFile?: string; log?: Logger; logFormat?: 'text' | 'json' }): Promise<Daemon> {
  const config = loadConfig(opts.configFile);
  const root = opts.log === undefined ? createLogger({ ...config.log, format: opts.logFormat ?? config.log.format }) : undefined;
  const log = opts.log ?? root as Logger;
  try {
    const defaultDestination = parseDefaultDestination(config.delivery.default);
    // First of all: a second instance must not compile tables or unlink the first one's sockets.
    const instance = await lockInstance(config.paths.state);
    if (instance.kind === 'busy') throw new Error(describeBusy(instance));
    let daemon: Daemon;
    try {
      daemon = await startLocked(config, log, opts.configFile, defaultDestination, instance);
    } catch (err) {
      await instance.release();
      throw err;
    }
    return {
      ...daemon,
      reopenLogs: () => root?.reopen(),
      stop: () => daemon.stop().then(() => root?.close()),
    };
  } catch (err) {
    // The caller reports it on stderr, where an administrator starting the daemon looks.
    root?.close();
    throw err;
  }
}

/**
 * The spam checkers, when spam.enabled allows and SpamAssassin is installed
 * (auto: one log line when it is not, and mail is delivered unchecked). The
 * parent starts now, in the background; each user's checker with the first
 * message to check for them. The pool's
 * settings are read at start: max_checkers, idle and the Bayes sync change on
 * restart only.
 */
async function startSpamCheckers(config: Config, log: Logger): Promise<SpamCheckers | undefined> {
  const s = config.spam;
  // The milter's site check uses the same checkers (as milter.spam.user), whatever delivery's spam.enabled says.
  const site = config.milter.listen.length > 0 ? config.milter.spam.enabled : false;
  if (s.enabled === false && site === false) return undefined;
  if (!(await spamAssassinInstalled(s.perl))) {
    if (s.enabled === 'auto') log.info('spam checking off: SpamAssassin is not installed (Debian: apt-get install spamassassin); mail is delivered unchecked');
    else if (s.enabled === true) log.error(`spam.enabled is true but ${s.perl} cannot load Mail::SpamAssassin (Debian: apt-get install spamassassin); every check fails as spam.on_error (${s.on_error}) says`);
    if (site === true) log.error(`milter.spam.enabled is true but ${s.perl} cannot load Mail::SpamAssassin (Debian: apt-get install spamassassin); every site check fails as milter.spam.on_error (${config.milter.spam.on_error}) says`);
    return undefined;
  }
  const checkers = new SpamCheckers({
    runDir: config.paths.run, perl: s.perl, idleMs: s.idle, maxCheckers: s.max_checkers, startTimeoutMs: s.start_timeout,
    networkTests: s.network_tests, bayesSyncMs: s.bayes_sync, bayesSyncMessages: s.bayes_sync_messages,
    // Room for a request's headers beside the message; larger messages are never sent (src/local/spam.ts).
    maxSize: s.max_size + 64 * 1024, log,
  });
  checkers.warm();
  return checkers;
}

/**
 * The built-in milter checks, in order: the policy chain at RCPT (one
 * decision path with the policy endpoint: the milter asks the same chain,
 * src/milter cannot import src/policy) when milter.policy; the site spam
 * check at end of message when milter.spam.enabled is true, or auto and
 * SpamAssassin is installed. Settings are read at start: a reload changes
 * them on restart only, as for the checkers themselves.
 */
function builtinMilterFilters(config: Config, log: Logger, spam: SpamCheckers | undefined, policy: PolicyService): NamedFilter[] {
  const m = config.milter;
  const filters: NamedFilter[] = [];
  if (m.policy) {
    const decide = (attrs: ReadonlyMap<string, string>): string | Promise<string> => {
      const d = policy.decideNow(policyRequest(attrs));
      return d instanceof Promise ? d.then((x) => x.action) : d.action;
    };
    filters.push({ name: 'policy', create: createPolicyFilter({ decide, log }), observes: POLICY_FILTER_OBSERVES });
  }
  if (m.spam.enabled === true || (m.spam.enabled === 'auto' && spam !== undefined)) {
    const settings = {
      rejectScore: m.spam.reject_score,
      onError: m.spam.on_error,
      messageSize: m.limits.message_size,
      // Below the server's limit for one filter call, so this filter answers per on_error first.
      timeoutMs: Math.max(1000, Math.min(config.spam.timeout, m.filter_timeout - 1000)),
    };
    filters.push({
      name: 'spam',
      create: createSpamFilter({ checkers: spam, identity: () => resolveIdentity(m.spam.user), settings: () => settings, log }),
      observes: SPAM_FILTER_OBSERVES,
    });
  }
  return filters;
}

async function startLocked(first: Config, log: Logger, configFile: string | undefined, firstDefault: Destination, instance: InstanceLock): Promise<Daemon> {
  let config = first;
  let defaultDestination = firstDefault;
  await prepareDirectories(config, log);
  // Users' milter filters (each module in its worker thread) before anything listens: a
  // module that cannot be loaded is a configuration error naming milter.filters[i].
  const userFilters = config.milter.listen.length > 0 && config.milter.filters.length > 0
    ? await loadMilterFilters({ paths: config.milter.filters, baseDir: process.cwd(), timeoutMs: config.milter.filter_timeout, log })
    : undefined;
  const metrics = createMetrics();
  const tablePaths: TablePaths = { sources: config.paths.sources, db: config.paths.db };
  await refreshTables(tablePaths, await compiledInfo(tablePaths.db), log, config.delivery.allow_root, metrics);
  const tables = openTables(config.paths.db);

  const pool = new WorkerPool({
    idleMs: config.delivery.worker_idle,
    userWorkers: () => config.delivery.user_workers,
    userConcurrency: () => config.delivery.user_concurrency,
    maxDeliveries: config.delivery.max_deliveries,
    noNewPrivs: () => config.delivery.no_new_privs,
    log,
    leafOptions: () => ({
      hostname: config.hostname,
      fsync: config.delivery.fsync,
      mboxLockAttempts: config.delivery.mbox_lock_attempts,
      mboxLockDelayMs: config.delivery.mbox_lock_delay,
      mboxStaleLockMs: config.delivery.mbox_stale_lock,
      pipeTimeoutMs: config.delivery.pipe_timeout,
      pipeUnknownExit: config.delivery.pipe_unknown_exit,
    }),
  });
  const { store: state, migrated } = await openStateMigrating(config.paths.state_db, config.paths.state);
  if (migrated !== undefined) log.info(`state: ${migrated}`);
  // Greylist, rate counters and user policies: in that store, or on the engine the nodes share (state.backend).
  const policyState = await openPolicyState({ config: config.state, store: state, log, metrics });
  if (policyState.kind !== 'lmdb') log.info(`state: greylist, rate counters and user policies on ${policyState.label}`);
  const defaults = (): PlanDefaults => ({ destination: defaultDestination, user: config.deliveryUser, ...(config.deliveryGroup !== undefined ? { group: config.deliveryGroup } : {}) });
  const ownerRules = createOwnerRules({
    state, tables, config: () => config.rules, defaults, mailRoot: () => config.paths.mail, baseDir: process.cwd(), log,
  });
  const decisions = createDecisionLog(state, () => config.rules, log);
  const pruneDecisions = setInterval(() => {
    decisions.prune().catch((err: unknown) => log.error(`rules log pruning failed: ${(err as Error).message}`));
  }, DECISION_PRUNE_MS);
  pruneDecisions.unref();
  const spam = await startSpamCheckers(config, log);
  const verdicts = createSpamVerdicts({ checkers: spam, config: () => config.spam, log });
  const relays = new Relays(() => ({ name: config.hostname, relay: config.relay }));
  void probeRelay(config.relay).then((warning) => { if (warning !== undefined) log.warn(warning); });
  const duplicates = createDuplicateFilter(state, () => config.dedupe.window);
  const probes = createProbeLedger({ store: state, key: () => config.probe.key, log });
  // The recipient layer's context, read afresh per delivery (a reload changes config and the default).
  const deliveryContext = (mayStart?: () => boolean): DeliveryContext => ({
    pool,
    log,
    verdicts,
    hostname: config.hostname,
    baseDir: process.cwd(),
    mailRoot: config.paths.mail,
    ...(mayStart ? { mayStart } : {}),
    allowRoot: (rcpt) => {
      const allowed = config.delivery.allow_root;
      return allowed.length > 0 && lookupKeys(rcpt).some((k) => allowed.some((a) => a.toLowerCase() === k));
    },
    defaults: defaults(),
    ownerRules,
    relay: createRelayCopyContext({
      hostname: config.hostname, relays, tables, log, delimiter: () => config.delivery.recipient_delimiter,
      deliver: (env, message, address, o) => deliverToAddress(deliveryContext(mayStart), tables, config.delivery.recipient_delimiter, env, message, address, o),
      forwardSender: (sender) => srsSender(config, sender), metrics, duplicates,
    }),
    duplicates,
    special: (rcpt) => srsRecipient(config, rcpt),
    vacation: { hostname: config.hostname, outbound: () => relays.outbound(), claim: (key, periodMs, now) => state.claimVacation(key, periodMs, now), log },
    probes,
  });
  const pruneRecords = setInterval(() => {
    const now = Date.now();
    void Promise.all([state.pruneVacation(now), state.pruneDedupe(config.dedupe.window, now), state.pruneProbes(config.probe.keep, now)])
      .catch((err: unknown) => log.error(`pruning vacation, duplicate and probe records failed: ${(err as Error).message}`));
  }, DECISION_PRUNE_MS);
  pruneRecords.unref();

  const spool = new Spool(config.paths.spool, config.delivery.fsync);
  await spool.init();
  const queue: QueueManager = new QueueManager({
    spool, config: () => config, log, relays,
    // The queue's deliveries that still wait for a worker slot when SIGTERM arrives are not started.
    deliver: (env, message, address, redelivery) => deliverToAddress(deliveryContext(() => queue.mayStart()), tables, config.delivery.recipient_delimiter, env, message, address, { redelivery }),
    report: (r) => logDelivery(log, r, decisions, metrics),
  });
  const handlers = createIntake({
    config: () => config, log, tables, spool, queue, decisions, metrics,
    // Tokens for LMTP copies too, unchecked: one that outlives lmtp.window is adopted by the
    // queue under this queue id, and a repeat after a crash must find what it wrote.
    deliver: (env, message, r) => deliverToRecipient(deliveryContext(), env, message, r, { redelivery: { key: redeliveryKey(env.queueId, r.rcpt.address), check: false } }),
  });
  const listeners = [
    ...config.lmtp.listen.map((l) => new Listener('lmtp', l, handlers)),
    ...config.smtp.listen.map((l) => new Listener('smtp', l, handlers)),
  ];
  for (const l of listeners) await l.start();
  const plugins = {
    ...(config.policy.chain.includes('dnsbl') ? { dnsbl: createDnsblPlugin(config.policy.dnsbl, { log }) } : {}),
    ...(config.policy.chain.includes('spf') ? { spf: createSpfPlugin(config.policy.spf, { log }) } : {}),
  };
  const policy = await startPolicyService({
    config: config.policy, tables, state, policyState, log, baseDir: process.cwd(),
    recipientDelimiter: config.delivery.recipient_delimiter, plugins, metrics,
  });
  // The milter's filters, asked in this order on every connection: the built-in
  // checks first (the policy chain at RCPT when milter.policy, the site spam
  // check at end of message per milter.spam), then the users' filters of
  // milter.filters. Each entry is a factory (one instance per MTA connection).
  const milterFilters: (MilterFilterFactory | NamedFilter)[] = builtinMilterFilters(config, log, spam, policy);
  milterFilters.push(...(userFilters?.factories ?? []));
  const milter = config.milter.listen.length > 0
    ? await startMilterService({ config: config.milter, log, baseDir: process.cwd(), filters: milterFilters, metrics })
    : undefined;
  const asRoot = process.getuid?.() === 0;
  const self = userInfo();
  const defaultUser = (): { user: string; group?: string } => ({ user: config.deliveryUser, ...(config.deliveryGroup !== undefined ? { group: config.deliveryGroup } : {}) });
  const rules = createRulesService({
    tables, state, ownerRules, decisions, log,
    ownership: () => ({
      tables, recipientDelimiter: config.delivery.recipient_delimiter, defaultUser: defaultUser(), asRoot,
      self: { user: self.username, uid: self.uid, gid: self.gid, home: self.homedir },
    }),
    config: () => config.rules,
    delivery: () => deliveryContext(),
  });
  const control = await startControl({ path: join(config.paths.run, 'control.sock'), pool, queue, spool, log, rules, probes, startedAt: Date.now(), delays: () => metrics.delays(), policyState, ...(spam ? { spam } : {}) });
  const userSockets = await startUserSockets({
    ...(spam ? { spam } : {}),
    rules, defaultUser,
    runDir: config.paths.run, tables, policies: policy.userPolicies, applied: policy.userPoliciesApplied,
    recipientDelimiter: config.delivery.recipient_delimiter, log, generation: () => tables.info().generation,
  });
  const queued = await queue.start();
  metrics.watch({ queue, pool, tables, ...(spam ? { spam } : {}) });
  const metricsServer = await startMetricsServer(config.metrics.listen, metrics, log);
  const where = [
    ...listeners.map((l) => `${l.kind}=${l.listen.kind === 'unix' ? `unix:${l.listen.path}` : `${l.listen.host}:${l.port()}`}`),
    ...policy.listening.map((l) => `policy=${l.kind === 'unix' ? `unix:${l.path}` : l.spec.replace(/:\d+$/, `:${l.port}`)}`),
    ...(milter?.listening ?? []).map((l) => `milter=${l.kind === 'unix' ? `unix:${l.path}` : l.spec.replace(/:\d+$/, `:${l.port}`)}`),
  ].join(' ');
  log.info(`ready ${where}`, { user: config.deliveryUser, queued, config: config.file ?? 'embedded default' });

  const reloadNow = async (): Promise<void> => {
    try {
      const next = loadConfig(configFile);
      defaultDestination = parseDefaultDestination(next.delivery.default);
      config = next;
      clearIdentityCache();
      log.info('configuration reloaded (listener addresses change on restart only)');
      // loadConfig checked the new certificate and key; a listener that still cannot use them keeps its own.
      for (const l of listeners) l.reloadTls();
      if (next.paths.sources !== tablePaths.sources || next.paths.db !== tablePaths.db) {
        log.warn(`paths.sources and paths.db change on restart only; still using ${tablePaths.sources} and ${tablePaths.db}`);
      }
    } catch (err) {
      // One line: a ConfigError's message spans a line per problem.
      const why = err instanceof ConfigError ? `${err.file}: ${err.problems.join('; ')}` : (err as Error).message;
      log.error(`reload failed, keeping the running configuration: ${why}`);
    }
    try {
      await refreshTables(tablePaths, tables.info(), log, config.delivery.allow_root, metrics);
    } catch (err) {
      log.error(`table refresh failed, keeping the tables in use: ${(err as Error).message}`);
    }
    await userSockets.refresh();
  };
  let reloading: Promise<void> = Promise.resolve();

  let stopping: Promise<void> | undefined;
  return {
    log,
    config: () => config,
    listeners,
    pool,
    queue,
    reopenLogs(): void {
      // startDaemon's, which owns the logger.
    },
    reload(): Promise<void> {
      // One at a time: a second SIGHUP while a compile runs waits for it.
      reloading = reloading.then(reloadNow);
      return reloading;
    },
    stop(): Promise<void> {
      const startedStop = Date.now();
      stopping ??= (async () => {
        const grace = config.limits.shutdown_grace;
        // The moment SIGTERM arrives: no queue run starts, nothing new is accepted.
        queue.halt();
        log.info(`stopping: no new connections or queue runs; transactions and deliveries in progress have ${grace / 1000} s (limits.shutdown_grace)`);
        // At the grace, listeners answer what is left 421 4.3.2 (Listener.close) and
        // the workers still busy are ended; their recipients stay queued.
        let terminated: Promise<void> | undefined;
        const overdue = setTimeout(() => {
          const busy = pool.list().reduce((n, w) => n + w.inFlight, 0);
          if (busy > 0) log.warn(`shutdown grace over: ending the workers of ${busy} ${busy === 1 ? 'delivery' : 'deliveries'} still in progress; their recipients stay queued (an LMTP client gets 421 4.3.2)`);
          terminated = pool.terminate(KILL_AFTER_MS);
        }, grace);
        await userSockets.close();
        await Promise.all([...listeners.map((l) => l.close()), policy.close(), milter?.close(), metricsServer.close()]);
        // After the milter connections got their close: the filters' workers end.
        await userFilters?.close();
        await new Promise<void>((resolve) => control.close(() => resolve()));
        // Outcomes of killed workers arrive as their exits are seen; past that, stop waiting.
        await queue.stop(Math.max(0, startedStop + grace + KILL_AFTER_MS + RECORD_MS - Date.now()));
        await pool.stop();
        await spam?.close();
        clearTimeout(overdue);
        await terminated;
        relays.close();
        clearInterval(pruneDecisions);
        clearInterval(pruneRecords);
        await policyState.close();
        await state.close();
        await tables.close();
        await instance.release();
        log.info('stopped');
      })();
      return stopping;
    },
  };
}
