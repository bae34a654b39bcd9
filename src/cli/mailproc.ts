#!/usr/bin/env node
// mailproc: the administrator's command.
//   mailproc db compile [--config FILE] [TABLE…]   compile table sources into LMDB (atomic; errors name file:line)
//   mailproc db show [--config FILE] TABLE KEY      print what a key maps to
//   mailproc status [--json]                        workers (user, uid, pid, age, messages), per-user load, queue size
//   mailproc queue list [--json] | show ID | flush | delete ID
//   mailproc lists sync LIST --mailman URL [--user U] [--password-file F] | --file PATH
//                                                   refresh a list's subscribers (Mailman 3 REST roster or a file of
//                                                   addresses); a sync that fails keeps the old subscribers
//   mailproc policy list | show ADDRESS | clear ADDRESS | set ADDRESS [OPTION…]
//                                                   a mailbox owner's policies for their own addresses
// status and queue talk to the running daemon over <run>/control.sock.
// policy is for ordinary users: it talks over the caller's own socket,
// <run>/users/<uid>/control.sock (or --socket PATH, $MAILPROC_SOCKET), where
// the daemon knows who is asking from the socket itself.
// Exit codes: 0 done, 1 errors in the input (nothing was changed) or the
// daemon refused, 64 usage, 69 the daemon is not running, 77 permission
// denied (another user's socket).
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TABLE_NAMES, type TableName } from '../classify/rules.js';
import { loadConfig } from '../config/index.js';
import { compileTables, formatSourceError, openTables } from '../db/index.js';
import { size as sizeUnit } from '../config/units.js';
import { userSocketPath } from '../control/user-sockets.js';
import type { PolicyChange, PolicyView } from '../control/user-protocol.js';
import { policyDbDir, syncListSubscribers, type ListSource } from '../policy/index.js';

const USAGE = `usage: mailproc db compile [--config FILE] [TABLE...]
       mailproc db show [--config FILE] TABLE KEY
       mailproc status [--config FILE] [--json]
       mailproc queue list [--json] | show ID | flush | delete ID   [--config FILE]
       mailproc lists sync LIST (--mailman URL [--user U] [--password-file F] | --file PATH) [--config FILE]
         (the Mailman password may also come from $MAILMAN_PASSWORD)
       mailproc policy list | show ADDRESS | clear ADDRESS   [--json] [--socket PATH] [--config FILE]
       mailproc policy set ADDRESS [--allow GLOB]... [--no-allow] [--deny GLOB]... [--no-deny]
                [--only-allowed on|off] [--greylist on|off|default] [--max-size SIZE|none]
         (run as the mailbox owner, for their own addresses; --allow/--deny replace that list;
          GLOB is a sender pattern like *@example.org, "<>" the null sender; SIZE like 10M)
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

const POLICY_OPTIONS = {
  config: { type: 'string', short: 'c' }, socket: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  allow: { type: 'string', multiple: true }, deny: { type: 'string', multiple: true },
  'no-allow': { type: 'boolean' }, 'no-deny': { type: 'boolean' },
  'only-allowed': { type: 'string' }, greylist: { type: 'string' }, 'max-size': { type: 'string' },
} as const;

/** Whether the first word of the command line is "policy", whatever options come before it. */
function isPolicyCommand(argv: string[]): boolean {
  const { positionals } = parseArgs({
    args: argv, strict: false, allowPositionals: true,
    options: { ...POLICY_OPTIONS, mailman: { type: 'string' }, user: { type: 'string' }, 'password-file': { type: 'string' }, file: { type: 'string' } },
  });
  return positionals[0] === 'policy';
}

function onOff(option: string, text: string, extra: readonly string[] = []): boolean | null | string {
  const t = text.toLowerCase();
  if (['on', 'yes', 'true'].includes(t)) return true;
  if (['off', 'no', 'false'].includes(t)) return false;
  if (extra.includes(t)) return null;
  return `--${option}: expected on or off${extra.length > 0 ? ` or ${extra.join(' or ')}` : ''}, got "${text}"`;
}

/** The change `policy set` asks for, or a usage problem. */
function policyChange(v: { [K in keyof typeof POLICY_OPTIONS]?: string | boolean | string[] | undefined }): PolicyChange | string {
  const change: { -readonly [K in keyof PolicyChange]: PolicyChange[K] } = {};
  const allow = v.allow as string[] | undefined;
  const deny = v.deny as string[] | undefined;
  if (allow !== undefined || v['no-allow'] === true) change.allow = allow ?? [];
  if (deny !== undefined || v['no-deny'] === true) change.deny = deny ?? [];
  if (typeof v['only-allowed'] === 'string') {
    const b = onOff('only-allowed', v['only-allowed']);
    if (typeof b === 'string') return b;
    change.onlyAllowed = b === true;
  }
  if (typeof v.greylist === 'string') {
    const b = onOff('greylist', v.greylist, ['default']);
    if (typeof b === 'string') return b;
    change.greylist = b;
  }
  const max = v['max-size'];
  if (typeof max === 'string') {
    if (['none', 'off', '0'].includes(max.toLowerCase())) change.maxSize = null;
    else {
      const n = sizeUnit.safeParse(max);
      if (!n.success || n.data < 1) return `--max-size: expected a size like 10M, 512k or a number of bytes, or none, got "${max}"`;
      change.maxSize = n.data;
    }
  }
  return Object.keys(change).length > 0 ? change : 'policy set: nothing to set (give --allow, --deny, --only-allowed, --greylist or --max-size)';
}

function humanSize(n: number): string {
  for (const [unit, m] of [['G', 1024 ** 3], ['M', 1024 ** 2], ['k', 1024]] as const) if (n >= m && n % m === 0) return `${n} bytes (${n / m}${unit})`;
  return `${n} bytes`;
}

function formatPolicy(address: string, p: PolicyView | null): string {
  if (p === null) return `${address}: no policy\n`;
  const list = (l: readonly string[]): string => (l.length > 0 ? l.join(' ') : '(none)');
  return [
    address,
    `  allow         ${list(p.allow)}`,
    `  deny          ${list(p.deny)}`,
    `  only allowed  ${p.onlyAllowed ? 'on (other senders are refused; the null sender passes unless denied)' : 'off'}`,
    `  greylist      ${p.greylist === undefined ? "default (the server's setting)" : p.greylist ? 'on' : 'off'}`,
    `  max size      ${p.maxSize === undefined ? 'none' : humanSize(p.maxSize)}`,
    `  updated       ${p.updatedAt}`,
    '',
  ].join('\n');
}

async function runPolicy(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: POLICY_OPTIONS, allowPositionals: true });
  } catch (err) {
    process.stderr.write(`mailproc: ${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [, verb, address, ...extra] = parsed.positionals;
  const usage = (why: string): number => {
    process.stderr.write(`mailproc: ${why}\n${USAGE}`);
    return 64;
  };
  const setOptions = (['allow', 'deny', 'no-allow', 'no-deny', 'only-allowed', 'greylist', 'max-size'] as const).filter((k) => v[k] !== undefined);
  if (extra.length > 0) return usage(`policy ${verb ?? ''}: unexpected ${extra.join(' ')}`);
  if (verb !== 'set' && setOptions.length > 0) return usage(`--${setOptions[0]} goes with policy set`);
  let request: Record<string, unknown>;
  if (verb === 'list' && address === undefined) request = { cmd: 'policy.list' };
  else if ((verb === 'show' || verb === 'clear') && address !== undefined) request = { cmd: `policy.${verb}`, address };
  else if (verb === 'set' && address !== undefined) {
    const change = policyChange(v);
    if (typeof change === 'string') return usage(change);
    request = { cmd: 'policy.set', address, policy: change };
  } else return usage('policy: expected list, show ADDRESS, clear ADDRESS or set ADDRESS …');

  let path = v.socket ?? process.env.MAILPROC_SOCKET;
  if (path === undefined || path === '') {
    const uid = process.getuid?.() ?? -1;
    if (uid === 0) return usage('policies belong to mailbox owners: run this as the owner (e.g. runuser -u USER -- mailproc policy …), or give --socket PATH');
    let run: string;
    try {
      run = loadConfig(v.config).paths.run;
    } catch (err) {
      process.stderr.write(`mailproc: ${(err as Error).message}\nmailproc: give the socket with --socket PATH or $MAILPROC_SOCKET (it is <run>/users/${uid}/control.sock)\n`);
      return 69;
    }
    path = userSocketPath(run, uid);
  }
  let r: Record<string, unknown>;
  try {
    r = await control(path, request);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT'
      ? 'no socket there: the daemon is not running, or its uid table gives you no address (only mailbox owners have a socket)'
      : code === 'ECONNREFUSED' ? 'nothing answers: the daemon is not running'
        : code === 'EACCES' ? 'permission denied: it is not your socket (each user has their own, <run>/users/<uid>/control.sock)'
          : (err as Error).message;
    process.stderr.write(`mailproc: cannot reach mailprocd at ${path}: ${why}\n`);
    return code === 'EACCES' ? 77 : 69;
  }
  if (r.ok !== true) {
    process.stderr.write(`mailproc: ${String(r.error)}\n`);
    return 1;
  }
  if (r.applied === false) process.stderr.write("mailproc: note: userpolicy is not in the server's policy chain: policies are stored but not applied\n");
  if (v.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else if (request.cmd === 'policy.clear') process.stdout.write(`${String(r.address)}: ${r.removed === true ? 'policy removed' : 'had no policy'}\n`);
  else if (request.cmd === 'policy.list') {
    const policies = r.policies as { address: string; policy: PolicyView }[];
    const addresses = r.addresses as string[];
    const out = policies.length === 0 ? ['no policies'] : [table([
      ['ADDRESS', 'ALLOW', 'DENY', 'ONLY-ALLOWED', 'GREYLIST', 'MAX-SIZE'],
      ...policies.map(({ address: a, policy: p }) => [
        a, p.allow.length, p.deny.length, p.onlyAllowed ? 'on' : 'off',
        p.greylist === undefined ? 'default' : p.greylist ? 'on' : 'off', p.maxSize ?? 'none',
      ]),
    ])];
    out.push('', `your addresses: ${addresses.length > 0 ? addresses.join(' ') : '(none named in the uid table)'}`);
    process.stdout.write(`${out.join('\n')}\n`);
  } else process.stdout.write(formatPolicy(String(r.address), r.policy as PolicyView | null));
  return 0;
}

async function main(argv: string[]): Promise<number> {
  if (isPolicyCommand(argv)) return runPolicy(argv);
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
      sourceDir: config.paths.sources, dbDir: config.paths.db, allowRoot: config.delivery.allow_root,
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
