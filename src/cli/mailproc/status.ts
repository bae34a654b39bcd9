// `mailproc status [--json]`: what the running daemon is doing — its workers
// (user, uid, gid, pid, age, messages, in flight), the load per uid:gid
// (running, waiting) and the queue size. Asks <run>/control.sock; exit 0
// printed, 1 the daemon refused, 69 the daemon is not running.
import type { Config } from '../../config/index.js';
import { askAdminSocket } from './control-client.js';
import { formatAge, formatTable } from './format.js';

interface WorkerRow { user: string; uid: number; gid: number; pid?: number; startedAt: number; messages: number; inFlight: number }
interface LoadRow { key: string; queued: number; active: number }

function printStatus(r: Record<string, unknown>): void {
  const workers = r.workers as WorkerRow[];
  const load = r.load as LoadRow[];
  const q = r.queue as { messages: number; recipients: number };
  const out = [`mailprocd pid ${String(r.pid)}, up ${formatAge(Number(r.uptime) * 1000)}`, ''];
  out.push(workers.length === 0 ? 'workers: none running' : formatTable([
    ['USER', 'UID', 'GID', 'PID', 'AGE', 'MESSAGES', 'IN-FLIGHT'],
    ...workers.map((w) => [w.user, w.uid, w.gid, w.pid ?? '-', formatAge(Date.now() - w.startedAt), w.messages, w.inFlight]),
  ]));
  if (load.length > 0) out.push('', formatTable([['UID:GID', 'RUNNING', 'WAITING'], ...load.map((l) => [l.key, l.active, l.queued])]));
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
