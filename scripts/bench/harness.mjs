// The harness every part of `npm run bench` shares (scripts/bench/main.mjs
// runs the parts; each part, scripts/bench/<part>.mjs, measures one service
// of mailprocd beside its peers). What is here:
//   - options: the common ones (--only, --skip, --no-peers, --builtin,
//     --log-info, --keep, --timeout, --help) and each part's own, parsed and
//     checked once (exit 2 on bad usage, with the usage text built from the
//     parts' sections);
//   - output: out() for report lines, note() for "# " progress lines, fail()
//     for a failure (printed at once, counted; any failure makes the exit 1),
//     f1/f2/mb and printTable for figures, printResult for the RESULT line;
//   - what the bench starts: run() for a peer script or driver (own process
//     group, time limit), launchDaemon/stopDaemon for mailprocd, stopChild;
//     on SIGINT/SIGTERM/SIGHUP or when --timeout is hit, everything started is
//     stopped by PID or by the process group it was given (never ours), peer
//     scripts' temp dirs left behind are removed, and the bench exits;
//   - machine facts from /proc: process trees, RSS, CPU busy, the CPU share of
//     processes outside the bench (a shared machine makes figures noisy);
//   - small network helpers (freePort, canConnect, probe) and controlStatus.
// Loopback and unix sockets only. Plain Node, no dependencies.
//
// A part is { name, summary, usage, options, run(ctx) }: options in
// node:util parseArgs form, plus `min` (and optionally `max`) for a number
// option (checked at start, whether or not the part runs); run(ctx) gets { peersDir } and reads its
// options with num(name) and opts. The part measures, reports and calls
// fail() for what went wrong; a part that throws is one failure and the next
// part still runs.
import { spawn } from 'node:child_process';
import { accessSync, chmodSync, closeSync, constants as fsc, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DAEMON = join(ROOT, 'dist/src/cli/mailprocd.js');
// Node flags for the daemon only, for looking into a figure (e.g. "--trace-gc", "--cpu-prof"); not for measuring.
const DAEMON_NODE_FLAGS = (process.env.BENCH_DAEMON_NODE_FLAGS ?? '').split(' ').filter(Boolean);
const T_START = performance.now();
export const SBIN_PATH = `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`;

// ---- options -------------------------------------------------------------------------------
const COMMON_OPTIONS = {
  only: { type: 'string' },
  skip: { type: 'string' },
  'no-peers': { type: 'boolean', default: false },
  builtin: { type: 'boolean', default: false },
  'log-info': { type: 'boolean', default: false },
  keep: { type: 'boolean', default: false },
  timeout: { type: 'string', default: '900', min: 10 },
  help: { type: 'boolean', short: 'h', default: false },
};

function usageText(parts) {
  const names = parts.map((p) => p.name).join(' or ');
  return `usage: node scripts/bench/main.mjs [options]    (npm run bench -- [options])
${`  --only P       run only part P: ${names}`.padEnd(68)}default all
  --skip P       skip part P: ${names}
  --no-peers     skip the peers (our figures only)
  --builtin      load mailprocd with the built-in drivers even when the peers' are there
  --log-info     run mailprocd with log.level info
  --keep         keep the temp dir
  --timeout S    limit for the whole bench, seconds                  default 900
${parts.map((p) => ` ${p.name} part: ${p.summary}\n${p.usage}`).join('')}`;
}

/** The parsed options (strings and booleans, as parseArgs gives them). */
export let opts;
const numbers = new Map();
/** A number option, checked at start. */
export const num = (k) => numbers.get(k);

/** Parses and checks the command line; exits 2 (usage on stderr) when it is wrong, 0 after --help. */
function parseOptions(parts) {
  const usage = usageText(parts);
  const spec = { ...COMMON_OPTIONS };
  for (const p of parts) Object.assign(spec, p.options);
  const bad = (why) => {
    process.stderr.write(`bench: ${why}\n${usage}`);
    process.exit(2);
  };
  try {
    // `min` and `max` are ours, not parseArgs's.
    const options = {};
    for (const [k, o] of Object.entries(spec)) {
      options[k] = { ...o };
      delete options[k].min;
      delete options[k].max;
    }
    opts = parseArgs({ options, strict: true }).values;
  } catch (err) {
    bad(err.message);
  }
  if (opts.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  for (const [k, o] of Object.entries(spec)) {
    if (o.min === undefined || opts[k] === undefined) continue;
    const v = Number(opts[k]);
    if (!Number.isInteger(v) || v < o.min || (o.max !== undefined && v > o.max)) {
      bad(`--${k} must be an integer >= ${o.min}${o.max !== undefined ? ` and <= ${o.max}` : ''}`);
    }
    numbers.set(k, v);
  }
  const names = parts.map((p) => p.name);
  for (const k of ['only', 'skip']) {
    if (opts[k] !== undefined && !names.includes(opts[k])) bad(`--${k} must be ${names.join(' or ')}`);
  }
  if (opts.only !== undefined && opts.skip !== undefined) bad('give --only or --skip, not both');
  return parts.filter((p) => (opts.only === undefined || opts.only === p.name) && opts.skip !== p.name);
}

// ---- output ----------------------------------------------------------------------------------
// `npm run bench | head` must not kill the bench before it has cleaned up.
process.stdout.on('error', () => undefined);
/** Set on a signal or the time limit: stop quietly. */
export let aborted = false;
const abort = new globalThis.AbortController();
/** Stops the built-in drivers when the bench is stopping. */
export const abortSignal = abort.signal;
export const out = (line = '') => aborted || process.stdout.write(`${line}\n`);
export const note = (line) => aborted || process.stdout.write(`# ${line}\n`);
export const elapsed = () => ((performance.now() - T_START) / 1000).toFixed(1);

const failures = [];
export const fail = (why) => {
  failures.push(why);
  out(`FAIL: ${why}`);
};
/** How many failures so far (a part reports the ones it added). */
export const failureCount = () => failures.length;

export const f1 = (x) => (x === undefined || x === '' || x === 'NA' || Number.isNaN(Number(x)) ? '-' : Number(x).toFixed(1));
export const f2 = (x) => (x === undefined || x === '' || x === 'NA' || Number.isNaN(Number(x)) ? '-' : Number(x).toFixed(2));
export const mb = (kb) => `${(kb / 1024).toFixed(1)} MiB`;

/**
 * Prints rows (the first is the head) as columns two spaces apart, a dashed
 * line under the head; columns in `right` are right-aligned, the others
 * left-aligned. trimEnd: no trailing blanks.
 */
export function printTable(rows, right, { trimEnd = false } = {}) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  for (const [i, r] of rows.entries()) {
    const line = r.map((c, j) => (right.has(j) ? String(c).padStart(widths[j]) : String(c).padEnd(widths[j]))).join('  ');
    out(trimEnd ? line.trimEnd() : line);
    if (i === 0) out(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

/** The part's summary line: RESULT key=value …, for scripts that collect runs. */
export const printResult = (fields) => out(`RESULT ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(' ')}`);

// ---- bookkeeping of what we started ----------------------------------------------------------
const children = new Set(); // ChildProcess, each spawned detached = its own process group
const daemonChildren = new WeakSet(); // those that are mailprocd: SIGTERM to the master, it stops its workers
/** The bench's temp dir (mode 755: workers run as nobody and must reach <tmp>/mail). */
export let tmp;

// Each child is spawned detached (its own process group). Its descendants may
// make groups of their own (GNU timeout in lmtp-load.sh does), so stopping a
// child means: snapshot its process tree from /proc, signal every group in it
// (never ours) and every PID in it; the SIGKILL that follows uses the same
// snapshot (orphans are reparented away from the tree), re-checking each PID's
// group so that a reused PID is left alone.
export function procTable() {
  const t = new Map();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses; zombies are gone
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (f[0] !== 'Z') {
        // utime + stime (clock ticks; children not included) and starttime, to tell a reused PID
        const cpu = Number(f[11]) + Number(f[12]);
        t.set(Number(e), { ppid: Number(f[1]), pgid: Number(f[2]), cpu, start: f[19] });
      }
    } catch {
      // exited meanwhile
    }
  }
  return t;
}
const OWN_PGID = procTable().get(process.pid)?.pgid;

export function treeOf(rootPid, table = procTable()) {
  const members = [];
  const todo = [rootPid];
  while (todo.length > 0) {
    const pid = todo.pop();
    const p = table.get(pid);
    if (p === undefined) continue;
    members.push({ pid, pgid: p.pgid });
    for (const [c, q] of table) if (q.ppid === pid) todo.push(c);
  }
  return members;
}

export function signalTree(members, signal) {
  const now = procTable();
  for (const g of new Set(members.map((m) => m.pgid))) {
    if (g > 1 && g !== OWN_PGID && [...now.values()].some((p) => p.pgid === g)) {
      try {
        process.kill(-g, signal);
      } catch {
        // gone
      }
    }
  }
  for (const m of members) {
    if (now.get(m.pid)?.pgid !== m.pgid) continue;
    try {
      process.kill(m.pid, signal);
    } catch {
      // gone
    }
  }
}

const snapshots = new Map(); // child → its last tree snapshot

// A peer script stopped from outside (the bench's time limit or a signal) gets SIGTERM with
// its whole tree at once; its EXIT trap then removes its temp dir while its daemons may still
// write into it (policy-peers.sh: the DNS stub's last log line, policyd-weight's lock dir), and
// the dir stays. So the temp dirs the tree uses are noted when it is stopped, and whatever is
// left of them is removed at the very end (cleanupNow).
const PEER_TMP = /^\/tmp\/(?:peers-[a-z]+|lmtp-load)\.[A-Za-z0-9]{6}(?=\/|$)/;
const peerTmpDirs = new Set();
function notePeerTmpDirs(members) {
  for (const { pid } of members) {
    const seen = [];
    try {
      seen.push(...readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\0=\s]/));
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          seen.push(readlinkSync(`/proc/${pid}/fd/${fd}`));
        } catch {
          // closed meanwhile
        }
      }
    } catch {
      // exited meanwhile
    }
    for (const x of seen) {
      const m = PEER_TMP.exec(x);
      if (m) peerTmpDirs.add(m[0]);
    }
  }
}

/** SIGTERM (or signal) to the child's whole tree; remembers the tree for a later SIGKILL. */
export function killTree(child, signal) {
  if (child.pid === undefined) return;
  const fresh = treeOf(child.pid);
  const known = snapshots.get(child) ?? [];
  const members = [...fresh, ...known.filter((k) => !fresh.some((f) => f.pid === k.pid))];
  snapshots.set(child, members);
  if (signal === 'SIGTERM') notePeerTmpDirs(members);
  signalTree(members, signal);
}

function cleanupNow() {
  for (const c of [...children, ...snapshots.keys()]) killTree(c, 'SIGKILL');
  for (const d of peerTmpDirs) {
    if (!existsSync(d)) continue;
    try {
      rmSync(d, { recursive: true, force: true, maxRetries: 3 });
      process.stdout.write(`# removed ${d}, left behind by a peer script that was stopped\n`);
    } catch (err) {
      process.stdout.write(`# could not remove ${d}, left behind by a peer script that was stopped: ${err.message}\n`);
    }
  }
  if (tmp && !opts.keep) {
    try {
      rmSync(tmp, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort
    }
  }
}

/** Stops everything it started (a daemon with SIGTERM to its master first), then exits. */
function bail(why, code) {
  if (aborted) return;
  process.stdout.write(`${why}; stopping what the bench started\n`);
  aborted = true;
  abort.abort();
  for (const c of children) {
    if (daemonChildren.has(c)) {
      snapshots.set(c, treeOf(c.pid));
      c.kill('SIGTERM');
    } else killTree(c, 'SIGTERM');
  }
  // Give them up to 15 s to finish (lmtp-load.sh and lmtp-dovecot.sh clean up on exit; the
  // latter waits for Dovecot to stop and removes its temp dir), then SIGKILL what is left.
  const t0 = performance.now();
  const poll = globalThis.setInterval(() => {
    const now = procTable();
    const alive = [...snapshots.values()].flat().some((m) => now.get(m.pid)?.pgid === m.pgid);
    if (alive && performance.now() - t0 < 15_000) return;
    globalThis.clearInterval(poll);
    cleanupNow();
    process.exit(code);
  }, 100);
}

/** Runs a command in its own process group; resolves with its output, killed after limitS. */
export function run(cmd, args, limitS, env = {}) {
  return new Promise((resolvePromise) => {
    if (aborted) return resolvePromise({ code: null, signal: null, stdout: '', stderr: 'not started: the bench is stopping', timedOut: false, secs: 0 });
    const child = spawn(cmd, args, {
      cwd: tmp ?? ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PATH: SBIN_PATH, ...env },
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      timedOut = true;
      killTree(child, 'SIGTERM');
      setTimeout(() => killTree(child, 'SIGKILL'), 15_000).unref();
    }, limitS * 1000);
    const t0 = performance.now();
    child.on('error', (err) => { stderr += `${err.message}\n`; });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolvePromise({ code, signal, stdout, stderr, timedOut, secs: (performance.now() - t0) / 1000 });
    });
  });
}

/** key=value fields of the first "RESULT name=NAME" line (or of the first RESULT line). */
export function resultLine(text, name) {
  const line = text.split('\n').find((l) => l.startsWith('RESULT ') && (name === undefined || l.includes(` name=${name} `)));
  if (line === undefined) return undefined;
  const f = {};
  for (const m of line.matchAll(/(\w+)=(\S*)/g)) f[m[1]] = m[2];
  return f;
}

export function which(cmd) {
  for (const d of SBIN_PATH.split(':')) {
    try {
      accessSync(join(d, cmd), fsc.X_OK);
      return join(d, cmd);
    } catch {
      // next
    }
  }
  return undefined;
}

export function freePort() {
  return new Promise((resolvePromise, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePromise(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** true when something accepts a connection at target (closed at once). */
export function canConnect(target) {
  return new Promise((resolvePromise) => {
    const s = net.connect(target);
    s.once('connect', () => {
      s.destroy();
      resolvePromise(true);
    });
    s.once('error', () => resolvePromise(false));
  });
}

/**
 * One short exchange with a listener, for readiness checks: connects, writes
 * `send` once connected (if given), and resolves with judge(all read so far)
 * as soon as that is not undefined, writing `bye` first (if given); resolves
 * with `onError` when the connection fails (undefined: not listening yet),
 * false after 3 s. Closes the socket.
 */
export function converse(target, { send, bye, judge, onError }) {
  return new Promise((resolvePromise) => {
    const s = net.connect(target);
    let buf = '';
    const done = (ok) => {
      s.destroy();
      resolvePromise(ok);
    };
    s.setTimeout(3000, () => done(false));
    s.on('error', () => done(onError));
    if (send !== undefined) s.on('connect', () => s.write(send));
    s.on('data', (d) => {
      buf += d;
      const verdict = judge(buf);
      if (verdict === undefined) return;
      if (bye !== undefined) s.end(bye);
      done(verdict);
    });
  });
}

/** Connects, waits for the 220 greeting, QUITs. true when the listener answers. */
export const probe = (target) => converse(target, { bye: 'QUIT\r\n', onError: false, judge: (buf) => (/^220[ -]/m.test(buf) && buf.includes('\n') ? true : undefined) });

// ---- /proc helpers ---------------------------------------------------------------------------
export function procStatus(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const get = (k) => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(text)?.[1];
    return { pid, name: get('Name'), uid: Number(get('Uid')), rssKb: Number(get('VmRSS') ?? 0), hwmKb: Number(get('VmHWM') ?? 0) };
  } catch {
    return undefined;
  }
}

function childrenOf(ppid) {
  const found = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) found.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '?';
  }
}

export function memory(pid) {
  const master = procStatus(pid);
  const kids = [];
  const walk = (p) => {
    for (const c of childrenOf(p)) {
      const st = procStatus(c);
      if (st) kids.push({ ...st, cmd: cmdline(c) });
      walk(c);
    }
  };
  walk(pid);
  return { master, kids };
}

function cpuStat() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3] + (f[4] ?? 0), total: f.reduce((a, b) => a + b, 0) };
}

/** Percentage of all CPUs busy over ms (from /proc/stat). */
export async function cpuBusy(ms) {
  const a = cpuStat();
  await sleep(ms);
  const b = cpuStat();
  return b.total > a.total ? (100 * (1 - (b.idle - a.idle) / (b.total - a.total))) : 0;
}

/**
 * Samples twice a second how much CPU processes outside the bench's own tree
 * use (other people's tests on a shared machine), as a share of all CPUs.
 * Returns stop() → that share in percent. A lower bound: a process that
 * lives less than a sample interval is missed, and kernel threads are left out.
 */
export function foreignCpu() {
  let prev = procTable();
  let prevStat = cpuStat();
  let foreign = 0;
  let total = 0;
  const tick = () => {
    const now = procTable();
    const st = cpuStat();
    const ours = new Set(treeOf(process.pid, now).map((m) => m.pid));
    for (const [pid, p] of now) {
      if (ours.has(pid) || pid === 2 || p.ppid === 2) continue;
      const q = prev.get(pid);
      if (q !== undefined && q.start === p.start) foreign += Math.max(0, p.cpu - q.cpu);
    }
    total += st.total - prevStat.total;
    prev = now;
    prevStat = st;
  };
  const timer = globalThis.setInterval(tick, 500);
  return () => {
    globalThis.clearInterval(timer);
    tick();
    return total > 0 ? Math.min(100, (100 * foreign) / total) : 0;
  };
}

// ---- mailprocd -------------------------------------------------------------------------------
/** One request to the daemon's control socket (what `mailproc status --json` asks). */
export function controlStatus(path) {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path);
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(5000, () => sock.destroy(new Error('control socket timeout')));
    sock.on('connect', () => sock.write('{"cmd":"status"}\n'));
    sock.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        sock.end();
        resolve(JSON.parse(buf.slice(0, nl)));
      }
    });
    sock.on('error', reject);
  });
}

/**
 * Writes the config of a bench daemon: the paths given, hostname bench.local,
 * exactly the listeners given (every other one off: the policy and milter
 * defaults would listen on fixed ports, 127.0.0.1:10040 and :10042), log.level warn, or info with
 * --log-info. delivery: { default, fsync } when the part delivers mail.
 * spam: the `spam` section's keys (src/config/spam.ts) for the part that
 * measures spam checking; without it spam checking is off, so that a part
 * measures its own service and not SpamAssassin (the default, auto, checks
 * every message when SpamAssassin is installed). relay: the `relay` section's
 * keys (src/config/relay.ts) for the part that sends mail on; without it the
 * default (127.0.0.1:25), which no other part uses.
 */
export function writeDaemonConfig(file, { writer, state, sources, mail, lmtp, policy = [], milter = [], chain, delivery, spam, relay, policyExtra = [], extra = [] }) {
  const q = (s) => JSON.stringify(s);
  const list = (a) => `[${a.map(q).join(', ')}]`;
  writeFileSync(file, [
    `# written by ${writer}`,
    'hostname: bench.local',
    'paths:',
    `  state: ${q(state)}`,
    `  sources: ${q(sources)}`,
    `  mail: ${q(mail)}`,
    'lmtp:',
    `  listen: ${list(lmtp)}`,
    'smtp:',
    '  listen: []',
    'policy:',
    `  listen: ${list(policy)}`,
    ...(chain !== undefined ? [`  chain: ${list(chain)}`] : []),
    ...policyExtra, // more policy: keys, as YAML lines indented two spaces
    // Off unless given: the default would listen on a fixed port, 127.0.0.1:10042.
    'milter:',
    `  listen: ${list(milter)}`,
    ...(delivery !== undefined ? ['delivery:', `  default: ${q(delivery.default)}`, `  fsync: ${delivery.fsync}`] : []),
    'spam:',
    ...Object.entries(spam ?? { enabled: false }).map(([k, v]) => `  ${k}: ${q(v)}`),
    ...(relay !== undefined ? ['relay:', ...Object.entries(relay).map(([k, v]) => `  ${k}: ${q(v)}`)] : []),
    // Further top-level sections, as YAML lines (the policy-state part's state: and policy keys).
    ...extra,
    'log:',
    `  level: ${opts['log-info'] ? 'info' : 'warn'}`,
    '',
  ].join('\n'));
}

/**
 * Spawns mailprocd with this config in its own process group, output to logPath, and
 * polls ready() (undefined = not yet, true = ready, false = broken) for up to 20 s.
 */
export async function launchDaemon(cfg, cwd, logPath, ready, notReady) {
  if (aborted) throw new Error('not started: the bench is stopping');
  const logFd = openSync(logPath, 'a');
  const t0 = performance.now();
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, DAEMON, '--config', cfg], {
    cwd, detached: true, stdio: ['ignore', logFd, logFd], env: { ...process.env, PATH: SBIN_PATH },
  });
  closeSync(logFd);
  children.add(child);
  daemonChildren.add(child);
  child.on('exit', () => children.delete(child));
  const deadline = performance.now() + 20_000;
  while (performance.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    const r = await ready();
    if (r === true) return { child, logPath, startupMs: performance.now() - t0 };
    if (r === false) break;
    await sleep(20);
  }
  const log = readFileSync(logPath, 'utf8').trim().split('\n').slice(-15).join('\n');
  throw new Error(`mailprocd did not become ready (${child.exitCode !== null ? `exit ${child.exitCode}` : notReady}):\n${log}`);
}

export async function stopDaemon(d) {
  const t0 = performance.now();
  const tree = treeOf(d.child.pid);
  snapshots.set(d.child, tree);
  let ms = 0;
  if (d.child.exitCode === null && d.child.signalCode === null) {
    const exited = new Promise((r) => d.child.once('exit', (code, signal) => r({ code, signal })));
    d.child.kill('SIGTERM');
    const r = await Promise.race([exited, sleep(15_000).then(() => undefined)]);
    ms = performance.now() - t0;
    if (r === undefined) {
      fail('mailprocd did not exit within 15 s of SIGTERM; killed');
      killTree(d.child, 'SIGKILL');
      await exited;
      return { ms };
    }
    if (r.code !== 0) fail(`mailprocd exited with ${r.code ?? r.signal} after SIGTERM`);
  } else {
    fail(`mailprocd had exited before the bench stopped it (${d.child.exitCode ?? d.child.signalCode})`);
  }
  // Workers exit with the master; anything left of the tree after 0.5 s is ours to kill.
  await sleep(500);
  const left = tree.filter((m) => m.pid !== d.child.pid && procTable().get(m.pid)?.pgid === m.pgid);
  if (left.length > 0) {
    fail(`${left.length} process(es) of mailprocd still running 0.5 s after it exited (pids ${left.map((m) => m.pid).join(' ')}); killed`);
    signalTree(left, 'SIGKILL');
  }
  return { ms };
}

/** Spawns a helper process (its own process group, stopped with the bench); output piped; env added to ours. */
export function startChild(cmd, args, env = {}) {
  const child = spawn(cmd, args, {
    cwd: tmp, detached: true, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PATH: SBIN_PATH, ...env },
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

export function procUid(user) {
  try {
    const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${user}:`));
    return line === undefined ? undefined : Number(line.split(':')[2]);
  } catch {
    return undefined;
  }
}

export async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  if ((await Promise.race([exited.then(() => true), sleep(5000).then(() => false)])) === false) {
    killTree(child, 'SIGKILL');
    await exited;
  }
}

// ---- the bench -------------------------------------------------------------------------------
/**
 * Runs the selected parts one after the other and exits: 0 when every run
 * completed and nothing failed, 1 on a failure or the time limit, 2 for bad
 * usage or a missing build (see main.mjs).
 */
export async function runBench(parts) {
  const selected = parseOptions(parts);
  const timeoutS = num('timeout');
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => bail(`bench: ${sig}`, 130));
  const watchdog = setTimeout(() => bail(`FAIL: the bench took longer than --timeout ${timeoutS} s`, 1), timeoutS * 1000);
  watchdog.unref();

  let code = 1;
  try {
    code = await runParts(selected);
  } catch (err) {
    out(`FAIL: ${err.stack ?? err.message}`);
    code = 1;
  } finally {
    if (!aborted) {
      for (const c of children) killTree(c, 'SIGTERM');
      if (children.size > 0) await sleep(500);
      cleanupNow();
      if (tmp && opts.keep) note(`kept ${tmp}`);
    }
  }
  if (!aborted) process.exit(code); // else bail() exits once its cleanup is done
}

async function runParts(selected) {
  if (!existsSync(DAEMON)) {
    process.stderr.write(`bench: ${DAEMON} is missing: run \`npm run build\` (or \`npm run bench\`, which builds) first\n`);
    return 2;
  }
  const peersDir = resolve(process.env.MAILPROC_PEERS ?? join(ROOT, '..', 'shared', 'peers'));
  const busy = await cpuBusy(1000);
  const cpus = availableParallelism();
  note(`machine: ${cpus} CPUs, load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}, ` +
    `${busy.toFixed(0)}% CPU busy before the bench${busy > 15 ? ' (something else is running: expect noisy figures)' : ''}`);
  note(`parts: ${selected.map((p) => p.name).join(' + ') || 'none'}`);
  tmp = mkdtempSync('/tmp/mailproc-bench-');
  chmodSync(tmp, 0o755); // workers run as nobody and must reach <tmp>/mail

  for (const [i, part] of selected.entries()) {
    if (aborted) break;
    if (i > 0) out('');
    try {
      await part.run({ peersDir });
    } catch (err) {
      fail(`${part.name} part: ${err.stack ?? err.message}`);
    }
  }
  if (failures.length > 0) {
    out(`bench FAILED (${failures.length}): ${failures.join(' | ')}`);
    return 1;
  }
  out(`bench completed in ${elapsed()} s`);
  return 0;
}
