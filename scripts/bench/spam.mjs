// The spam part of `npm run bench` (scripts/bench/main.mjs): SpamAssassin as
// each recipient's owner in mailprocd's per-user checkers, side by side with
// (a) `spamassassin` run once per message and (b) one system-wide spamd
// asked by `spamc -u USER`, in the same run, on the labelled corpus sample of
// the peers (../shared/peers/corpus: 200 spam + 200 ham).
//
// Messages: --spam-messages taken evenly from corpus/spam and corpus/ham and
// interleaved, exactly as the peers' driver spam-load.mjs picks them (400:
// all of them); (a) gets --spam-sa-messages of them, picked the same way.
// Every side runs --spam-conns clients at once (spam-peers.sh's -c, 2 = the
// cores), one message per client at a time, each side with no warm-up.
//
// Our side: a mailprocd of its own (as root) with spam checking on
// (network_tests off, as the peers' -L), --spam-users users u001..@bench.test
// owned by real system users mpb-spam-N whose homes are made afresh under
// /var/lib/mailproc-bench/ (Bayes and AWL from an earlier run would
// change verdicts), each user's rules "folder=Junk spam stop" then the inbox,
// fsync on. Message i goes over LMTP (unix socket, a new connection per
// message, scripts/bench/lmtp-driver.mjs with the corpus file as DATA) to
// user (i mod users)+1. First the cold starts, one message at a time: message
// 0 to user 1 as soon as the daemon answers (its checker parent, started with
// the daemon, may still be compiling the rules: "cold parent"), then message
// k to user k+1 for the others ("cold user": the parent is warm, the user's
// checker is forked for this message); their verdicts are read and their
// files removed. Then the load: every message, msgs/s and p50/p99 (connect
// to the LMTP reply after DATA, i.e. delivered). Then, idle, each checker's
// private memory (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup,
// summed over the user's checker processes; the shared parent apart), and
// the daemon is stopped. A message's verdict is read from the delivered file:
// the folder (Junk or the inbox) and our X-Spam-Status header (score); the
// rest of the file must be the corpus file byte for byte, which is also how
// a file is matched to its message.
//
// Peer side, as ../shared/peers/spam-peers.sh runs them (same flags), with
// this part's driver (runExecLoad below: what spam-load.mjs --exec does —
// spawn per message, the message on stdin, verdict from the exit code, score
// from the output, latency spawn..exit — but keeping each message's result):
//   (b) spamd -L -m/--min-children --spam-children, started as root dropping
//       to -u peerbench, -x -c --virtual-config-dir per recipient, on a free
//       127.0.0.1 port; per message `spamc -x -c -d 127.0.0.1 -p PORT -u
//       uNNN@bench.test` rotating over 100 users, as the peers do;
//   (a) `spamassassin -L -e` per message, HOME a temp dir with an empty
//       user_prefs, exit 5 = spam.
// Without spamd/spamc or spamassassin, or with --no-peers, that side is left
// out with a note.
//
// Reported: msgs/s, p50/p99, spam detected / ham passed per side; the ratios
// mailprocd/(a) and mailprocd/(b) against the targets (>= 20x, >= 1.2x);
// verdict agreement with (b) message by message (every message that differs
// is listed, with both scores), against "identical"; private memory per
// active user against <= 40 MB (MiB, as test/workers/spam-checker.test.ts
// counts); the cold-parent and cold-user latencies; spamd's memory for
// comparison; then a RESULT name=mailprocd-bench-spam line. A run that
// failed, a message not accepted, lost, delivered unchecked or not byte for
// byte, or a daemon that dies is a failure (exit 1); ratios, verdicts and
// memory are reported, never failed on. The part needs root (real users, a
// checker per uid) and SpamAssassin; without them, or without the corpus,
// it is skipped with a note. Everything it starts is stopped by PID; the
// homes it made are removed at the end.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  aborted, abortSignal, canConnect, controlStatus, elapsed, f1, f2, fail, failureCount, foreignCpu, freePort, killTree, launchDaemon,
  mb, memory, note, num, opts, out, printResult, printTable, probe, procUid, sleep, startChild, stopChild, stopDaemon, tmp, which,
  writeDaemonConfig,
} from './harness.mjs';
import { runLmtpLoad, toWire } from './lmtp-driver.mjs';

const PASS_LIMIT_S = 150; // spam-load.mjs --max-seconds, as spam-peers.sh runs it
const CHECK_TIMEOUT_MS = 120_000; // spam-load.mjs's --timeout-ms; our spam.timeout likewise
const DOMAIN = 'bench.test';
const HOMES = '/var/lib/mailproc-bench';
const PEER_USERS = 100; // (b): spamc -u rotates over u001..u100@bench.test, as spam-peers.sh does
const TARGET = { a: 20, b: 1.2, privateMiB: 40 };

// The part's numbers, read from the options when it starts.
let N; // --spam-messages
let NA; // --spam-sa-messages
let U; // --spam-users
let C; // --spam-conns
let CH; // --spam-children

const address = (k) => `u${String(k + 1).padStart(3, '0')}@${DOMAIN}`;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length > 0 ? s[Math.floor(s.length / 2)] : NaN;
};
const quantile = (sorted, p) => (sorted.length > 0 ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : NaN);
const sha1 = (b) => createHash('sha1').update(b).digest('hex');

// ---- the corpus, picked as spam-load.mjs picks it ----------------------------------------------
function pick(dir, n) {
  const f = readdirSync(dir).filter((x) => !x.startsWith('.')).sort();
  if (n >= f.length) return f.map((x) => join(dir, x));
  const step = f.length / n;
  return Array.from({ length: n }, (_, i) => join(dir, f[Math.floor(i * step)]));
}

/** count messages: half from spam/, half from ham/, interleaved spam first; each { name, label, bytes, hash }. */
function corpusSample(corpus, count) {
  const spam = pick(join(corpus, 'spam'), Math.ceil(count / 2)).map((p) => ({ p, label: 'spam' }));
  const ham = pick(join(corpus, 'ham'), Math.floor(count / 2)).map((p) => ({ p, label: 'ham' }));
  const msgs = [];
  for (let i = 0; i < Math.max(spam.length, ham.length); i++) {
    if (spam[i]) msgs.push(spam[i]);
    if (ham[i]) msgs.push(ham[i]);
  }
  return msgs.map(({ p, label }) => {
    const bytes = readFileSync(p);
    return { name: p.slice(corpus.length + 1), label, bytes, hash: sha1(bytes) };
  });
}

// ---- users ---------------------------------------------------------------------------------------
function passwd(name) {
  try {
    const f = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim().split(':');
    return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] };
  } catch {
    return undefined;
  }
}

/**
 * The bench's user k (mpb-spam-K): created if missing (a system user, home
 * under HOMES, never removed, like the tests' users); its home made afresh,
 * so that no SpamAssassin state of an earlier run changes a verdict.
 */
function benchUser(k) {
  const name = `mpb-spam-${k + 1}`;
  if (passwd(name) === undefined) {
    mkdirSync(HOMES, { recursive: true, mode: 0o755 });
    execFileSync('useradd', ['--system', '--user-group', '--home-dir', join(HOMES, name), '--no-create-home', '--shell', '/usr/sbin/nologin', name], { stdio: 'pipe' });
  }
  const u = passwd(name);
  if (u === undefined) throw new Error(`user ${name}: not found after useradd`);
  if (u.home !== join(HOMES, name)) throw new Error(`user ${name} exists with home ${u.home}, not ${join(HOMES, name)}: not touching it`);
  rmSync(u.home, { recursive: true, force: true });
  mkdirSync(u.home, { recursive: true, mode: 0o755 });
  chownSync(u.home, u.uid, u.gid);
  return { ...u, address: address(k) };
}

function ensurePeerbench() {
  if (procUid('peerbench') !== undefined) return;
  execFileSync('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--user-group', 'peerbench'], { stdio: 'pipe' });
}

// ---- our side --------------------------------------------------------------------------------
async function startSpamDaemon(dir, users) {
  const db = join(dir, 'db');
  const mail = join(dir, 'mail'); // created 1777 by the daemon
  const sock = join(dir, 'lmtp.sock');
  mkdirSync(db);
  const maildir = `maildir:${mail}/\${user}/Maildir/`;
  writeFileSync(join(db, 'rules'), `# written by scripts/bench/spam.mjs\n${users.map((u) => `${u.address}  ${maildir}  folder=Junk  spam  stop\n${u.address}  ${maildir}\n`).join('')}`);
  writeFileSync(join(db, 'uid'), users.map((u) => `${u.address}  ${u.name}\n`).join(''));
  writeFileSync(join(db, 'spam'), `@${DOMAIN}  on\n`);
  for (const t of ['gid', 'lists']) writeFileSync(join(db, t), '');
  const cfg = join(dir, 'mailprocd.yaml');
  writeDaemonConfig(cfg, {
    writer: 'scripts/bench/spam.mjs', state: join(dir, 'state'), sources: db, mail, lmtp: [`unix:${sock}`],
    delivery: { default: maildir, fsync: true },
    spam: { enabled: true, network_tests: false, timeout: `${CHECK_TIMEOUT_MS / 1000}s` },
  });
  const d = await launchDaemon(cfg, dir, join(dir, 'mailprocd.log'), async () => ((await canConnect({ path: sock })) ? probe({ path: sock }) : undefined), 'no greeting within 20 s');
  return { ...d, mail, sock, control: join(dir, 'state', 'run', 'control.sock') };
}

/** Our X-Spam block after the trace header (Return-Path, Delivered-To, Received), and the bytes after it. */
function splitDelivered(file) {
  let pos = 0;
  const lineEnd = (from) => {
    const i = file.indexOf(0x0a, from);
    return i < 0 ? file.length : i + 1;
  };
  const startsWith = (s) => file.subarray(pos, pos + s.length).toString('latin1') === s;
  for (const name of ['Return-Path:', 'Delivered-To:', 'Received:']) {
    if (!startsWith(name)) return undefined;
    pos = lineEnd(pos);
    while (file[pos] === 0x09 || file[pos] === 0x20) pos = lineEnd(pos);
  }
  let status;
  while (startsWith('X-Spam-')) {
    const from = pos;
    pos = lineEnd(pos);
    while (file[pos] === 0x09 || file[pos] === 0x20) pos = lineEnd(pos);
    const field = file.subarray(from, pos).toString('latin1').replace(/\n[ \t]+/g, ' ').trim();
    if (status === undefined && field.startsWith('X-Spam-Status:')) status = field.slice('X-Spam-Status:'.length).trim();
  }
  return { status, rest: file.subarray(pos) };
}

/**
 * Every delivered file of every user: { user, folder, spam (Junk), flag, score,
 * index (of the message it is, by its bytes), path } and the problems found.
 */
function readDelivered(mailRoot, users, byHash) {
  const found = [];
  const problems = [];
  for (const [k, u] of users.entries()) {
    const local = u.address.split('@')[0];
    for (const [folder, dir] of [['inbox', join(mailRoot, local, 'Maildir')], ['Junk', join(mailRoot, local, 'Maildir', '.Junk')]]) {
      let tmpLeft = [];
      try {
        tmpLeft = readdirSync(join(dir, 'tmp'));
      } catch {
        // no such folder
      }
      if (tmpLeft.length > 0) problems.push(`${tmpLeft.length} file(s) left in ${dir}/tmp`);
      for (const sub of ['new', 'cur']) {
        let names = [];
        try {
          names = readdirSync(join(dir, sub));
        } catch {
          continue;
        }
        for (const n of names) {
          const path = join(dir, sub, n);
          const parts = splitDelivered(readFileSync(path));
          if (parts === undefined) {
            problems.push(`${path}: no trace header`);
            continue;
          }
          const index = byHash.get(sha1(parts.rest));
          if (index === undefined) problems.push(`${path}: not a corpus message byte for byte after the headers`);
          const m = /^(Yes|No), score=(-?[\d.]+) required=(-?[\d.]+)/.exec(parts.status ?? '');
          if (m === null) problems.push(`${path}: X-Spam-Status ${parts.status === undefined ? 'missing' : `"${parts.status.slice(0, 80)}"`}`);
          else if ((m[1] === 'Yes') !== (folder === 'Junk')) problems.push(`${path}: X-Spam-Status ${m[1]} but filed in ${folder}`);
          found.push({ user: k, folder, spam: folder === 'Junk', flag: m?.[1], score: m ? Number(m[2]) : undefined, index, path });
        }
      }
    }
  }
  return { found, problems };
}

/** Private_Clean + Private_Dirty of a process, kB. */
function privateKb(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    let kb = 0;
    for (const m of text.matchAll(/^Private_(?:Clean|Dirty):\s+(\d+) kB$/gm)) kb += Number(m[1]);
    return kb;
  } catch {
    return undefined;
  }
}

/** The checker parent and, per user, the checker processes of the daemon's tree (from /proc). */
function checkerMemory(daemonPid, users) {
  const { kids } = memory(daemonPid);
  const parent = kids.find((k) => k.cmd === 'spam-checker');
  const perUser = users.map((u) => {
    const procs = kids.filter((k) => k.uid === u.uid && k.cmd.startsWith('spam-checker'));
    const priv = procs.map((p) => privateKb(p.pid));
    return { user: u, pids: procs.map((p) => p.pid), rssKb: procs.reduce((s, p) => s + p.rssKb, 0), privateKb: priv.every((x) => x !== undefined) ? priv.reduce((s, x) => s + x, 0) : undefined };
  });
  return { parent: parent && { pid: parent.pid, rssKb: parent.rssKb, privateKb: privateKb(parent.pid) }, perUser };
}

async function sendOne(sock, rcpt, wire) {
  const r = await runLmtpLoad({ signal: abortSignal, target: `unix:${sock}`, count: 1, sessions: 1, rcptOf: () => rcpt, messageOf: () => wire, maxSeconds: PASS_LIMIT_S, timeoutMs: CHECK_TIMEOUT_MS + 10_000 });
  if (r.ok !== 1) throw new Error(`message to ${rcpt} not accepted: ${[...r.errors].map(([e, n]) => `${n}x ${e}`).join('; ')}`);
  return r.p50;
}

async function ourSide(msgs, byHash) {
  const dir = join(tmp, 'spam');
  mkdirSync(dir, { mode: 0o755 });
  const users = Array.from({ length: U }, (_, k) => benchUser(k));
  const wire = msgs.map((m) => toWire(m.bytes));
  const r = { users, cold: {}, verdicts: new Map(), problems: [] };
  const daemon = await startSpamDaemon(dir, users);
  note(`mailprocd pid ${daemon.child.pid} ready in ${daemon.startupMs.toFixed(0)} ms (unix:${daemon.sock}); users ${users.map((u) => `${u.address}=${u.name}(${u.uid})`).join(' ')}`);
  const stopSampler = foreignCpu();
  try {
    // Cold starts: message k to user k, one at a time.
    r.cold.parentMs = await sendOne(daemon.sock, users[0].address, wire[0]);
    r.cold.userMs = [];
    for (let k = 1; k < U; k++) r.cold.userMs.push(await sendOne(daemon.sock, users[k].address, wire[k]));
    note(`mailprocd cold parent: ${f1(r.cold.parentMs)} ms (sent ${daemon.startupMs.toFixed(0)} ms after its start); cold users: ${r.cold.userMs.map(f1).join(', ')} ms`);
    const cold = readDelivered(daemon.mail, users, byHash);
    r.problems.push(...cold.problems);
    r.coldVerdicts = new Map(cold.found.map((f) => [f.index, f]));
    if (cold.found.length !== U) r.problems.push(`cold starts: ${cold.found.length} files delivered, ${U} expected`);
    for (const f of cold.found) rmSync(f.path);

    const t0 = performance.now();
    const load = await runLmtpLoad({
      signal: abortSignal, target: `unix:${daemon.sock}`, count: msgs.length, sessions: C,
      rcptOf: (i) => users[i % U].address, messageOf: (i) => wire[i], maxSeconds: PASS_LIMIT_S, timeoutMs: CHECK_TIMEOUT_MS + 10_000,
    });
    r.load = load;
    note(`mailprocd: ${load.ok}/${msgs.length} msgs in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${f1(load.msgsPerSec)} msgs/s, p50 ${f1(load.p50)} ms, p99 ${f1(load.p99)} ms`);
    if (load.failed > 0) r.problems.push(`${load.failed} of ${load.msgs} not accepted: ${[...load.errors].map(([e, n]) => `${n}x ${e}`).join('; ')}`);
    if (load.msgs < msgs.length) note(`mailprocd: the ${PASS_LIMIT_S} s limit stopped the load after ${load.msgs} of ${msgs.length} msgs`);
    if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) r.problems.push(`mailprocd died during the load (${daemon.child.exitCode ?? daemon.child.signalCode})`);

    await sleep(1000); // idle: the last replies are written, the checkers wait
    r.mem = checkerMemory(daemon.child.pid, users);
    const status = await controlStatus(daemon.control).catch(() => undefined);
    r.checked = new Map((status?.spam?.checkers ?? []).map((c) => [c.uid, c.checked]));
  } finally {
    r.foreign = stopSampler();
    const stop = await stopDaemon(daemon);
    note(`mailprocd stopped in ${stop.ms.toFixed(0)} ms after SIGTERM`);
    const log = readFileSync(daemon.logPath, 'utf8').split('\n').filter(Boolean);
    const bad = log.filter((l) => /\]: (warn|error): |fatal/.test(l));
    note(`mailprocd log: ${log.length} lines, ${bad.length} warn/error`);
    for (const l of bad.slice(0, 8)) note(`  ${l}`);
  }

  const landed = readDelivered(daemon.mail, users, byHash);
  r.problems.push(...landed.problems);
  for (const f of landed.found) {
    if (f.index === undefined) continue;
    if (r.verdicts.has(f.index)) r.problems.push(`${msgs[f.index].name} delivered twice`);
    else if (f.user !== f.index % U) r.problems.push(`${msgs[f.index].name} delivered to ${users[f.user].address}, sent to ${users[f.index % U].address}`);
    r.verdicts.set(f.index, f);
  }
  const sent = r.load?.msgs ?? 0;
  if (r.load !== undefined && landed.found.length !== r.load.ok) r.problems.push(`${landed.found.length} files delivered, ${r.load.ok} accepted`);
  // One check per message per owner: each user's checker saw the cold message and its share of the load.
  for (const [k, u] of users.entries()) {
    if (r.load === undefined || r.load.failed > 0) break;
    const want = 1 + msgs.filter((_, i) => i < sent && i % U === k).length;
    const got = r.checked?.get(u.uid);
    if (got !== undefined && got !== want) r.problems.push(`${u.name}'s checker counted ${got} checks, ${want} expected`);
  }
  return r;
}

// ---- peer side -------------------------------------------------------------------------------
/** One command per message, the message on its stdin; as spam-load.mjs --exec. */
function execOne(argv, env, data, spamExit) {
  return new Promise((resolve) => {
    const ch = startChild(argv[0], argv.slice(1), env);
    let outText = '';
    let errText = '';
    const timer = setTimeout(() => killTree(ch, 'SIGKILL'), CHECK_TIMEOUT_MS);
    ch.stdout.on('data', (d) => {
      if (outText.length < 4096) outText += d;
    });
    ch.stderr.on('data', (d) => {
      if (errText.length < 4096) errText += d;
    });
    ch.stdin.on('error', () => undefined);
    ch.on('error', (e) => {
      clearTimeout(timer);
      resolve({ error: e.message });
    });
    ch.on('close', (code) => {
      clearTimeout(timer);
      const sc = /^(-?[\d.]+)\/([\d.]+)/.exec(outText) ?? /score=(-?[\d.]+) required=([\d.]+)/.exec(outText);
      const score = sc ? Number(sc[1]) : undefined;
      if (code === 0) resolve({ spam: false, score });
      else if (spamExit.has(code)) resolve({ spam: true, score });
      else resolve({ error: `exit ${code}: ${(errText || outText).trim().split('\n')[0].slice(0, 100)}` });
    });
    ch.stdin.end(data);
  });
}

/** conns clients over msgs, each result kept by index; latency = spawn..exit. */
async function runExecLoad(msgs, argvOf, { env = {}, spamExit }) {
  const results = new Array(msgs.length);
  const lat = [];
  const errors = new Map();
  let next = 0;
  let attempted = 0;
  let failed = 0;
  const t0 = performance.now();
  const deadline = t0 + PASS_LIMIT_S * 1000;
  const worker = async () => {
    while (next < msgs.length && performance.now() < deadline && !abortSignal.aborted) {
      const i = next++;
      const ts = performance.now();
      const res = await execOne(argvOf(i), env, msgs[i].bytes, spamExit);
      const ms = performance.now() - ts;
      attempted++;
      if (res.error !== undefined) {
        failed++;
        errors.set(res.error, (errors.get(res.error) ?? 0) + 1);
        continue;
      }
      results[i] = { ...res, ms };
      lat.push(ms);
    }
  };
  await Promise.all(Array.from({ length: C }, worker));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return { results, attempted, ok: lat.length, failed, secs, msgsPerSec: lat.length / secs, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), errors };
}

/** A command that failed is a failure; the time limit cutting a run short is a note (as in spam-load.mjs). */
function checkRun(who, load, total) {
  if (load.failed > 0) fail(`${who}: ${load.failed} of ${load.attempted} checks failed: ${[...load.errors].map(([e, n]) => `${n}x ${e}`).join('; ')}`);
  if (load.attempted < total) note(`${who}: the ${PASS_LIMIT_S} s limit stopped the run after ${load.attempted} of ${total} msgs`);
}

async function waitForSpamd(port) {
  const t0 = performance.now();
  while (performance.now() - t0 < 60_000 && !aborted) {
    const r = await execOne(['spamc', '-K', '-d', '127.0.0.1', '-p', String(port)], {}, Buffer.alloc(0), new Set());
    if (r.error === undefined) return performance.now() - t0;
    await sleep(100);
  }
  return undefined;
}

/** (b): one spamd as spam-peers.sh starts it; spamc -u per message. */
async function spamdSide(msgs) {
  ensurePeerbench();
  const dir = join(tmp, 'spam-b');
  const vhome = join(dir, 'vhome');
  mkdirSync(vhome, { recursive: true, mode: 0o755 });
  const pb = passwd('peerbench');
  chownSync(vhome, pb.uid, pb.gid);
  const port = await freePort();
  const spamd = startChild('spamd', ['-L', '-m', String(CH), '--min-children', String(CH), '-u', 'peerbench', '-x', '-c',
    `--virtual-config-dir=${vhome}/%u`, '-i', `127.0.0.1:${port}`, '-A', '127.0.0.1', '-r', join(dir, 'spamd.pid'), '-s', join(dir, 'spamd.log')]);
  let errTail = '';
  spamd.stdout.resume();
  spamd.stderr.on('data', (d) => {
    errTail = (errTail + d).slice(-2000);
  });
  spamd.on('error', (e) => {
    errTail += e.message;
  });
  const r = {};
  try {
    r.startupMs = await waitForSpamd(port);
    if (r.startupMs === undefined) throw new Error(`spamd (b) did not answer PING within 60 s: ${errTail.trim().split('\n').slice(-3).join(' / ')}`);
    note(`(b) spamd pid ${spamd.pid} on 127.0.0.1:${port}, answering in ${r.startupMs.toFixed(0)} ms`);
    const stopSampler = foreignCpu();
    r.load = await runExecLoad(msgs, (i) => ['spamc', '-x', '-c', '-d', '127.0.0.1', '-p', String(port), '-u', `u${String((i % PEER_USERS) + 1).padStart(3, '0')}@${DOMAIN}`], { spamExit: new Set([1]) });
    r.foreign = stopSampler();
    const m = memory(spamd.pid);
    r.mem = { masterRssKb: m.master?.rssKb, children: m.kids.map((k) => ({ pid: k.pid, rssKb: k.rssKb, privateKb: privateKb(k.pid) })) };
  } finally {
    await stopChild(spamd);
  }
  return r;
}

/** (a): spamassassin per message, HOME a temp dir with an empty user_prefs. */
async function perMessageSide(msgs) {
  const home = join(tmp, 'spam-a', 'home');
  mkdirSync(join(home, '.spamassassin'), { recursive: true });
  writeFileSync(join(home, '.spamassassin', 'user_prefs'), '');
  const stopSampler = foreignCpu();
  const load = await runExecLoad(msgs, () => ['spamassassin', '-L', '-e'], { env: { HOME: home }, spamExit: new Set([5]) });
  return { load, foreign: stopSampler() };
}

// ---- the part --------------------------------------------------------------------------------
function accuracy(msgs, verdictOf) {
  let tp = 0;
  let fn = 0;
  let tn = 0;
  let fp = 0;
  for (const [i, m] of msgs.entries()) {
    const v = verdictOf(i);
    if (v === undefined) continue;
    if (m.label === 'spam' && v) tp++;
    else if (m.label === 'spam') fn++;
    else if (v) fp++;
    else tn++;
  }
  return { spam: `${tp}/${tp + fn}`, ham: `${tn}/${tn + fp}` };
}

// Whether SpamAssassin runs its body rules compiled to native code
// (Debian's sa-compile: the Rule2XSBody plugin loaded by a .pre file, and
// sa-compile's output present). Every side loads the same site config, so
// this says how all of them ran; the peers' own figures were taken with it.
function compiledBodyRules() {
  const site = '/etc/spamassassin';
  let loaded = false;
  try {
    loaded = readdirSync(site).filter((f) => f.endsWith('.pre'))
      .some((f) => /^\s*loadplugin\s+Mail::SpamAssassin::Plugin::Rule2XSBody\b/m.test(readFileSync(join(site, f), 'utf8')));
  } catch { /* no site config: not loaded */ }
  const built = existsSync('/var/lib/spamassassin/compiled');
  if (loaded && built) return 'compiled to native code (sa-compile)';
  if (loaded) return 'Rule2XSBody loaded but nothing compiled (run sa-compile): interpreted';
  return 'interpreted (sa-compile not installed)';
}

async function runSpamPart({ peersDir }) {
  [N, NA, U, C, CH] = ['spam-messages', 'spam-sa-messages', 'spam-users', 'spam-conns', 'spam-children'].map(num);
  const corpus = join(peersDir, 'corpus');
  const why = [];
  if (!existsSync(join(corpus, 'MANIFEST.tsv'))) why.push(`no corpus in ${corpus} (../shared/peers/make-corpus.sh)`);
  if (process.getuid?.() !== 0) why.push('not root (the checkers run as real users)');
  if (which('spamassassin') === undefined) why.push('SpamAssassin not installed (Debian spamassassin spamd spamc; scripts/install-os-packages.sh)');
  if (why.length > 0) {
    note(`spam part skipped: ${why.join('; ')}`);
    return;
  }
  const peers = { b: !opts['no-peers'], a: !opts['no-peers'] && NA > 0 };
  if (peers.b && (which('spamd') === undefined || which('spamc') === undefined)) {
    note('(b) skipped: spamd or spamc not installed (Debian spamd spamc)');
    peers.b = false;
  }
  if (U < 4) note('note: the issue asks for >= 4 users; this run has fewer');
  if (N < U) throw new Error(`--spam-messages (${N}) must be at least --spam-users (${U}): each user's first message is one of them`);
  const failuresBefore = failureCount();
  const msgs = corpusSample(corpus, N);
  const byHash = new Map();
  for (const [i, m] of msgs.entries()) {
    if (byHash.has(m.hash)) throw new Error(`${m.name} and ${msgs[byHash.get(m.hash)].name} have the same bytes: cannot tell their deliveries apart`);
    byHash.set(m.hash, i);
  }
  const sample = corpusSample(corpus, NA);
  note(`bench: ${msgs.length} corpus msgs (${msgs.filter((m) => m.label === 'spam').length} spam) to ${U} users, ${C} clients; (b) spamd ${CH} children; (a) ${sample.length} msgs; local tests only; temp dir ${tmp}`);

  let ours;
  try {
    ours = await ourSide(msgs, byHash);
    for (const p of ours.problems.slice(0, 20)) fail(`mailprocd: ${p}`);
    if (ours.problems.length > 20) fail(`mailprocd: ${ours.problems.length - 20} more problems`);
  } catch (err) {
    fail(`mailprocd: ${err.message}`);
  } finally {
    for (const k of Array.from({ length: U }, (_, j) => j)) rmSync(join(HOMES, `mpb-spam-${k + 1}`), { recursive: true, force: true });
  }
  let b;
  if (peers.b && !aborted) {
    try {
      b = await spamdSide(msgs);
      note(`(b) spamd + spamc -u: ${b.load.ok}/${msgs.length} msgs, ${f1(b.load.msgsPerSec)} msgs/s, p50 ${f1(b.load.p50)} ms, p99 ${f1(b.load.p99)} ms`);
      checkRun('(b)', b.load, msgs.length);
    } catch (err) {
      fail(`(b): ${err.message}`);
    }
  } else if (!opts['no-peers']) note('(b) not run');
  let a;
  if (peers.a && !aborted) {
    note(`(a) spamassassin -L -e per message, ${sample.length} msgs (~${Math.round(sample.length / 2.3)} s)`);
    a = await perMessageSide(sample);
    note(`(a) spamassassin per message: ${a.load.ok}/${sample.length} msgs, ${f2(a.load.msgsPerSec)} msgs/s, p50 ${f1(a.load.p50)} ms, p99 ${f1(a.load.p99)} ms`);
    checkRun('(a)', a.load, sample.length);
  }

  // ---- report --------------------------------------------------------------------------------
  out('');
  out(`Spam checking, labelled corpus (../shared/peers/corpus), local tests only, ${C} clients at once on every side.`);
  out(`mailprocd: LMTP (unix socket, new connection per message) -> each owner's checker -> Maildir (Junk or inbox), fsync on, ${U} users; latency = connect .. delivered.`);
  out(`(b), (a): a command per message (latency = spawn .. exit), flags as ../shared/peers/spam-peers.sh.`);
  out(`SpamAssassin's body rules: ${compiledBodyRules()} (the same for every side: each reads the site config).`);
  out('');
  const ourVerdict = (i) => ours?.verdicts.get(i)?.spam;
  const rows = [['side', 'msgs', 'msgs/s', 'p50 ms', 'p99 ms', 'spam detected', 'ham passed']];
  if (ours?.load) {
    const acc = accuracy(msgs, ourVerdict);
    rows.push([`mailprocd, per-user checkers (${U} users)`, ours.load.ok, f1(ours.load.msgsPerSec), f1(ours.load.p50), f1(ours.load.p99), acc.spam, acc.ham]);
  }
  if (b?.load) {
    const acc = accuracy(msgs, (i) => b.load.results[i]?.spam);
    rows.push([`(b) spamd -m ${CH} + spamc -u`, b.load.ok, f1(b.load.msgsPerSec), f1(b.load.p50), f1(b.load.p99), acc.spam, acc.ham]);
  }
  if (a?.load) {
    const acc = accuracy(sample, (i) => a.load.results[i]?.spam);
    rows.push(['(a) spamassassin per message', a.load.ok, f2(a.load.msgsPerSec), f1(a.load.p50), f1(a.load.p99), acc.spam, acc.ham]);
  }
  printTable(rows, new Set([1, 2, 3, 4, 5, 6]));
  out('');

  const ratio = (x) => (ours?.load?.msgsPerSec > 0 && x?.load?.msgsPerSec > 0 ? ours.load.msgsPerSec / x.load.msgsPerSec : undefined);
  const ra = ratio(a);
  const rb = ratio(b);
  const meets = (ok) => (ok ? 'meets it' : 'BELOW it');
  if (ra !== undefined) out(`ratio mailprocd/(a) msgs/s: ${ra.toFixed(1)}x  (target >= ${TARGET.a}x): ${meets(ra >= TARGET.a)}`);
  if (rb !== undefined) out(`ratio mailprocd/(b) msgs/s: ${rb.toFixed(2)}x  (target >= ${TARGET.b}x): ${meets(rb >= TARGET.b)}`);
  const sampled = [['mailprocd', ours?.foreign], ['(b)', b?.foreign], ['(a)', a?.foreign]].filter(([, x]) => x !== undefined);
  const foreign = sampled.map(([, x]) => x);
  if (foreign.some((x) => x > 10)) {
    out(`caution: other processes used >= ${foreign.map((x) => x.toFixed(0)).join('% / ')}% of the CPUs during the ${sampled.map(([w]) => w).join(' / ')} run(s); the figures are noisy`);
  }

  // Verdicts, message by message, against (b).
  let same = 0;
  let compared = 0;
  const differ = [];
  const scoreDiffer = [];
  if (ours?.load && b?.load) {
    for (const [i, m] of msgs.entries()) {
      const o = ours.verdicts.get(i);
      const p = b.load.results[i];
      if (o === undefined || p === undefined) continue;
      compared++;
      if (o.spam === p.spam) same++;
      else differ.push(`${m.name} (${m.label}): mailprocd ${o.spam ? 'spam' : 'ham'} ${f1(o.score)}, (b) ${p.spam ? 'spam' : 'ham'} ${f1(p.score)}`);
      if (o.score !== undefined && p.score !== undefined && Math.abs(o.score - p.score) > 0.05) scoreDiffer.push(`${m.name}: ${f1(o.score)} vs ${f1(p.score)}`);
    }
    out(`verdicts: ${same}/${compared} identical to (b)${compared < msgs.length ? ` (${msgs.length - compared} not compared: missing on a side)` : ''}  (target: identical on every message): ${same === compared && compared === msgs.length ? 'meets it' : 'NOT identical'}`);
    for (const d of differ) out(`  differs: ${d}`);
    out(`scores: ${compared - scoreDiffer.length}/${compared} equal to (b)'s${scoreDiffer.length > 0 ? `; differ on ${scoreDiffer.slice(0, 10).join(', ')}${scoreDiffer.length > 10 ? ', ...' : ''}` : ''}`);
    const coldDiffer = [...(ours.coldVerdicts ?? [])].filter(([i, v]) => b.load.results[i] !== undefined && b.load.results[i].spam !== v.spam);
    if (coldDiffer.length > 0) out(`  cold-start messages whose verdict differs from (b): ${coldDiffer.map(([i]) => msgs[i].name).join(', ')}`);
  }
  if (a?.load && b?.load) {
    const aIdx = new Map(msgs.map((m, i) => [m.name, i]));
    let n = 0;
    let eq = 0;
    for (const [j, m] of sample.entries()) {
      const x = a.load.results[j];
      const y = b.load.results[aIdx.get(m.name)];
      if (x === undefined || y === undefined) continue;
      n++;
      if (x.spam === y.spam) eq++;
    }
    out(`(a) verdicts: ${eq}/${n} identical to (b) (for reference)`);
  }

  // Memory.
  let maxPrivKb;
  if (ours?.mem) {
    const { parent, perUser } = ours.mem;
    const priv = perUser.map((p) => p.privateKb).filter((x) => x !== undefined);
    maxPrivKb = priv.length > 0 ? Math.max(...priv) : undefined;
    out(`private memory per active user (Private_Clean+Private_Dirty, the user's checker processes, idle after the load):`);
    for (const p of perUser) out(`  ${p.user.address} ${p.user.name} uid ${p.user.uid}: ${p.pids.length === 0 ? 'no checker running' : `pid ${p.pids.join(',')} private ${p.privateKb !== undefined ? mb(p.privateKb) : '?'}, RSS ${mb(p.rssKb)}, ${ours.checked?.get(p.user.uid) ?? '?'} checks`}`);
    if (maxPrivKb !== undefined) out(`  largest ${mb(maxPrivKb)}, mean ${mb(priv.reduce((s, x) => s + x, 0) / priv.length)}  (target <= ${TARGET.privateMiB} MB per active user): ${meets(maxPrivKb <= TARGET.privateMiB * 1024).replace('BELOW', 'ABOVE')}`);
    if (parent) out(`checker parent (shared by all users): pid ${parent.pid}, RSS ${mb(parent.rssKb)}, private ${parent.privateKb !== undefined ? mb(parent.privateKb) : '?'}`);
  }
  if (b?.mem) {
    const kids = b.mem.children;
    out(`(b) spamd: master RSS ${mb(b.mem.masterRssKb ?? 0)}; ${kids.length} children, private ${kids.map((k) => (k.privateKb !== undefined ? mb(k.privateKb) : '?')).join(', ')} (serving every user)`);
  }
  if (ours?.cold?.parentMs !== undefined) {
    out(`first message, cold parent (sent as soon as mailprocd answered, the checker parent started with it): ${f1(ours.cold.parentMs)} ms`);
    if (ours.cold.userMs.length > 0) out(`first message, cold user (checker parent warm; the user's checker forked for it): median ${f1(median(ours.cold.userMs))} ms (${ours.cold.userMs.map(f1).join(', ')})`);
  }
  if (b?.startupMs !== undefined) out(`(b) spamd start (spawn .. PING answered): ${b.startupMs.toFixed(0)} ms`);

  printResult({
    name: 'mailprocd-bench-spam', msgs: N, users: U, conns: C, sa_msgs: a ? sample.length : 0,
    msgs_per_s: f1(ours?.load?.msgsPerSec), p50_ms: f1(ours?.load?.p50), p99_ms: f1(ours?.load?.p99),
    b_msgs_per_s: f1(b?.load?.msgsPerSec), b_p50_ms: f1(b?.load?.p50), b_p99_ms: f1(b?.load?.p99),
    a_msgs_per_s: f2(a?.load?.msgsPerSec), a_p50_ms: f1(a?.load?.p50), a_p99_ms: f1(a?.load?.p99),
    ratio_a: ra !== undefined ? ra.toFixed(1) : '-', ratio_b: rb !== undefined ? rb.toFixed(2) : '-',
    verdicts_same: compared > 0 ? `${same}/${compared}` : '-', private_max_kb: maxPrivKb ?? '-',
    parent_private_kb: ours?.mem?.parent?.privateKb ?? '-', cold_parent_ms: f1(ours?.cold?.parentMs), cold_user_ms: f1(median(ours?.cold?.userMs ?? [])),
    foreign_cpu_pct: foreign.map((x) => x.toFixed(0)).join('/') || '-', failures: failureCount() - failuresBefore, secs: elapsed(),
  });
}

export default {
  name: 'spam',
  summary: 'spam checking as each user, mailprocd beside spamassassin per message and spamd + spamc -u',
  usage: `  --spam-messages N     corpus msgs through mailprocd and (b)          default 400
  --spam-sa-messages N  corpus msgs through (a), spamassassin per msg  default 100
  --spam-users N        users (real system users mpb-spam-N)         default 5
  --spam-conns N        clients at once, every side                  default 2
  --spam-children N     (b) spamd children (-m, --min-children)      default 2
  (needs root and SpamAssassin; --no-peers skips (a) and (b))
`,
  options: {
    'spam-messages': { type: 'string', default: '400', min: 1 },
    'spam-sa-messages': { type: 'string', default: '100', min: 0 },
    'spam-users': { type: 'string', default: '5', min: 1 },
    'spam-conns': { type: 'string', default: '2', min: 1 },
    'spam-children': { type: 'string', default: '2', min: 1 },
  },
  run: runSpamPart,
};
