// The lmtp part of `npm run bench` (scripts/bench/main.mjs): LMTP → Maildir
// delivery throughput and latency of mailprocd, side by side with Dovecot's
// LMTP server in the same run.
//
// Our side: starts dist/src/cli/mailprocd.js on a temp dir (unix socket + a
// loopback TCP port, fsync on, a catch-all rule for @bench.test into
// <tmp>/mail/${user}/Maildir/, deliveries as nobody), warms it up with
// --warmup messages (not measured, as lmtp-dovecot.sh does for Dovecot), then
// loads it with the peer harness's driver, ../shared/peers/lmtp-load.sh
// (Postfix smtp-source for msgs/s over --messages, lmtp-load.mjs for p50/p99
// over --latency), with exactly the parameters lmtp-dovecot.sh uses. With
// --all also over TCP (new connection per message, and kept with -d), the two
// other variants Dovecot is measured in. Then it reads the RSS of the master
// and of its worker processes (idle, after the load), stops the daemon with
// SIGTERM and checks that every message landed in Maildir new/ as nobody.
// The daemon runs at log.level warn (its "ready" line is info, so readiness is
// found by connecting to both listeners); --log-info runs it at info and sums
// up the delay= of its per-delivery log lines (server-side latency).
//
// Peer side: runs ../shared/peers/lmtp-dovecot.sh (Dovecot LMTP from a
// throwaway config, under `unshare -n`) with the same -m/-s/-l/-u/-k and
// parses its RESULT lines. Prints one table and the msgs/s ratio
// mailprocd/Dovecot over the unix socket (the issue's target: ≥ 1.0×, goal 1.2×),
// then a RESULT name=mailprocd-bench line.
//
// Without the peers directory (or without smtp-source, or with --builtin) our
// side is loaded by the small lock-step LMTP driver in
// scripts/bench/lmtp-driver.mjs instead (same sessions, size, users; msgs/s
// and p50/p99 from one pass), and the peer side is skipped with a note.
// --no-peers skips only Dovecot. A lost message, a failed run or a daemon
// that dies is a failure (exit 1); the ratio never is. The LMTP daemon gets
// `policy: listen: []` (the default would be a fixed port, 127.0.0.1:10040).
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  aborted, abortSignal, canConnect, controlStatus, elapsed, f1, f2, fail, failureCount, foreignCpu, freePort, launchDaemon,
  mb, memory, note, num, opts, out, printResult, printTable, probe, procUid, resultLine, ROOT, run, sleep, stopDaemon, tmp, which,
  writeDaemonConfig,
} from './harness.mjs';
import { runLmtpLoad } from './lmtp-driver.mjs';

const PASS_LIMIT_S = 150; // lmtp-load.sh -T, its default, which lmtp-dovecot.sh uses too
// The part's numbers, read from the options when it starts.
let M; // --messages
let K; // --latency
let W; // --warmup
let S; // --sessions
let L; // --size
let U; // --users

// ---- mail root checks ------------------------------------------------------------------------
// ---- mail root checks ------------------------------------------------------------------------
function countMail(root) {
  const perUser = new Map();
  let total = 0;
  let tmpLeft = 0;
  let sample;
  let users;
  try {
    users = readdirSync(root);
  } catch {
    users = [];
  }
  for (const u of users) {
    let n = 0;
    for (const sub of ['new', 'cur']) {
      try {
        const names = readdirSync(join(root, u, 'Maildir', sub));
        n += names.length;
        if (sample === undefined && names.length > 0) sample = join(root, u, 'Maildir', sub, names[0]);
      } catch {
        // no such dir
      }
    }
    try {
      tmpLeft += readdirSync(join(root, u, 'Maildir', 'tmp')).length;
    } catch {
      // none
    }
    perUser.set(u, n);
    total += n;
  }
  return { total, perUser, tmpLeft, sample };
}

async function startDaemon(mailRoot, sock, port) {
  const db = join(tmp, 'db');
  const cfg = join(tmp, 'mailprocd.yaml');
  writeFileSync(join(db, 'rules'), `# written by scripts/bench/lmtp.mjs\n@bench.test  maildir:${mailRoot}/\${user}/Maildir/\n`);
  for (const t of ['uid', 'gid', 'lists']) writeFileSync(join(db, t), '');
  writeDaemonConfig(cfg, {
    writer: 'scripts/bench/lmtp.mjs', state: join(tmp, 'state'), sources: db, mail: mailRoot,
    lmtp: [`unix:${sock}`, `127.0.0.1:${port}`],
    delivery: { default: `maildir:${mailRoot}/\${user}/Maildir/`, fsync: true },
  });
  // Ready = both listeners accept (the "ready" line is info level, and the bench runs at
  // warn; the TCP listener starts last), then the unix one must greet with 220.
  return launchDaemon(cfg, tmp, join(tmp, 'mailprocd.log'), async () => {
    if (!(await canConnect({ path: sock })) || !(await canConnect({ host: '127.0.0.1', port }))) return undefined;
    return probe({ path: sock });
  }, 'no greeting within 20 s');
}

function loadArgs(v, name, target, m, k, check) {
  const a = ['-m', String(m), '-s', String(S), '-l', String(L), '-u', String(U), '-k', String(k), '-T', String(PASS_LIMIT_S), '-n', name];
  if (check) a.push('-c', check);
  if (v.reuse) a.push('-d');
  a.push(target);
  return a;
}

async function ourSide(peers) {
  const mailRoot = join(tmp, 'mail'); // created 1777 by the daemon
  const sock = join(tmp, 'lmtp.sock');
  const port = await freePort();
  const daemon = await startDaemon(mailRoot, sock, port);
  const idle = memory(daemon.child.pid);
  note(`mailprocd pid ${daemon.child.pid} ready in ${daemon.startupMs.toFixed(0)} ms (unix:${sock}, 127.0.0.1:${port}); RSS at start ${mb(idle.master?.rssKb ?? 0)}`);

  const variants = [{ key: 'unix', label: 'unix socket', target: `unix:${sock}`, reuse: false }];
  if (opts.all) {
    variants.push({ key: 'tcp', label: 'TCP, new conn per msg', target: `127.0.0.1:${port}`, reuse: false });
    variants.push({ key: 'tcp_reuse', label: 'TCP, conn kept (-d)', target: `127.0.0.1:${port}`, reuse: true });
  }
  const useScripts = peers.load !== undefined && !opts.builtin;
  const driver = useScripts ? 'smtp-source + lmtp-load.mjs (peers/lmtp-load.sh)' : 'built-in driver (scripts/bench/lmtp-driver.mjs)';
  note(`load driver for mailprocd: ${driver}`);
  let expected = 0;

  if (W > 0) {
    const t0 = performance.now();
    if (useScripts) {
      const r = await run(peers.load, loadArgs(variants[0], 'mailprocd-warmup', `unix:${sock}`, W, 0), PASS_LIMIT_S + 20);
      const f = resultLine(r.stdout);
      if (r.code !== 0 || f?.msgs !== String(W)) fail(`mailprocd warm-up: ${r.timedOut ? 'timed out' : `exit ${r.code}`}, msgs=${f?.msgs ?? '?'} of ${W}; ${r.stderr.trim().split('\n').slice(0, 3).join(' / ')}`);
    } else {
      const r = await runLmtpLoad({ signal: abortSignal, target: `unix:${sock}`, count: W, sessions: S, size: L, users: U, maxSeconds: PASS_LIMIT_S });
      if (r.ok !== W) fail(`mailprocd warm-up: ${r.ok} of ${W} delivered; ${[...r.errors].map(([e, n]) => `${n}x ${e}`).join('; ')}`);
    }
    expected += W;
    note(`mailprocd warm-up: ${W} msgs in ${((performance.now() - t0) / 1000).toFixed(1)} s (not measured)`);
  }

  const rows = {};
  for (const v of variants) {
    const name = `mailprocd-lmtp-${v.key.replace('_', '-')}`;
    if (useScripts) {
      const r = await run(peers.load, loadArgs(v, name, v.target, M, K, mailRoot), 2 * PASS_LIMIT_S + 40);
      const f = resultLine(r.stdout);
      const problems = [];
      if (f === undefined) problems.push(`no RESULT line (exit ${r.code}${r.timedOut ? ', timed out' : ''})`);
      else {
        if (f.msgs !== String(M)) problems.push(`smtp-source completed ${f.msgs} of ${M}`);
        if (K > 0 && (f.lat_msgs !== String(K) || f.lat_failed !== '0')) problems.push(`latency pass ${f.lat_msgs}/${K}, failed=${f.lat_failed}`);
        if (f.delivered !== f.expected) problems.push(`delivered=${f.delivered} expected=${f.expected}`);
        if (r.code !== 0 && problems.length === 0) problems.push(`lmtp-load.sh exit ${r.code}`);
      }
      if (r.stderr.trim() !== '') note(`${name} stderr: ${r.stderr.trim().split('\n').slice(0, 5).join(' / ')}`);
      if (problems.length > 0) fail(`${name}: ${problems.join('; ')}`);
      rows[v.key] = {
        label: v.label, msgsPerS: f?.msgs_per_s, p50: f?.p50_ms, p99: f?.p99_ms, latMsgsPerS: f?.lat_msgs_per_s,
        delivered: f?.delivered !== undefined ? `${f.delivered}/${f.expected}` : '-', secs: f?.secs,
      };
      note(`${name}: ${f?.msgs_per_s ?? '?'} msgs/s over ${M} msgs in ${f?.secs ?? '?'} s; p50 ${f?.p50_ms ?? '?'} ms, p99 ${f?.p99_ms ?? '?'} ms over ${K}`);
      expected += M + K;
    } else {
      const before = countMail(mailRoot).total;
      const r = await runLmtpLoad({ signal: abortSignal, target: v.target, count: M, sessions: S, size: L, users: U, reuse: v.reuse, maxSeconds: PASS_LIMIT_S });
      await sleep(200);
      const delivered = countMail(mailRoot).total - before;
      if (r.ok !== M) fail(`${name}: ${r.ok} of ${M} accepted; ${[...r.errors].map(([e, n]) => `${n}x ${e}`).join('; ')}`);
      if (delivered !== M) fail(`${name}: delivered=${delivered} expected=${M}`);
      rows[v.key] = {
        label: v.label, msgsPerS: r.msgsPerSec, p50: r.p50, p99: r.p99, latMsgsPerS: r.msgsPerSec,
        delivered: `${delivered}/${M}`, secs: r.secs.toFixed(3),
      };
      note(`${name}: ${r.msgsPerSec.toFixed(1)} msgs/s over ${M} msgs in ${r.secs.toFixed(1)} s; p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms`);
      expected += M;
    }
    if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) {
      fail(`mailprocd died during ${name} (${daemon.child.exitCode ?? daemon.child.signalCode})`);
      break;
    }
  }

  // Idle memory after the load: the master and its delivery workers (one per
  // uid:gid). A worker collects its garbage after 1 s idle; measure after that.
  await sleep(1500);
  const mem = memory(daemon.child.pid);
  // Worker start latency (spawn → privileges dropped, code loaded), as the daemon measured it.
  const status = await controlStatus(join(tmp, 'state', 'run', 'control.sock')).catch(() => undefined);
  const spawnMs = status?.workers?.map((w) => w.readyMs).filter((v) => typeof v === 'number') ?? [];
  if (spawnMs.length > 0) note(`mailprocd worker start latency: ${spawnMs.join(', ')} ms`);
  const stop = await stopDaemon(daemon);
  note(`mailprocd stopped in ${stop.ms.toFixed(0)} ms after SIGTERM`);

  // Every message in new/ (or cur/), owned by nobody, nothing left in tmp/.
  const landed = countMail(mailRoot);
  const counts = [...landed.perUser.values()].sort((a, b) => a - b);
  let owner = '-';
  if (landed.sample) owner = String(statSync(landed.sample).uid);
  const nobody = procUid('nobody');
  if (landed.total !== expected) fail(`mailprocd: ${landed.total} messages landed, ${expected} expected`);
  if (landed.tmpLeft > 0) fail(`mailprocd: ${landed.tmpLeft} files left in Maildir tmp/`);
  if (process.getuid?.() === 0 && nobody !== undefined && landed.sample && Number(owner) !== nobody) fail(`mailprocd: delivered files owned by uid ${owner}, not nobody (${nobody})`);
  note(`mailprocd landed: ${landed.total} of ${expected} in Maildir new/+cur/, users_with_mail=${landed.perUser.size} ` +
    `min_per_user=${counts[0] ?? 0} max_per_user=${counts[counts.length - 1] ?? 0}, owner uid=${owner}, tmp/ leftovers=${landed.tmpLeft}`);

  // The daemon's own log: anything at warn or error is worth a look.
  const log = readFileSync(daemon.logPath, 'utf8').split('\n').filter(Boolean);
  const bad = log.filter((l) => /\]: (warn|error): |fatal|worker\[\d+\]/.test(l));
  note(`mailprocd log: ${log.length} lines, ${bad.length} warn/error`);
  for (const l of bad.slice(0, 8)) note(`  ${l}`);
  let delays;
  if (opts['log-info']) {
    const d = log.map((l) => /delay=([\d.]+)/.exec(l)?.[1]).filter(Boolean).map(Number).sort((a, b) => a - b);
    const q = (p) => (d.length > 0 ? d[Math.min(d.length - 1, Math.floor(p * d.length))] * 1000 : NaN);
    delays = { n: d.length, p50: q(0.5), p99: q(0.99), max: d.length > 0 ? d[d.length - 1] * 1000 : NaN };
    note(`mailprocd delay= (DATA received .. delivered, server side): ${d.length} deliveries, p50 ${f1(delays.p50)} ms, p99 ${f1(delays.p99)} ms, max ${f1(delays.max)} ms`);
  }
  return { rows, mem, spawnMs, startupMs: daemon.startupMs, stopMs: stop.ms, landed, expected, driver, delays };
}

// ---- peer side -------------------------------------------------------------------------------
async function dovecotSide(peers) {
  const args = ['-m', String(M), '-s', String(S), '-l', String(L), '-u', String(U), '-k', String(K)];
  // 4 lmtp-load.sh runs (sink + 3 Dovecot variants) of up to 2 passes, plus the warm-up.
  const r = await run(peers.dovecot, args, 9 * PASS_LIMIT_S + 120);
  for (const l of r.stderr.trim().split('\n').filter(Boolean).slice(0, 12)) note(`dovecot: ${l.replace(/^# /, '')}`);
  const get = (name) => resultLine(r.stdout, name);
  const rows = {};
  const map = [
    ['unix', 'dovecot-lmtp-unix', 'unix socket'],
    ['tcp', 'dovecot-lmtp-tcp', 'TCP, new conn per msg'],
    ['tcp_reuse', 'dovecot-lmtp-tcp-reuse', 'TCP, conn kept (-d)'],
  ];
  for (const [key, name, label] of map) {
    const f = get(name);
    if (f === undefined) continue;
    rows[key] = {
      label, msgsPerS: f.msgs_per_s, p50: f.p50_ms, p99: f.p99_ms, latMsgsPerS: f.lat_msgs_per_s,
      delivered: f.delivered !== undefined ? `${f.delivered}/${f.expected}` : '-', secs: f.secs,
    };
    if (f.msgs !== String(M) || f.delivered !== f.expected) fail(`${name}: msgs=${f.msgs} of ${M}, delivered=${f.delivered} expected=${f.expected}`);
  }
  const sink = get('smtp-sink-null-unix');
  const sum = get('dovecot-lmtp');
  if (r.timedOut) fail(`lmtp-dovecot.sh timed out after ${r.secs.toFixed(0)} s`);
  else if (rows.unix === undefined) fail(`lmtp-dovecot.sh gave no dovecot-lmtp-unix RESULT (exit ${r.code}); stderr: ${r.stderr.trim().split('\n').slice(-5).join(' / ')}`);
  if (sum !== undefined && sum.landed !== sum.expected) fail(`dovecot: landed=${sum.landed} expected=${sum.expected}`);
  if (r.code !== 0 && !r.timedOut) fail(`lmtp-dovecot.sh exit ${r.code}`);
  return { rows, sink, sum, secs: r.secs };
}

async function runLmtpPart({ peersDir }) {
  [M, K, W, S, L, U] = ['messages', 'latency', 'warmup', 'sessions', 'size', 'users'].map(num);
  if (M < 2000 || U < 50 || S !== 8 || L !== 4096) note(`note: the issue's load is >= 2000 msgs, >= 50 users, 8 sessions, 4096 bytes; this run differs`);

  const peers = {};
  const have = (f) => existsSync(join(peersDir, f));
  if (!have('lmtp-load.sh')) note(`peers: ${peersDir}/lmtp-load.sh not found: our figures only, with the built-in driver`);
  else if (which('smtp-source') === undefined) note('peers: smtp-source not found (Debian postfix, /usr/sbin): our figures only, with the built-in driver');
  else {
    peers.load = join(peersDir, 'lmtp-load.sh');
    const why = [];
    if (opts['no-peers']) why.push('--no-peers');
    if (!have('lmtp-dovecot.sh')) why.push(`${peersDir}/lmtp-dovecot.sh not found`);
    if (which('dovecot') === undefined || !existsSync('/usr/lib/dovecot/lmtp')) why.push('Dovecot not installed (Debian dovecot-core dovecot-lmtpd; scripts/install-os-packages.sh)');
    if (process.getuid?.() !== 0) why.push('not root (lmtp-dovecot.sh needs root)');
    if (why.length === 0) peers.dovecot = join(peersDir, 'lmtp-dovecot.sh');
    else note(`peer side skipped: ${why.join('; ')}`);
  }
  if (process.getuid?.() !== 0) note('not root: mailprocd delivers as the invoking user, not as nobody');
  mkdirSync(join(tmp, 'db'));
  const failuresBefore = failureCount();
  note(`bench: ${M} msgs (+${K} for latency, ${W} warm-up) of ${L} bytes, ${S} sessions, ${U} users; fsync on; temp dir ${tmp}`);

  let ours;
  let stopSampler = foreignCpu();
  try {
    ours = await ourSide(peers);
  } catch (err) {
    fail(err.message);
  }
  const foreignOurs = stopSampler();
  note(`other processes used >= ${foreignOurs.toFixed(0)}% of the CPUs while mailprocd was measured`);
  let theirs;
  let foreignTheirs;
  if (peers.dovecot && !aborted) {
    note(`running ${peers.dovecot} (Dovecot under unshare -n: smtp-sink ceiling, unix, TCP, TCP -d; ~30 s)`);
    stopSampler = foreignCpu();
    theirs = await dovecotSide(peers);
    foreignTheirs = stopSampler();
    note(`other processes used >= ${foreignTheirs.toFixed(0)}% of the CPUs while Dovecot was measured`);
  }

  // ---- report --------------------------------------------------------------------------------
  out('');
  out(`LMTP -> Maildir, ${L}-byte payload, ${S} sessions, ${U} users, fsync on.`);
  if (ours === undefined || ours.driver.startsWith('smtp') || theirs !== undefined) {
    out(`msgs/s: ${M} msgs through smtp-source (new connection per message unless -d); p50/p99: ${K} msgs through lmtp-load.mjs.`);
  }
  if (ours && !ours.driver.startsWith('smtp')) out(`mailprocd: built-in driver (new connection per message unless -d), msgs/s and p50/p99 from one pass of ${M} msgs.`);
  out('');
  const head = ['server', 'variant', 'msgs/s', 'p50 ms', 'p99 ms', 'lat-pass msgs/s', 'delivered'];
  const table = [head];
  const keys = ['unix', 'tcp', 'tcp_reuse'];
  for (const k of keys) {
    for (const [who, side] of [['mailprocd', ours], ['dovecot', theirs]]) {
      const r = side?.rows?.[k];
      if (r === undefined) continue;
      table.push([who, r.label, f1(r.msgsPerS), f2(r.p50), f2(r.p99), f1(r.latMsgsPerS), r.delivered]);
    }
  }
  if (theirs?.sink) table.push(['smtp-sink', 'null server (driver ceiling)', f1(theirs.sink.msgs_per_s), f2(theirs.sink.p50_ms), f2(theirs.sink.p99_ms), f1(theirs.sink.lat_msgs_per_s), '-']);
  printTable(table, new Set([2, 3, 4, 5, 6]));
  out('');

  const ratio = (k) => {
    const a = Number(ours?.rows?.[k]?.msgsPerS);
    const b = Number(theirs?.rows?.[k]?.msgsPerS);
    return a > 0 && b > 0 ? a / b : undefined;
  };
  const ru = ratio('unix');
  if (ru !== undefined) {
    const verdict = ru >= 1.2 ? 'meets the 1.2x goal' : ru >= 1.0 ? 'meets the 1.0x target (goal 1.2x)' : 'BELOW the 1.0x target';
    out(`ratio mailprocd/dovecot msgs/s, unix socket: ${ru.toFixed(2)}x  (target >= 1.0x, goal 1.2x): ${verdict}`);
    for (const k of ['tcp', 'tcp_reuse']) {
      const r = ratio(k);
      if (r !== undefined) out(`ratio mailprocd/dovecot msgs/s, ${ours.rows[k].label}: ${r.toFixed(2)}x`);
    }
    if (Math.max(foreignOurs, foreignTheirs ?? 0) > 10) {
      out(`caution: other processes used >= ${foreignOurs.toFixed(0)}% / ${(foreignTheirs ?? 0).toFixed(0)}% of the CPUs during the mailprocd / Dovecot runs; the ratio is noisy`);
    }
  } else if (theirs === undefined) out('ratio: - (no Dovecot run)');
  else out('ratio: - (a run gave no figure)');

  if (ours?.mem?.master) {
    const { master, kids } = ours.mem;
    const workers = kids.filter((k) => k.cmd.includes('worker-main'));
    const total = master.rssKb + kids.reduce((s, k) => s + k.rssKb, 0);
    out(`mailprocd memory after the load (idle): master pid ${master.pid} RSS ${mb(master.rssKb)} (peak ${mb(master.hwmKb)}); ` +
      `${workers.length} worker(s)${kids.length > workers.length ? ` + ${kids.length - workers.length} other child(ren)` : ''}; total ${mb(total)}`);
    for (const k of kids) {
      out(`  child pid ${k.pid} uid ${k.uid} RSS ${mb(k.rssKb)} (peak ${mb(k.hwmKb)}): ${k.cmd.replace(ROOT + '/', '')}`);
    }
    out(`mailprocd start ${ours.startupMs.toFixed(0)} ms, stop ${ours.stopMs.toFixed(0)} ms; worker start latency ${ours.spawnMs.length > 0 ? `${ours.spawnMs.join(', ')} ms` : '-'}`);
    for (const k of workers) out(`idle worker RSS ${mb(k.rssKb)} (target <= 50 MiB): ${k.rssKb <= 50 * 1024 ? 'meets it' : 'ABOVE it'}`);
  }
  if (theirs?.sum) out(`dovecot: landed ${theirs.sum.landed}/${theirs.sum.expected}, startup ${theirs.sum.startup_ms} ms, script ${theirs.secs.toFixed(1)} s`);

  const w = ours?.mem?.kids?.filter((k) => k.cmd.includes('worker-main')) ?? [];
  const fields = {
    name: 'mailprocd-bench',
    driver: ours ? (ours.driver.startsWith('smtp') ? 'smtp-source' : 'builtin') : 'none',
    msgs: M, lat_msgs: ours?.driver.startsWith('smtp') ? K : 0, warmup: W, sessions: S, size: L, users: U,
    msgs_per_s_unix: f1(ours?.rows?.unix?.msgsPerS), p50_ms_unix: f2(ours?.rows?.unix?.p50), p99_ms_unix: f2(ours?.rows?.unix?.p99),
    dovecot_msgs_per_s_unix: f1(theirs?.rows?.unix?.msgsPerS), dovecot_p50_ms_unix: f2(theirs?.rows?.unix?.p50), dovecot_p99_ms_unix: f2(theirs?.rows?.unix?.p99),
    ratio_unix: ru !== undefined ? ru.toFixed(2) : '-',
    ...(opts.all ? { ratio_tcp: ratio('tcp')?.toFixed(2) ?? '-', ratio_tcp_reuse: ratio('tcp_reuse')?.toFixed(2) ?? '-' } : {}),
    master_rss_kb: ours?.mem?.master?.rssKb ?? '-', workers: w.length, worker_rss_kb: w.map((k) => k.rssKb).join(',') || '-',
    landed: ours?.landed?.total ?? '-', expected: ours?.expected ?? '-',
    foreign_cpu_pct: `${foreignOurs.toFixed(0)}${foreignTheirs !== undefined ? `/${foreignTheirs.toFixed(0)}` : ''}`,
    failures: failureCount() - failuresBefore, secs: elapsed(),
  };
  printResult(fields);
}

export default {
  name: 'lmtp',
  summary: 'LMTP -> Maildir, mailprocd beside Dovecot',
  usage: `  --messages N   messages in the throughput pass (smtp-source)      default 5000
  --latency N    messages in the latency pass (lmtp-load.mjs)       default 1000
  --warmup N     unmeasured warm-up messages before our runs        default 1000
  --sessions N   concurrent LMTP sessions                           default 8
  --size N       payload bytes per message                          default 4096
  --users N      recipients u001..uNNN@bench.test                   default 100
  --all          also measure mailprocd over TCP (new conn, and kept -d), as Dovecot is
  (--no-peers skips Dovecot; --builtin loads mailprocd with scripts/bench/lmtp-driver.mjs;
   --log-info reports the daemon's delay= distribution)
`,
  options: {
    messages: { type: 'string', default: '5000', min: 1 },
    latency: { type: 'string', default: '1000', min: 0 },
    warmup: { type: 'string', default: '1000', min: 0 },
    sessions: { type: 'string', default: '8', min: 1 },
    size: { type: 'string', default: '4096', min: 1 },
    users: { type: 'string', default: '100', min: 1 },
    all: { type: 'boolean', default: false },
  },
  run: runLmtpPart,
};
