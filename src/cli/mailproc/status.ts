// `mailproc status [--json]`: what the running daemon is doing — its workers
// (user, uid, gid, pid, age, messages, in flight), the load per uid:gid
// (running, waiting), the spam checkers (user, uid, pid, socket, idle,
// messages checked, private memory) and the queue size; local times, sizes
// like 12.3 MiB; --json prints the daemon's reply as it came, for tools.
// Asks <run>/control.sock; exit 0
// printed, 1 the daemon refused, 69 the daemon is not running.
import type { Config } from '../../config/index.js';
import { askAdminSocket } from './control-client.js';
import { formatAge, formatLocalTime, formatSize, formatTable } from './format.js';

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

function printStatus(r: Record<string, unknown>): void {
  const workers = r.workers as WorkerRow[];
  const load = r.load as LoadRow[];
  const q = r.queue as { messages: number; recipients: number };
  const up = Number(r.uptime) * 1000;
  const out = [`mailprocd pid ${String(r.pid)}, up ${formatAge(up)} (since ${formatLocalTime(Date.now() - up)})`, ''];
  out.push(workers.length === 0 ? 'workers: none running' : formatTable([
    ['USER', 'UID', 'GID', 'PID', 'AGE', 'MESSAGES', 'IN-FLIGHT'],
    ...workers.map((w) => [w.user, w.uid, w.gid, w.pid ?? '-', formatAge(Date.now() - w.startedAt), w.messages, w.inFlight]),
  ]));
  if (load.length > 0) out.push('', formatTable([['UID:GID', 'RUNNING', 'WAITING'], ...load.map((l) => [l.key, l.active, l.queued])]));
  out.push('', ...spamLines(r.spam as SpamStatus | undefined));
  out.push('', `queue: ${q.messages} message(s), ${q.recipients} recipient(s) to go`);
  process.stdout.write(`${out.join('\n')}\n`);
}

/** Extra words after `status` are ignored, as they always were. */
export async function runStatus(config: Config, json: boolean): Promise<number> {
  const r = await askAdminSocket(config, { cmd: 'status' });
  if (typeof r === 'number') return r;
  if (json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else printStatus(r);
  return 0;
}
