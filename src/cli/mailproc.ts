#!/usr/bin/env node
// mailproc: the administrator's command.
//   mailproc db compile [--config FILE] [TABLE…]   compile table sources into LMDB (atomic; errors name file:line)
//   mailproc db show [--config FILE] TABLE KEY      print what a key maps to
//   mailproc status [--json]                        workers (user, uid, pid, age, messages), per-user load, queue size
//   mailproc queue list [--json] | show ID | flush | delete ID
//   mailproc lists sync LIST --mailman URL [--user U] [--password-file F] | --file PATH
//                                                   refresh a list's subscribers (Mailman 3 REST roster or a file of
//                                                   addresses); a sync that fails keeps the old subscribers
// status and queue talk to the running daemon over <run>/control.sock.
// Exit codes: 0 done, 1 errors in the input (nothing was changed) or the
// daemon refused, 64 usage, 69 the daemon is not running.
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TABLE_NAMES, type TableName } from '../classify/rules.js';
import { loadConfig } from '../config/index.js';
import { compileTables, formatSourceError, openTables } from '../db/index.js';
import { policyDbDir, syncListSubscribers, type ListSource } from '../policy/index.js';

const USAGE = `usage: mailproc db compile [--config FILE] [TABLE...]
       mailproc db show [--config FILE] TABLE KEY
       mailproc status [--config FILE] [--json]
       mailproc queue list [--json] | show ID | flush | delete ID   [--config FILE]
       mailproc lists sync LIST (--mailman URL [--user U] [--password-file F] | --file PATH) [--config FILE]
         (the Mailman password may also come from $MAILMAN_PASSWORD)
tables: ${TABLE_NAMES.join(', ')}
`;

/** One request to the daemon's control socket, one reply. */
function control(path: string, request: Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(30_000, () => sock.destroy(new Error('no answer from the daemon within 30 s')));
    sock.on('connect', () => sock.write(`${JSON.stringify(request)}\n`));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        sock.end();
        resolve(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      }
    });
    sock.on('error', reject);
  });
}

const ago = (ms: number): string => {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
};

function table(rows: (string | number)[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

interface WorkerRow { user: string; uid: number; gid: number; pid?: number; startedAt: number; messages: number; inFlight: number }
interface LoadRow { key: string; queued: number; active: number }
interface QueueRow { id: string; sender: string; arrival: number; recipients: string[]; done: string[]; size: number; attempts: number; nextAttempt?: number; lastError?: string }

function printStatus(r: Record<string, unknown>): void {
  const workers = r.workers as WorkerRow[];
  const load = r.load as LoadRow[];
  const q = r.queue as { messages: number; recipients: number };
  const out = [`mailprocd pid ${String(r.pid)}, up ${ago(Number(r.uptime) * 1000)}`, ''];
  out.push(workers.length === 0 ? 'workers: none running' : table([
    ['USER', 'UID', 'GID', 'PID', 'AGE', 'MESSAGES', 'IN-FLIGHT'],
    ...workers.map((w) => [w.user, w.uid, w.gid, w.pid ?? '-', ago(Date.now() - w.startedAt), w.messages, w.inFlight]),
  ]));
  if (load.length > 0) out.push('', table([['UID:GID', 'RUNNING', 'WAITING'], ...load.map((l) => [l.key, l.active, l.queued])]));
  out.push('', `queue: ${q.messages} message(s), ${q.recipients} recipient(s) to go`);
  process.stdout.write(`${out.join('\n')}\n`);
}

function printQueue(rows: QueueRow[]): void {
  if (rows.length === 0) {
    process.stdout.write('Mail queue is empty\n');
    return;
  }
  const lines: string[] = [];
  for (const q of rows) {
    lines.push(`${q.id.padEnd(20)} ${String(q.size).padStart(8)} ${new Date(q.arrival).toISOString()}  ${q.sender || 'MAILER-DAEMON'}`);
    if (q.lastError) lines.push(`    (${q.lastError})`);
    for (const rcpt of q.recipients) if (!q.done.includes(rcpt.toLowerCase())) lines.push(`    ${rcpt}`);
    lines.push(`    attempts ${q.attempts}${q.nextAttempt ? `, next in ${ago(q.nextAttempt - Date.now())}` : ''}`, '');
  }
  process.stdout.write(`${lines.join('\n')}`);
}

async function runControl(config: ReturnType<typeof loadConfig>, cmd: string, rest: string[], json: boolean): Promise<number> {
  const path = join(config.paths.run, 'control.sock');
  let request: Record<string, unknown>;
  if (cmd === 'status') request = { cmd: 'status' };
  else {
    const [verb, id] = rest;
    if (verb === 'list' || verb === 'flush') request = { cmd: `queue.${verb}` };
    else if ((verb === 'show' || verb === 'delete') && id !== undefined) request = { cmd: `queue.${verb}`, id };
    else {
      process.stderr.write(USAGE);
      return 64;
    }
  }
  let r: Record<string, unknown>;
  try {
    r = await control(path, request);
  } catch (err) {
    process.stderr.write(`mailproc: cannot reach mailprocd at ${path}: ${(err as Error).message}\n`);
    return 69;
  }
  if (r.ok !== true) {
    process.stderr.write(`mailproc: ${String(r.error)}\n`);
    return 1;
  }
  if (json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else if (request.cmd === 'status') printStatus(r);
  else if (request.cmd === 'queue.list') printQueue(r.queue as QueueRow[]);
  else if (request.cmd === 'queue.show') process.stdout.write(`${JSON.stringify(r.message, null, 2)}\n\n${String(r.headers)}`);
  else if (request.cmd === 'queue.flush') process.stdout.write(`${String(r.flushed)} message(s) scheduled for delivery now\n`);
  else process.stdout.write(`${String(request.id)}: removed\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
        mailman: { type: 'string' }, user: { type: 'string' }, 'password-file': { type: 'string' }, file: { type: 'string' },
      },
      allowPositionals: true,
    });
  } catch (err) {
    process.stderr.write(`mailproc: ${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const [group, cmd, ...rest] = parsed.positionals;
  if (!parsed.values.help && group === 'lists' && cmd === 'sync' && rest.length === 1) {
    const v = parsed.values;
    if ((v.mailman === undefined) === (v.file === undefined)) {
      process.stderr.write(`mailproc: lists sync needs exactly one of --mailman URL or --file PATH\n${USAGE}`);
      return 64;
    }
    const config = loadConfig(v.config);
    const source: ListSource = v.file !== undefined
      ? { kind: 'file', path: v.file }
      : {
          kind: 'mailman3', url: v.mailman as string, user: v.user ?? 'restadmin',
          password: v['password-file'] !== undefined ? readFileSync(v['password-file'], 'utf8').trim() : process.env.MAILMAN_PASSWORD ?? '',
        };
    const r = await syncListSubscribers({ list: rest[0] as string, source, dbDir: policyDbDir(config.policy, config.paths.state, process.cwd()) });
    if (!r.ok) {
      process.stderr.write(`mailproc: ${r.list}: sync failed, the old subscribers stay: ${r.error}\n`);
      return 1;
    }
    process.stdout.write(`${r.list}: ${r.subscribers} subscriber(s), ${r.added} added, ${r.removed} removed${r.skipped.length > 0 ? `, ${r.skipped.length} skipped` : ''}\n`);
    return 0;
  }
  if (!parsed.values.help && (group === 'status' || group === 'queue')) {
    return runControl(loadConfig(parsed.values.config), group, parsed.positionals.slice(1), parsed.values.json === true);
  }
  if (parsed.values.help || group !== 'db' || (cmd !== 'compile' && cmd !== 'show')) {
    process.stderr.write(USAGE);
    return parsed.values.help ? 0 : 64;
  }
  const config = loadConfig(parsed.values.config);
  if (cmd === 'compile') {
    const bad = rest.filter((t) => !TABLE_NAMES.includes(t as TableName));
    if (bad.length > 0) {
      process.stderr.write(`mailproc: unknown table ${bad.join(', ')}\n${USAGE}`);
      return 64;
    }
    const report = await compileTables({
      sourceDir: config.paths.sources, dbDir: config.paths.db,
      ...(rest.length > 0 ? { tables: rest as TableName[] } : {}),
    });
    if (!report.ok) {
      for (const e of report.errors) process.stderr.write(`mailproc: ${formatSourceError(e)}\n`);
      process.stderr.write('mailproc: nothing compiled; the tables in use are unchanged\n');
      return 1;
    }
    for (const [t, info] of Object.entries(report.tables)) {
      process.stdout.write(`${t}: ${info.entries} entries from ${info.source}\n`);
    }
    process.stdout.write(`generation ${report.generation} in ${config.paths.db}\n`);
    return 0;
  }
  const [table, key] = rest;
  if (!TABLE_NAMES.includes(table as TableName) || key === undefined) {
    process.stderr.write(USAGE);
    return 64;
  }
  const tables = openTables(config.paths.db);
  const hit = tables.lookup(table as TableName, [key.toLowerCase()]);
  await tables.close();
  if (!hit) {
    process.stderr.write(`mailproc: ${key}: not in ${table}\n`);
    return 1;
  }
  process.stdout.write(`${JSON.stringify(hit.value, null, 2)}\n`);
  return 0;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`mailproc: ${(err as Error).message}\n`);
  process.exit(1);
});
