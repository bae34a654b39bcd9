// `mailproc status [--json]`: what the running daemon is doing — its workers
// (user, uid, gid, pid, age, messages, in flight), the load per uid:gid
// (running, waiting), the spam checkers (user, uid, pid, socket, idle,
// messages checked, private memory), the queue size, where the policy state
// lives (state.backend: lmdb, or the shared engine without its password,
// reachable or since when not), and the delivery delay
// since start (p50/p90/p99 of delay= and of each delays= stage, estimated
// from the metrics' histograms as Prometheus would); local times, sizes
// like 12.3 MiB; --json prints the daemon's reply as it came, for tools
// (delays in seconds). formatStatus is the text, pure but for the clock.
// Asks <run>/control.sock; exit 0
// printed, 1 the daemon refused, 69 the daemon is not running.
import type { Config } from '../../config/index.js';
import type { DelaySummary, Percentiles } from '../../metrics/index.js';
import { askAdminSocket } from './control-client.js';
import { formatAge, formatLocalTime, formatSeconds, formatSize, formatTable } from './format.js';

interface WorkerRow { user: string; uid: number; gid: number; pid?: number; startedAt: number; messages: number; inFlight: number }
interface LoadRow { key: string; queued: number; active: number }
interface CheckerRow { user: string; uid: number; pid: number; socket: string; idleMs: number; checked: number; privateBytes?: number }
type SpamStatus = { enabled: false } | { enabled: true; parent: number | null; checkers: CheckerRow[] };

const memory = (n: number | undefined): string => (n === undefined ? '-' : formatSize(n));

function spamLines(spam: SpamStatus | undefined): string[] {
  if (spam === undefined || !spam.enabled) return ['spam checkers: off (spam.enabled, or SpamAssassin is not installed)'];
  const head = `spam checkers: parent ${spam.parent === null ? 'not running (starts with the first message to check)' : `pid ${spam.parent}`}`;
  if (spam.checkers.length === 0) return [head, 'no user checker running'];
  return [head, formatTable([
    ['USER', 'UID', 'PID', 'IDLE', 'CHECKED', 'PRIVATE', 'SOCKET'],
    ...spam.checkers.map((c) => [c.user, c.uid, c.pid, formatAge(c.idleMs), c.checked, memory(c.privateBytes), c.socket]),
  ])];
}

/** The stages in the order of a delivery, with what a reader should take each to mean. */
const STAGE_ROWS = [
  ['before', 'lookups, spam check, planning'],
  ['slot', 'waiting for one of the owner\'s delivery slots'],
  ['transfer', 'handing the message to the worker'],
  ['work', 'writing (Maildir, mbox, pipe, relay)'],
] as const;

function delayLines(d: DelaySummary | undefined): string[] {
  if (d === undefined) return [];
  if (d.total.count === 0) return ['delivery delay: no delivery attempt since start'];
  const cell = (p: Percentiles, v: number | undefined): string => (p.count === 0 || v === undefined ? '-' : formatSeconds(v));
  const row = (name: string, p: Percentiles, what: string): string[] => [name, cell(p, p.p50), cell(p, p.p90), cell(p, p.p99), what];
  return [
    `delivery delay since start, ${d.total.count} delivery attempt(s) (estimated from the metrics' histogram buckets):`,
    formatTable([
      ['STAGE', 'P50', 'P90', 'P99', 'WHAT'],
      row('total', d.total, 'arrival to the delivery log line (delay=)'),
      ...STAGE_ROWS.map(([stage, what]) => row(stage, d.stages[stage], what)),
    ]),
  ];
}

/** `up` is for tools reading --json; the text goes by `outage` alone. */
interface StateStatus {
  backend: string;
  engine: string;
  outage?: { since: number; reason: string; refused: number };
  userPolicyCache?: { listening: boolean; entries: number };
}

function cacheLine(c: StateStatus['userPolicyCache']): string[] {
  if (c === undefined) return [];
  return [c.listening
    ? `  user policies: kept in memory between changes (${c.entries} address(es)); change notifications heard`
    : '  user policies: asked of the engine for every request (not listening for changes; see the log)'];
}

function stateLine(s: StateStatus | undefined, now: number): string[] {
  if (s === undefined) return [];
  if (s.backend === 'lmdb') return ['policy state: lmdb (this node\'s own store)'];
  if (s.outage === undefined) return [`policy state: ${s.backend} ${s.engine}, reachable`, ...cacheLine(s.userPolicyCache)];
  const o = s.outage;
  return [
    `policy state: ${s.backend} ${s.engine}, UNREACHABLE for ${formatAge(now - o.since)} (since ${formatLocalTime(o.since)}): ${o.reason}; ${o.refused} call(s) answered with failure actions`,
    ...cacheLine(s.userPolicyCache),
  ];
}

/** The status as text for a person, `now` for the ages. */
export function formatStatus(r: Record<string, unknown>, now = Date.now()): string {
  const workers = r.workers as WorkerRow[];
  const load = r.load as LoadRow[];
  const q = r.queue as { messages: number; recipients: number };
  const up = Number(r.uptime) * 1000;
  const out = [`mailprocd pid ${String(r.pid)}, up ${formatAge(up)} (since ${formatLocalTime(now - up)})`, ''];
  out.push(workers.length === 0 ? 'workers: none running' : formatTable([
    ['USER', 'UID', 'GID', 'PID', 'AGE', 'MESSAGES', 'IN-FLIGHT'],
    ...workers.map((w) => [w.user, w.uid, w.gid, w.pid ?? '-', formatAge(now - w.startedAt), w.messages, w.inFlight]),
  ]));
  if (load.length > 0) out.push('', formatTable([['UID:GID', 'RUNNING', 'WAITING'], ...load.map((l) => [l.key, l.active, l.queued])]));
  out.push('', ...spamLines(r.spam as SpamStatus | undefined));
  out.push('', `queue: ${q.messages} message(s), ${q.recipients} recipient(s) to go`);
  const state = stateLine(r.state as StateStatus | undefined, now);
  if (state.length > 0) out.push(...state);
  const delays = delayLines(r.delays as DelaySummary | undefined);
  if (delays.length > 0) out.push('', ...delays);
  return `${out.join('\n')}\n`;
}

/** Extra words after `status` are ignored, as they always were. */
export async function runStatus(config: Config, json: boolean): Promise<number> {
  const r = await askAdminSocket(config, { cmd: 'status' });
  if (typeof r === 'number') return r;
  if (json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else process.stdout.write(formatStatus(r));
  return 0;
}
