// The forward part of `npm run bench` (scripts/bench/main.mjs): forward:ADDR
// copies sent on through relay.smtp, end to end — LMTP in, nodemailer's SMTP
// connection pool out, a loopback SMTP sink at the far end — and how well the
// pool keeps its connections (opened per 1000 forwards; the target is far
// fewer than 1000).
//
// The sink runs in the bench's own process: smtp-server on a free 127.0.0.1
// port, no TLS, no auth, no reverse lookups (as test/helpers/smtp-sink.ts).
// It counts the TCP connections it accepts and the messages it takes, each by
// the bench sequence number in its Message-ID (makeMessage in
// lmtp-driver.mjs), checks every one is the copy the rule makes (envelope
// bench@bench.test → away@remote.test, Delivered-To: fwd@bench.test first)
// and keeps no message bytes.
//
// Our side: a mailprocd of its own on <tmp>/forward (LMTP on a unix socket,
// spam checking off, log.level warn) whose rules source is the one line
// `fwd@bench.test  forward:away@remote.test`, with relay.smtp at the sink and
// relay.max_connections --forward-connections. --forward-warmup messages
// first (not measured), then --forward-messages, both over LMTP through the
// built-in driver (lmtp-driver.mjs: --forward-sessions sessions at once, a
// new LMTP connection per message, --forward-size payload bytes), each pass
// bounded by --forward-seconds, after which the sink gets as long again to
// receive what LMTP accepted. The daemon answers LMTP only once the relay
// has answered (db/README.md, "Forwards"), so a 250 means the sink has the
// copy:
//   - forwards/s: forwards received by the sink over the time from the pass's
//     start until both the last LMTP reply and the last copy at the sink;
//   - p50/p99: per message, LMTP connect until the LMTP reply after DATA,
//     which includes the relay hop;
//   - connections per 1000 forwards: TCP connections the sink accepted during
//     the measured pass (the pool opened them; it retires a connection after
//     100 messages, src/relay/smtp-relay.ts), per 1000 copies received. The
//     daemon's start-up probe of the relay falls before the warm-up, outside.
// Then the queue must be empty, the master's RSS is read, the daemon is
// stopped (SIGTERM) and nothing may have landed in its mail root.
//
// Peer side: none. ../shared/peers sets up no forwarding MTA (its Postfix is
// installed with "No configuration"; only smtp-source and smtp-sink are used,
// and Dovecot's LMTP there has no redirect), so the figures are printed with
// no ratio, and the output says so.
//
// Failures (exit 1): an LMTP delivery not accepted, a copy LMTP accepted that
// never reaches the sink, a copy received twice, a copy the sink got for a
// message LMTP did not accept, a copy not as the rule makes it, anything left
// in the queue or the mail root, a daemon that dies or does not stop. The
// figures are reported, never failed on.
import { chmodSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { SMTPServer } from 'smtp-server';
import {
  aborted, abortSignal, canConnect, controlStatus, elapsed, f1, f2, fail, failureCount, foreignCpu, launchDaemon, mb, memory,
  note, num, out, printResult, printTable, probe, sleep, stopDaemon, tmp, writeDaemonConfig,
} from './harness.mjs';
import { makeMessage, runLmtpLoad } from './lmtp-driver.mjs';

const FORWARDER = 'fwd@bench.test';
const DESTINATION = 'away@remote.test';
const SENDER = 'bench@bench.test';
// makeMessage's Message-ID: <PID.SEQ@loadgen.bench.test>
const MESSAGE_ID = /^Message-ID: <\d+\.(\d+)@loadgen\.bench\.test>\r?$/im;

// The part's numbers, read from the options when it starts.
let FM; // --forward-messages
let FW; // --forward-warmup
let FS; // --forward-sessions
let FL; // --forward-size
let FC; // --forward-connections
let FSECS; // --forward-seconds

// ---- the sink --------------------------------------------------------------------------------
/**
 * Starts the loopback sink. Returns { port, connections(), accepted(), got(seq),
 * arrivedAt(seq), extra(from, to), problems, waitFor(seqs, ms), close() }:
 * got(seq) is how many copies of message seq it took; waitFor resolves true
 * once every seq given has arrived, false after ms or when the bench stops.
 */
async function startSink() {
  let connections = 0;
  let accepted = 0;
  const seen = new Map(); // seq → { n, at }
  const problems = { count: 0, sample: [] };
  const waiters = new Set();
  const problem = (why) => {
    problems.count++;
    if (problems.sample.length < 5) problems.sample.push(why);
  };
  const arrived = (seq) => {
    for (const w of waiters) {
      w.missing.delete(seq);
      if (w.missing.size === 0) w.done(true);
    }
  };
  const server = new SMTPServer({
    disableReverseLookup: true,
    authOptional: true,
    hideSTARTTLS: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    name: 'sink.bench.test',
    closeTimeout: 2000,
    onConnect(_session, callback) {
      connections++;
      callback();
    },
    onData(stream, session, callback) {
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('error', (err) => callback(err));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks).toString('latin1');
        accepted++;
        const from = session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address;
        const to = session.envelope.rcptTo.map((a) => a.address);
        const m = MESSAGE_ID.exec(raw);
        if (from !== SENDER || to.length !== 1 || to[0] !== DESTINATION) problem(`envelope <${from}> -> ${to.map((t) => `<${t}>`).join(',')}, not <${SENDER}> -> <${DESTINATION}>`);
        if (!raw.startsWith(`Delivered-To: ${FORWARDER}\r\n`)) problem(`a copy that does not start with "Delivered-To: ${FORWARDER}": ${JSON.stringify(raw.slice(0, 60))}`);
        if (m === null) problem(`a copy without the bench's Message-ID (envelope <${from}>)`);
        else {
          const seq = Number(m[1]);
          const s = seen.get(seq);
          if (s === undefined) seen.set(seq, { n: 1, at: performance.now() });
          else s.n++;
          arrived(seq);
        }
        callback();
      });
    },
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', () => undefined); // a client's broken connection is the daemon's to report
  return {
    port: server.server.address().port,
    connections: () => connections,
    accepted: () => accepted,
    got: (seq) => seen.get(seq)?.n ?? 0,
    arrivedAt: (seq) => seen.get(seq)?.at,
    /** Messages numbered in [from, to) that it got although they were not wanted. */
    extra: (from, to, wanted) => [...seen.keys()].filter((seq) => seq >= from && seq < to && !wanted.has(seq)).length,
    /** Copies it took of messages numbered in [from, to), doubles included. */
    copiesIn: (from, to) => [...seen].reduce((n, [seq, s]) => n + (seq >= from && seq < to ? s.n : 0), 0),
    problems,
    waitFor(seqs, ms) {
      const missing = new Set(seqs.filter((s) => !seen.has(s)));
      if (missing.size === 0) return Promise.resolve(true);
      return new Promise((resolve) => {
        const w = { missing };
        const timer = setTimeout(() => w.done(false), ms);
        const stop = () => w.done(false);
        abortSignal.addEventListener('abort', stop, { once: true });
        w.done = (ok) => {
          clearTimeout(timer);
          abortSignal.removeEventListener('abort', stop);
          waiters.delete(w);
          resolve(ok);
        };
        waiters.add(w);
      });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

// ---- mailprocd -------------------------------------------------------------------------------
async function startForwarder(dir, sinkPort) {
  const sock = join(dir, 'lmtp.sock');
  const mail = join(dir, 'mail');
  const db = join(dir, 'db');
  const cfg = join(dir, 'mailprocd.yaml');
  mkdirSync(db);
  writeFileSync(join(db, 'rules'), `# written by scripts/bench/forward.mjs\n${FORWARDER}  forward:${DESTINATION}\n`);
  for (const t of ['uid', 'gid', 'lists']) writeFileSync(join(db, t), '');
  writeDaemonConfig(cfg, {
    writer: 'scripts/bench/forward.mjs', state: join(dir, 'state'), sources: db, mail,
    lmtp: [`unix:${sock}`],
    // Only a message the rule does not match would land here: a failure.
    delivery: { default: `maildir:${mail}/\${user}/Maildir/`, fsync: true },
    relay: { smtp: `127.0.0.1:${sinkPort}`, max_connections: FC },
  });
  const d = await launchDaemon(cfg, dir, join(dir, 'mailprocd.log'), async () => {
    if (!(await canConnect({ path: sock }))) return undefined;
    return probe({ path: sock });
  }, 'no greeting within 20 s');
  return { ...d, sock, mail, control: join(dir, 'state', 'run', 'control.sock') };
}

/** Files anywhere under dir (what landed in the mail root). */
function filesUnder(dir) {
  let n = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) n += e.isDirectory() ? filesUnder(join(dir, e.name)) : 1;
  return n;
}

/**
 * One pass of `count` messages numbered from `base` over LMTP; waits for the
 * sink to have every copy LMTP accepted. Returns the pass's figures; reports
 * its failures.
 */
async function forwardPass(daemon, sink, { name, base, count }) {
  const conns0 = sink.connections();
  const t0 = performance.now();
  const r = await runLmtpLoad({
    signal: abortSignal, target: `unix:${daemon.sock}`, count, sessions: FS, size: FL, from: SENDER,
    rcptOf: () => FORWARDER, messageOf: (seq, from, rcpt) => makeMessage(FL, from, rcpt, base + seq), maxSeconds: FSECS,
  });
  const lmtpDone = performance.now();
  if (r.ok !== count) {
    const why = [...[...r.errors].map(([e, n]) => `${n}x ${e}`), ...(r.msgs < count && !aborted ? [`${count - r.msgs} not sent within --forward-seconds ${FSECS}`] : [])];
    fail(`${name}: LMTP accepted ${r.ok} of ${count}; ${why.join('; ')}`);
  }
  const wanted = [...r.perMessage.keys()].map((s) => base + s);
  const all = await sink.waitFor(wanted, FSECS * 1000);
  // Late or doubled copies show up in the counts below, not in the time.
  await sleep(300);
  const arrived = wanted.filter((s) => sink.got(s) > 0);
  const missing = wanted.length - arrived.length;
  if (!all && !aborted) fail(`${name}: ${missing} of the ${wanted.length} forwards LMTP accepted never reached the sink (waited ${FSECS} s)`);
  const doubled = arrived.filter((s) => sink.got(s) > 1);
  if (doubled.length > 0) fail(`${name}: the sink got ${doubled.length} forwards more than once (e.g. message ${doubled[0]} ${sink.got(doubled[0])} times)`);
  const extra = sink.extra(base, base + count, new Set(wanted));
  if (extra > 0) fail(`${name}: the sink got ${extra} forwards of messages LMTP did not accept`);
  const lastAt = Math.max(lmtpDone, ...arrived.map((s) => sink.arrivedAt(s)));
  const secs = (lastAt - t0) / 1000;
  const conns = sink.connections() - conns0;
  return {
    copies: sink.copiesIn(base, base + count), sent: count, accepted: r.ok, arrived: arrived.length, secs, perSec: arrived.length / secs,
    p50: r.p50, p99: r.p99, conns, connsPer1000: arrived.length > 0 ? (1000 * conns) / arrived.length : NaN,
  };
}

async function ourSide() {
  const dir = join(tmp, 'forward');
  mkdirSync(dir);
  chmodSync(dir, 0o755); // workers run as nobody and must reach <dir>/mail (none should be needed)
  const sink = await startSink();
  note(`sink: smtp-server on 127.0.0.1:${sink.port} in the bench's process (no TLS, no auth)`);
  try {
    const daemon = await startForwarder(dir, sink.port);
    note(`mailprocd pid ${daemon.child.pid} ready in ${daemon.startupMs.toFixed(0)} ms (unix:${daemon.sock}); relay.smtp 127.0.0.1:${sink.port}, max_connections ${FC}`);
    let sent = 0;
    let warm;
    let main;
    let mem;
    try {
      if (FW > 0) {
        warm = await forwardPass(daemon, sink, { name: 'mailprocd-forward-warmup', base: 0, count: FW });
        note(`mailprocd warm-up: ${warm.arrived} of ${FW} forwarded in ${warm.secs.toFixed(1)} s, ${warm.conns} connection(s) opened (not measured)`);
        sent += FW;
      }
      if (!aborted) {
        main = await forwardPass(daemon, sink, { name: 'mailprocd-forward', base: sent, count: FM });
        note(`mailprocd-forward: ${f1(main.perSec)} forwards/s over ${main.arrived} in ${main.secs.toFixed(1)} s; p50 ${f2(main.p50)} ms, p99 ${f2(main.p99)} ms; ` +
          `${main.conns} connection(s) opened`);
        sent += FM;
      }
      if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) fail(`mailprocd died during the forward runs (${daemon.child.exitCode ?? daemon.child.signalCode})`);
    } finally {
      const status = await controlStatus(daemon.control).catch(() => undefined);
      if (status?.queue?.messages > 0) fail(`mailprocd: ${status.queue.messages} message(s) left in the queue after the forward runs`);
      mem = memory(daemon.child.pid);
      const stop = await stopDaemon(daemon);
      note(`mailprocd stopped in ${stop.ms.toFixed(0)} ms after SIGTERM`);
    }
    // Anything sent after the passes were counted (the queue, a slow connection) or not numbered by the bench.
    const counted = [warm, main].reduce((n, p) => n + (p?.copies ?? 0), 0);
    if (sink.accepted() > counted) fail(`the sink took ${sink.accepted() - counted} message(s) more than the passes counted (late, or not the bench's)`);
    if (sink.problems.count > 0) fail(`${sink.problems.count} copies at the sink are not as the rule makes them: ${sink.problems.sample.join(' | ')}`);
    const landed = filesUnder(daemon.mail);
    if (landed > 0) fail(`mailprocd: ${landed} file(s) in the mail root; every message should have been forwarded`);
    const log = readFileSync(daemon.logPath, 'utf8').split('\n').filter(Boolean);
    const bad = log.filter((l) => /\]: (warn|error): |fatal|worker\[\d+\]/.test(l));
    note(`mailprocd log: ${log.length} lines, ${bad.length} warn/error`);
    for (const l of bad.slice(0, 8)) note(`  ${l}`);
    return { main, warm, mem, sent, startupMs: daemon.startupMs };
  } finally {
    await sink.close();
  }
}

async function runForwardPart() {
  [FM, FW, FS, FL, FC, FSECS] = ['forward-messages', 'forward-warmup', 'forward-sessions', 'forward-size', 'forward-connections', 'forward-seconds'].map(num);
  const failuresBefore = failureCount();
  note(`bench: ${FM} forwards (+${FW} warm-up) of ${FL} bytes over LMTP, ${FS} sessions, relay.max_connections ${FC}; temp dir ${tmp}/forward`);
  let ours;
  const stopSampler = foreignCpu();
  try {
    ours = await ourSide();
  } catch (err) {
    fail(err.message);
  }
  const foreign = stopSampler();
  note(`other processes used >= ${foreign.toFixed(0)}% of the CPUs while mailprocd was measured`);

  // ---- report --------------------------------------------------------------------------------
  const m = ours?.main;
  out('');
  out(`forward:ADDR, LMTP (unix socket, new connection per message, ${FS} sessions) -> mailprocd -> relay.smtp (nodemailer pool, max_connections ${FC}) -> loopback SMTP sink; ${FL}-byte payload.`);
  out('forwards/s: copies at the sink over the time until the last LMTP reply and the last copy; p50/p99: LMTP connect to the reply after DATA, which mailprocd sends once the relay accepted.');
  out('');
  printTable([
    ['server', 'forwards', 'forwards/s', 'p50 ms', 'p99 ms', 'connections', 'conns/1000 fwd'],
    ['mailprocd', m ? `${m.arrived}/${m.sent}` : '-', f1(m?.perSec), f2(m?.p50), f2(m?.p99), m?.conns ?? '-', f1(m?.connsPer1000)],
  ], new Set([1, 2, 3, 4, 5, 6]));
  out('');
  out('peer: none. ../shared/peers sets up no forwarding MTA (its Postfix is installed with "No configuration", only smtp-source/smtp-sink are used; Dovecot there has no redirect): no ratio.');
  if (m !== undefined) {
    const verdict = m.connsPer1000 < 100 ? 'connections are reused' : 'connections are NOT reused';
    out(`connections opened per 1000 forwards: ${f1(m.connsPer1000)} (target: far fewer than 1000): ${verdict}`);
  }
  if (foreign > 10) out(`caution: other processes used >= ${foreign.toFixed(0)}% of the CPUs during the run; the figures are noisy`);
  if (ours?.mem?.master) out(`mailprocd master RSS after the load ${mb(ours.mem.master.rssKb)} (peak ${mb(ours.mem.master.hwmKb)}); start ${ours.startupMs.toFixed(0)} ms`);

  printResult({
    name: 'mailprocd-bench-forward', msgs: FM, warmup: FW, sessions: FS, size: FL, max_connections: FC,
    forwards: m?.arrived ?? '-', forwards_per_s: f1(m?.perSec), p50_ms: f2(m?.p50), p99_ms: f2(m?.p99),
    connections: m?.conns ?? '-', conns_per_1000: f1(m?.connsPer1000), peer: 'none', ratio: '-',
    master_rss_kb: ours?.mem?.master?.rssKb ?? '-', foreign_cpu_pct: foreign.toFixed(0),
    failures: failureCount() - failuresBefore, secs: elapsed(),
  });
}

export default {
  name: 'forward',
  summary: 'forward:ADDR through relay.smtp to a loopback SMTP sink (no peer)',
  usage: `  --forward-messages N    forwards in the measured pass             default 2000
  --forward-warmup N      unmeasured forwards before it             default 200
  --forward-sessions N    concurrent LMTP sessions                  default 8
  --forward-size N        payload bytes per message                 default 4096
  --forward-connections N relay.max_connections (1..100)            default 5
  --forward-seconds S     time limit of a pass, then of the sink's wait default 60
  (no peer: ../shared/peers sets up no forwarding; --no-peers changes nothing)
`,
  options: {
    'forward-messages': { type: 'string', default: '2000', min: 1 },
    'forward-warmup': { type: 'string', default: '200', min: 0 },
    'forward-sessions': { type: 'string', default: '8', min: 1 },
    'forward-size': { type: 'string', default: '4096', min: 1 },
    'forward-connections': { type: 'string', default: '5', min: 1, max: 100 },
    'forward-seconds': { type: 'string', default: '60', min: 1 },
  },
  run: runForwardPart,
};
