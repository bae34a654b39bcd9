// `mailproc queue list | show ID | flush | delete ID [--json]`: the durable
// queue of the running daemon, over <run>/control.sock. list prints each
// message (id, size like 12.3 KiB, local arrival time, sender) with the
// recipients still to go and its last error; show prints
// one message (sender, local times, size like 12.3 KiB, each recipient's
// state, the last error) and its header block; flush schedules every
// message now; delete removes one. --json prints the daemon's reply as it
// came, for tools. Exit 0 done, 1 the daemon refused (e.g. no such ID), 64
// usage, 69 the daemon is not running. Header text comes from whoever sent
// the message: it goes through `printable` before it reaches a terminal.
import type { Config } from '../../config/index.js';
import { askAdminSocket } from './control-client.js';
import { formatAge, formatLocalTime, formatSize } from './format.js';
import { printable } from './rules.js';
import { USAGE } from './usage.js';

export interface QueueRow { id: string; sender: string; arrival: number; recipients: string[]; done: string[]; size: number; attempts: number; nextAttempt?: number; lastError?: string }

/** `queue list` for a person, like postqueue -p: one block per message; `now` for the next attempt. */
export function formatQueueList(rows: readonly QueueRow[], now = Date.now()): string {
  if (rows.length === 0) return 'Mail queue is empty\n';
  const lines: string[] = [];
  for (const q of rows) {
    lines.push(`${printable(q.id).padEnd(20)} ${formatSize(q.size).padStart(10)}  ${formatLocalTime(q.arrival)}  ${q.sender === '' ? 'MAILER-DAEMON' : printable(q.sender)}`);
    if (q.lastError) lines.push(`    (${printable(q.lastError)})`);
    const done = new Set(q.done.map((r) => r.toLowerCase()));
    for (const rcpt of q.recipients) if (!done.has(rcpt.toLowerCase())) lines.push(`    ${printable(rcpt)}`);
    lines.push(`    attempts ${q.attempts}${q.nextAttempt ? `, next ${q.nextAttempt <= now ? 'now' : `in ${formatAge(q.nextAttempt - now)}`}` : ''}`, '');
  }
  const total = rows.reduce((n, q) => n + q.size, 0);
  lines.push(`-- ${formatSize(total)} in ${rows.length} message(s)`);
  return `${lines.join('\n')}\n`;
}

/** `queue show`: one message, for a person. */
export function formatQueueMessage(q: QueueRow, headers: string, now = Date.now()): string {
  const when = (ms: number): string => `${formatLocalTime(ms)} (${ms <= now ? `${formatAge(now - ms)} ago` : `in ${formatAge(ms - now)}`})`;
  const done = new Set(q.done.map((r) => r.toLowerCase()));
  const rows: [string, string][] = [
    ['queue id', printable(q.id)],
    ['sender', q.sender === '' ? '<> (the null sender)' : printable(q.sender)],
    ['arrived', when(q.arrival)],
    ['size', `${formatSize(q.size)} (${q.size} bytes)`],
    ['attempts', `${q.attempts}${q.nextAttempt !== undefined && q.nextAttempt > 0 ? `, next ${when(q.nextAttempt)}` : ''}`],
  ];
  if (q.lastError !== undefined && q.lastError !== '') rows.push(['last error', printable(q.lastError)]);
  const width = Math.max(...rows.map(([k]) => k.length));
  const out = rows.map(([k, v]) => `${`${k}:`.padEnd(width + 1)}  ${v}`);
  out.push('recipients:');
  for (const r of q.recipients) out.push(`  ${printable(r)}  ${done.has(r.toLowerCase()) ? 'done' : 'to go'}`);
  out.push('', 'headers:');
  for (const line of headers.replace(/\r?\n$/, '').split(/\r?\n/)) {
    if (line !== '') out.push(`  ${printable(line.replace(/\t/g, '    '))}`);
  }
  return `${out.join('\n')}\n`;
}

/** args: the words after `queue` (verb, then the ID for show and delete; more words are ignored). */
export async function runQueue(config: Config, args: readonly string[], json: boolean): Promise<number> {
  const [verb, id] = args;
  let request: Record<string, unknown>;
  if (verb === 'list' || verb === 'flush') request = { cmd: `queue.${verb}` };
  else if ((verb === 'show' || verb === 'delete') && id !== undefined) request = { cmd: `queue.${verb}`, id };
  else {
    process.stderr.write(USAGE);
    return 64;
  }
  const r = await askAdminSocket(config, request);
  if (typeof r === 'number') return r;
  if (json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else if (request.cmd === 'queue.list') process.stdout.write(formatQueueList(r.queue as QueueRow[]));
  else if (request.cmd === 'queue.show') process.stdout.write(formatQueueMessage(r.message as QueueRow, String(r.headers)));
  else if (request.cmd === 'queue.flush') process.stdout.write(`${String(r.flushed)} message(s) scheduled for delivery now\n`);
  else process.stdout.write(`${String(request.id)}: removed\n`);
  return 0;
}
