// The policy part of `npm run bench` (scripts/bench/main.mjs): the Postfix
// policy endpoint (check_policy_service) with the lists check, side by side
// with policyd-weight and postgrey in the same run; ends with a RESULT
// name=mailprocd-bench-policy line.
//
// Our side: a second mailprocd (its own temp state and tables; LMTP on a unix
// socket only because the daemon wants one listener) with a `policy:` section
// listening on <tmp>/policy/policy.sock and a free 127.0.0.1 port, chain
// [lists] (the default chain), and a lists table from policy-driver.mjs:
// list@bench.test and u001..u066@bench.test closed with --policy-subscribers
// subscribers each (u067..u100 are no lists). A first start compiles the
// tables (not measured); then each measured run gets a fresh daemon (an empty
// answer cache), --policy-conns connections, --policy-requests requests,
// bounded by --policy-seconds. 100 000 requests (about 2 s) by default: the
// driver is a new Node process per run, and over its first ~20 000 requests it
// is still compiling its own code and growing its heap; in a 20 000-request run
// that start-up set the p99 (the null server's too: 1.4-2.0 ms against
// 0.85-1.05 ms over 100 000), so the figure said more about the driver than
// about the server.
//   - before each run, a warm-up of --policy-warmup requests with the other
//     driver (not measured; JIT, LMDB pages; no pair of the run gets cached);
//   - the peers' driver ../shared/peers/policy-load.mjs, unchanged. It only
//     sends its own generic requests (recipients uNNN@bench.test, senders
//     user<t>@sender<t%97>.example), so the table makes those recipients
//     lists: its requests mix subscribers (DUNNO), non-subscribers (REJECT)
//     and non-lists (DUNNO), and the bench checks its action counts against
//     the expected ones. Three runs: TCP and unix socket with --pool equal to
//     the request count (every request a new recipient/sender pair, so no
//     answer could come from an answer cache: the headline figure is TCP,
//     like the peers), and TCP with its default --pool 1000 (pairs repeat;
//     lists keeps no answer cache by default, so this shows that a repeated
//     pair costs what a new one does);
//   - the built-in driver (policy-driver.mjs runPolicyLoad, in this process):
//     the same protocol and attribute block to list@bench.test, a third each
//     subscribers (a quarter of them in mixed case), non-subscribers and
//     non-lists, every reply checked;
//   - a null policy server (policy-driver.mjs --null-server, DUNNO at once)
//     loaded by policy-load.mjs: the driver's ceiling on this machine.
// Then the master's RSS (and peak) after the load, and its log.
// Peer side: ../shared/peers/policy-peers.sh -c <--policy-conns> (policyd-weight
// with a DNS stub answering NXDOMAIN, then SERVFAIL, then none; postgrey with
// new, then known triplets; in its own netns; needs root), RESULT lines parsed.
// The ratio is mailprocd's headline req/s over the fastest peer variant's
// (neither peer does a list check: each does its own job, under the same
// driver), against the issue's target >= 5x, and mailprocd's p99 against
// <= 2 ms. A run that failed, driver errors or a wrong action count fail the
// bench; the ratio and the p99 are reported, never failed on. Without the
// peers dir only the built-in driver runs.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  aborted, abortSignal, canConnect, controlStatus, converse, elapsed, f1, f2, fail, failureCount, foreignCpu, freePort, killTree, launchDaemon,
  mb, memory, note, num, opts, out, printResult, printTable, procStatus, resultLine, ROOT, run, sleep, startChild, stopChild,
  stopDaemon, tmp, which, writeDaemonConfig,
} from './harness.mjs';
import { expectedSharedActions, listsSource, parseActions, runPolicyLoad } from './policy-driver.mjs';

// The part's numbers, read from the options when it starts.
let PR; // --policy-requests
let PC; // --policy-conns
let PW; // --policy-warmup
let PSUB; // --policy-subscribers
let PSECS; // --policy-seconds

const POLICY_USERS = 100; // policy-load.mjs --users default: its recipients are u001..u100@bench.test
const POLICY_LISTS = 66; // u001..u066 are closed lists, u067..u100 no lists
const PEER_VARIANTS = [
  ['pw-dns-nxdomain', 'policyd-weight', 'DNS stub NXDOMAIN'],
  ['pw-dns-servfail', 'policyd-weight', 'DNS stub SERVFAIL'],
  ['pw-dns-timeout', 'policyd-weight', 'no DNS (timeouts)'],
  ['postgrey-new-triplets', 'postgrey', 'new triplets'],
  ['postgrey-known-triplets', 'postgrey', 'known triplets'],
];

/** undefined = nothing answers yet; true = one request got an action= reply; false = it answered wrong. */
const policyAnswers = (target) => converse(target, {
  // END-OF-MESSAGE: the lists plugin has no opinion there and caches nothing.
  send: 'request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nsender=probe@bench.test\nrecipient=probe@bench.test\n\n',
  judge: (buf) => (buf.includes('\n\n') ? /^action=\S/.test(buf) : undefined),
  onError: undefined,
});

/** Writes the policy daemon's config (a fresh free port each time) and starts it. */
async function startPolicyDaemon(dir) {
  const sock = join(dir, 'policy.sock');
  const port = await freePort();
  const cfg = join(dir, 'mailprocd.yaml');
  writeDaemonConfig(cfg, {
    writer: 'scripts/bench/policy.mjs', state: join(dir, 'state'), sources: join(dir, 'db'), mail: join(dir, 'mail'),
    lmtp: [`unix:${join(dir, 'lmtp.sock')}`], // the daemon wants one LMTP or SMTP listener
    policy: [`unix:${sock}`, `127.0.0.1:${port}`],
    chain: ['lists'], // the default chain
  });
  const d = await launchDaemon(cfg, dir, join(dir, 'mailprocd.log'), async () => {
    if (!(await canConnect({ path: sock }))) return undefined;
    return policyAnswers({ host: '127.0.0.1', port });
  }, 'no policy answer within 20 s');
  return { ...d, sock, port, unix: `unix:${sock}`, tcp: `127.0.0.1:${port}` };
}

function logProblems(logPath, from) {
  const lines = readFileSync(logPath, 'utf8').slice(from).split('\n').filter(Boolean);
  return { n: lines.length, bad: lines.filter((l) => /\]: (warn|error): |fatal/.test(l)) };
}

/** One policy-load.mjs run; returns a table row (or undefined when it gave no RESULT). */
async function sharedPolicyRun(peers, { name, target, pool, count, expect }) {
  const args = [peers.policyLoad, '--target', target, '--conns', String(PC), '--requests', String(count),
    '--pool', String(pool), '--max-seconds', String(PSECS), '--name', name];
  const r = await run(process.execPath, args, PSECS + 30);
  const f = resultLine(r.stdout);
  const problems = [];
  if (f === undefined) problems.push(`no RESULT line (exit ${r.code}${r.timedOut ? ', timed out' : ''}): ${r.stderr.trim().split('\n').slice(0, 3).join(' / ')}`);
  else {
    if (f.reqs !== String(count)) problems.push(`${f.reqs} of ${count} requests answered in ${f.secs} s`);
    if (f.errors !== '0') problems.push(`errors=${f.errors} reconnects=${f.reconnects}: ${r.stderr.trim().split('\n')[0] ?? ''}`);
    if (expect !== undefined && f.reqs === String(count) && f.errors === '0') {
      const got = parseActions(f.actions);
      const want = Object.entries(expect).filter(([, n]) => n > 0);
      const same = got.size === want.length && want.every(([k, n]) => got.get(k) === n);
      if (!same) problems.push(`actions=${f.actions}, expected ${want.map(([k, n]) => `${k}:${n}`).join(',')}`);
    }
    if (r.code !== 0 && problems.length === 0) problems.push(`policy-load.mjs exit ${r.code}`);
  }
  if (problems.length > 0) fail(`${name}: ${problems.join('; ')}`);
  if (f === undefined) return undefined;
  return { reqs: `${f.reqs}/${count}`, reqPerS: f.req_per_s, p50: f.p50_ms, p90: f.p90_ms, p99: f.p99_ms, max: f.max_ms, actions: f.actions, secs: f.secs };
}

/** The built-in driver (in this process); returns a table row. */
async function builtinPolicyRun({ name, target }) {
  const r = await runPolicyLoad({ signal: abortSignal, target, conns: PC, count: PR, maxSeconds: PSECS, subscribers: PSUB });
  const problems = [];
  if (r.ok !== PR) problems.push(`${r.ok} of ${PR} requests answered in ${r.secs.toFixed(1)} s`);
  if (r.nerr > 0) problems.push(`errors: ${[...r.errors].map(([e, n]) => `${n}x ${e}`).join('; ')}`);
  if (r.wrong > 0) problems.push(`${r.wrong} wrong answers, e.g. ${r.wrongSample.join(' | ')}`);
  if (problems.length > 0) fail(`${name}: ${problems.join('; ')}`);
  return {
    reqs: `${r.ok}/${PR}`, reqPerS: r.reqPerSec, p50: r.p50, p90: r.p90, p99: r.p99, max: r.max,
    actions: [...r.actions].map(([k, n]) => `${k}:${n}`).join(',') || 'none', secs: r.secs.toFixed(2), distinctPairs: r.distinctPairs,
  };
}

/** Warm-up with the driver the next run does not use, so that no recipient/sender pair of the run is cached. */
async function policyWarmup(peers, d, measuredDriver) {
  if (PW === 0) return;
  const t0 = performance.now();
  if (measuredDriver === 'shared' || peers.policyLoad === undefined) {
    // The built-in mix has no recipient/sender pair in common with policy-load.mjs's; starting
    // at k = PR it shares only subscriber pairs with a built-in run (which repeats those anyway).
    const r = await runPolicyLoad({ signal: abortSignal, target: d.tcp, conns: PC, count: PW, first: PR, maxSeconds: PSECS, subscribers: PSUB });
    if (r.ok !== PW || r.wrong > 0) fail(`policy warm-up (built-in driver): ${r.ok} of ${PW} answered, ${r.wrong} wrong, ${r.nerr} errors`);
  } else {
    const args = [peers.policyLoad, '--target', d.tcp, '--conns', String(PC), '--requests', String(PW), '--pool', String(PW), '--max-seconds', String(PSECS), '--name', 'warmup'];
    const r = await run(process.execPath, args, PSECS + 30);
    const f = resultLine(r.stdout);
    if (f?.reqs !== String(PW) || f?.errors !== '0') fail(`policy warm-up (policy-load.mjs): reqs=${f?.reqs ?? '?'} of ${PW}, errors=${f?.errors ?? '?'}`);
  }
  note(`  warm-up: ${PW} requests in ${((performance.now() - t0) / 1000).toFixed(2)} s (${measuredDriver === 'shared' ? 'built-in driver' : 'policy-load.mjs'}, not measured)`);
}

/** The null policy server from policy-driver.mjs; resolves with { child, port } once it listens. */
async function startNullServer() {
  const port = await freePort();
  const child = startChild(process.execPath, [join(ROOT, 'scripts', 'bench', 'policy-driver.mjs'), '--null-server', `127.0.0.1:${port}`, '--max-seconds', String(PSECS + 60)]);
  let outText = '';
  child.stdout.on('data', (b) => { outText += b; });
  child.stderr.on('data', (b) => { outText += b; });
  const deadline = performance.now() + 10_000;
  while (performance.now() < deadline && child.exitCode === null) {
    if (/^listening /m.test(outText)) return { child, port };
    await sleep(20);
  }
  killTree(child, 'SIGKILL');
  throw new Error(`null policy server did not start: ${outText.trim()}`);
}


async function policyPeersSide(peers) {
  // policyd-weight: 3 runs (60 s, 60 s, 8 s caps) + postgrey 2 runs (60 s caps each) + start/stop.
  const r = await run(peers.policyPeers, ['-c', String(PC)], 420);
  for (const l of r.stderr.trim().split('\n').filter(Boolean).slice(0, 12)) note(`policy-peers: ${l.replace(/^# /, '')}`);
  const rows = {};
  for (const [name, server, label] of PEER_VARIANTS) {
    const f = resultLine(r.stdout, name);
    if (f === undefined) continue;
    rows[name] = {
      server, label, reqs: `${f.reqs}${f.errors !== '0' ? ` (${f.errors} err)` : ''}`, reqPerS: f.req_per_s, p50: f.p50_ms, p90: f.p90_ms, p99: f.p99_ms,
      max: f.max_ms, actions: f.actions, conns: f.conns, mem: f.rss_mb !== undefined ? `${f.rss_mb} MiB/${f.procs}p` : '-',
    };
    if (f.errors !== '0') note(`policy-peers ${name}: errors=${f.errors} (the peer's, reported as measured)`);
  }
  const sum = resultLine(r.stdout, 'policy-peers');
  if (r.timedOut) fail(`policy-peers.sh timed out after ${r.secs.toFixed(0)} s`);
  else if (r.code !== 0) fail(`policy-peers.sh exit ${r.code}; stderr: ${r.stderr.trim().split('\n').slice(-5).join(' / ')}`);
  const missing = PEER_VARIANTS.map(([n]) => n).filter((n) => rows[n] === undefined && !(n === 'pw-dns-timeout'));
  if (missing.length > 0 && !r.timedOut) fail(`policy-peers.sh gave no RESULT for ${missing.join(', ')}`);
  return { rows, sum, secs: r.secs };
}

async function runPolicyPart({ peersDir }) {
  [PR, PC, PW, PSUB, PSECS] = ['policy-requests', 'policy-conns', 'policy-warmup', 'policy-subscribers', 'policy-seconds'].map(num);
  const failuresBefore = failureCount();
  const peers = {};
  const have = (f) => existsSync(join(peersDir, f));
  if (opts.builtin) note('policy: --builtin: mailprocd is loaded by the built-in driver only');
  else if (!have('policy-load.mjs')) note(`policy: ${peersDir}/policy-load.mjs not found: mailprocd is loaded by the built-in driver only`);
  else peers.policyLoad = join(peersDir, 'policy-load.mjs');
  const why = [];
  if (opts['no-peers']) why.push('--no-peers');
  if (!have('policy-peers.sh')) why.push(`${peersDir}/policy-peers.sh not found`);
  if (!have('policy-load.mjs')) why.push(`${peersDir}/policy-load.mjs not found`);
  for (const [cmd, pkg] of [['policyd-weight', 'policyd-weight'], ['postgrey', 'postgrey'], ['unshare', 'util-linux']]) {
    if (which(cmd) === undefined) why.push(`${cmd} not installed (Debian ${pkg}; scripts/install-os-packages.sh)`);
  }
  if (process.getuid?.() !== 0) why.push('not root (policy-peers.sh needs root: unshare -n, the polw and postgrey users)');
  if (why.length === 0) peers.policyPeers = join(peersDir, 'policy-peers.sh');
  else note(`policy peer side skipped: ${why.join('; ')}`);

  const dir = join(tmp, 'policy');
  mkdirSync(join(dir, 'db'), { recursive: true });
  writeFileSync(join(dir, 'db', 'rules'), `# written by scripts/bench/policy.mjs\n@bench.test  maildir:${join(dir, 'mail')}/\${user}/Maildir/\n`);
  for (const t of ['uid', 'gid']) writeFileSync(join(dir, 'db', t), '');
  const table = listsSource({ users: POLICY_USERS, lists: POLICY_LISTS, subscribers: PSUB, subscriberPool: PR });
  writeFileSync(join(dir, 'db', 'lists'), table);
  const expectNew = expectedSharedActions({ requests: PR, pool: PR, users: POLICY_USERS, lists: POLICY_LISTS, subscriberPool: PR });
  const cachedPool = Math.min(1000, PR);
  const expectCached = expectedSharedActions({ requests: PR, pool: cachedPool, users: POLICY_USERS, lists: POLICY_LISTS, subscriberPool: PR });
  note(`policy: ${PR} requests per run, ${PC} connections, ${PW} warm-up requests per daemon; lists table ${(table.length / 1024).toFixed(0)} KiB: ` +
    `list@bench.test + u001..u0${POLICY_LISTS}@bench.test closed, ${Math.max(PSUB, Math.ceil(PR / 200))} subscribers each; temp dir ${dir}`);

  // Each measured run gets a fresh daemon (an empty answer cache; the tables compiled at the
  // first start are reused) and a warm-up over pairs the run does not send.
  const variants = [];
  if (peers.policyLoad) {
    variants.push({ key: 'tcp', label: 'TCP, every pair new', driver: 'shared', listener: 'tcp', pool: PR, expect: expectNew });
    variants.push({ key: 'unix', label: 'unix, every pair new', driver: 'shared', listener: 'unix', pool: PR, expect: expectNew });
    variants.push({ key: 'tcp_cached', label: `TCP, ${cachedPool} pairs repeated`, driver: 'shared', listener: 'tcp', pool: cachedPool, expect: expectCached });
  }
  variants.push({ key: 'builtin', label: 'TCP, list@bench.test mix', driver: 'builtin', listener: 'tcp' });
  const rows = {};
  let headline;
  // A first start compiles the tables (1 MB of lists source); it is not measured, so every
  // measured daemon starts alike, from compiled tables.
  const first = await startPolicyDaemon(dir);
  // The daemon answers on its listeners before it handles SIGTERM (src/cli/mailprocd.ts installs
  // the handler once startDaemon() has returned, after the control socket and the queue start):
  // a SIGTERM right after "ready" would kill it. Wait for the control socket, and a bit more.
  await controlStatus(join(dir, 'state', 'run', 'control.sock')).catch(() => undefined);
  await sleep(500);
  note(`mailprocd (policy) first start, compiling the tables: ready in ${first.startupMs.toFixed(0)} ms, RSS ${mb(procStatus(first.child.pid)?.rssKb ?? 0)}; stopped, not measured`);
  const compileStop = await stopDaemon(first);
  if (compileStop.ms > 5000) note(`  it took ${compileStop.ms.toFixed(0)} ms to stop`);
  let stopSampler = foreignCpu();
  for (const v of variants) {
    if (aborted) break;
    const d = await startPolicyDaemon(dir);
    const rss0 = procStatus(d.child.pid)?.rssKb ?? 0;
    const logFrom = readFileSync(d.logPath, 'utf8').length;
    const name = `mailprocd-policy-${v.key.replace('_', '-')}`;
    note(`${name}: mailprocd pid ${d.child.pid} ready in ${d.startupMs.toFixed(0)} ms (${d.unix}, ${d.tcp}), RSS ${mb(rss0)}`);
    await policyWarmup(peers, d, v.driver);
    const target = v.listener === 'tcp' ? d.tcp : d.unix;
    const row = v.driver === 'shared'
      ? await sharedPolicyRun(peers, { name, target, pool: v.pool, count: PR, expect: v.expect })
      : await builtinPolicyRun({ name, target });
    const alive = d.child.exitCode === null && d.child.signalCode === null;
    if (!alive) fail(`mailprocd died during ${name} (${d.child.exitCode ?? d.child.signalCode})`);
    const mem = memory(d.child.pid);
    const logs = logProblems(d.logPath, logFrom);
    const stop = alive ? await stopDaemon(d) : { ms: 0 };
    if (row !== undefined) {
      rows[v.key] = {
        ...row, label: v.label, driver: v.driver === 'shared' ? 'policy-load.mjs' : 'built-in', startupMs: d.startupMs, stopMs: stop.ms,
        rssKb: mem.master?.rssKb, hwmKb: mem.master?.hwmKb, rss0Kb: rss0, kids: mem.kids, logBad: logs.bad,
      };
      note(`${name}: ${f1(row.reqPerS)} req/s, p50 ${f2(row.p50)} ms, p99 ${f2(row.p99)} ms, actions ${row.actions}` +
        `${row.distinctPairs !== undefined ? `, ${row.distinctPairs} distinct recipient/sender pairs` : ''}; master RSS ${mb(mem.master?.rssKb ?? 0)} (peak ${mb(mem.master?.hwmKb ?? 0)}); stopped in ${stop.ms.toFixed(0)} ms`);
      if (headline === undefined) headline = v.key;
    }
    for (const l of logs.bad.slice(0, 5)) note(`  log: ${l}`);
  }
  // The driver's ceiling: policy-load.mjs against a server that answers DUNNO at once.
  let ceiling;
  if (peers.policyLoad && !aborted) {
    try {
      const ns = await startNullServer();
      ceiling = await sharedPolicyRun(peers, { name: 'null-policy-server', target: `127.0.0.1:${ns.port}`, pool: PR, count: PR });
      await stopChild(ns.child);
      if (ceiling) note(`null policy server (driver ceiling): ${f1(ceiling.reqPerS)} req/s, p50 ${f2(ceiling.p50)} ms, p99 ${f2(ceiling.p99)} ms`);
    } catch (err) {
      fail(err.message);
    }
  }
  const foreignOurs = stopSampler();
  note(`other processes used >= ${foreignOurs.toFixed(0)}% of the CPUs while mailprocd's policy service was measured`);

  let theirs;
  let foreignTheirs;
  if (peers.policyPeers && !aborted) {
    note(`running ${peers.policyPeers} -c ${PC} (policyd-weight and postgrey under unshare -n; ~35 s)`);
    stopSampler = foreignCpu();
    theirs = await policyPeersSide(peers);
    foreignTheirs = stopSampler();
    note(`other processes used >= ${foreignTheirs.toFixed(0)}% of the CPUs while the policy peers were measured (script ${theirs.secs.toFixed(1)} s)`);
  }

  // ---- report --------------------------------------------------------------------------------
  out('');
  out(`Postfix policy delegation (check_policy_service), ${PC} connections, lock-step (one request in flight per connection, as smtpd).`);
  out(`mailprocd: chain [lists], closed lists of ${PSUB} subscribers; ${PR} requests per run, a fresh daemon per run after ${PW} warm-up requests.`);
  out(`"policy-load.mjs" = ../shared/peers/policy-load.mjs (the peers' driver, its own generic requests); "built-in" = scripts/bench/policy-driver.mjs.`);
  out('');
  const head = ['server', 'variant', 'driver', 'reqs', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'actions seen', 'memory'];
  const tbl = [head];
  for (const v of variants) {
    const r = rows[v.key];
    if (r === undefined) continue;
    tbl.push(['mailprocd', r.label, r.driver, r.reqs, f1(r.reqPerS), f2(r.p50), f2(r.p99), f1(r.max), r.actions, r.rssKb !== undefined ? `${(r.rssKb / 1024).toFixed(0)} MiB` : '-']);
  }
  for (const [name] of PEER_VARIANTS) {
    const r = theirs?.rows?.[name];
    if (r === undefined) continue;
    tbl.push([r.server, r.label, 'policy-load.mjs', r.reqs, f1(r.reqPerS), f2(r.p50), f2(r.p99), f1(r.max), r.actions, r.mem]);
  }
  if (ceiling) tbl.push(['null server', 'DUNNO at once (driver ceiling)', 'policy-load.mjs', ceiling.reqs, f1(ceiling.reqPerS), f2(ceiling.p50), f2(ceiling.p99), f1(ceiling.max), ceiling.actions, '-']);
  printTable(tbl, new Set([3, 4, 5, 6, 7, 9]), { trimEnd: true });
  out('mailprocd memory = master RSS right after the run; peers: RSS of all their processes (policy-peers.sh).');
  out('');

  const h = headline !== undefined ? rows[headline] : undefined;
  let faster;
  for (const [name] of PEER_VARIANTS) {
    const r = theirs?.rows?.[name];
    if (r !== undefined && Number(r.reqPerS) > 0 && (faster === undefined || Number(r.reqPerS) > Number(faster.r.reqPerS))) faster = { name, r };
  }
  const peerConns = [...new Set(Object.values(theirs?.rows ?? {}).map((r) => r.conns))];
  if (theirs !== undefined && (peerConns.length !== 1 || peerConns[0] !== String(PC))) out(`note: the peers ran with conns=${peerConns.join('/')}, mailprocd with ${PC}`);
  let ratio;
  if (h !== undefined && faster !== undefined) {
    ratio = Number(h.reqPerS) / Number(faster.r.reqPerS);
    out(`ratio mailprocd/faster peer req/s: ${ratio.toFixed(1)}x  (mailprocd ${h.label} via ${h.driver}: ${f1(h.reqPerS)} req/s; ` +
      `faster peer: ${faster.r.server} ${faster.r.label}: ${f1(faster.r.reqPerS)} req/s)  target >= 5x: ${ratio >= 5 ? 'meets it' : 'BELOW it'}`);
    if (h.driver !== 'policy-load.mjs') out('caution: mailprocd was loaded by the built-in driver, the peers by policy-load.mjs');
    for (const v of variants) {
      const r = rows[v.key];
      if (r !== undefined && v.key !== headline) out(`  ratio for mailprocd ${r.label} (${r.driver}): ${(Number(r.reqPerS) / Number(faster.r.reqPerS)).toFixed(1)}x`);
    }
  } else if (theirs === undefined) out('ratio: - (no peer run)');
  else out('ratio: - (a run gave no figure)');
  if (h !== undefined) {
    out(`p99 mailprocd ${h.label} (${h.driver}): ${f2(h.p99)} ms  target <= 2 ms: ${Number(h.p99) <= 2 ? 'meets it' : 'ABOVE it'}` +
      `; other runs: ${variants.filter((v) => v.key !== headline && rows[v.key]).map((v) => `${rows[v.key].label} ${f2(rows[v.key].p99)} ms`).join(', ') || '-'}`);
  }
  if (ceiling && h !== undefined) out(`driver ceiling (null server): ${f1(ceiling.reqPerS)} req/s; mailprocd's headline run reached ${(100 * Number(h.reqPerS) / Number(ceiling.reqPerS)).toFixed(0)}% of it`);
  if (Math.max(foreignOurs, foreignTheirs ?? 0) > 10) {
    out(`caution: other processes used >= ${foreignOurs.toFixed(0)}% / ${(foreignTheirs ?? 0).toFixed(0)}% of the CPUs during the mailprocd / peer runs; the figures are noisy`);
  }
  if (h !== undefined) {
    out(`mailprocd memory after the policy load (${h.label}): master pid RSS ${mb(h.rssKb ?? 0)} (peak ${mb(h.hwmKb ?? 0)}, ${mb(h.rss0Kb)} when ready)` +
      `${h.kids?.length ? `; ${h.kids.length} child process(es), ${mb(h.kids.reduce((s, k) => s + k.rssKb, 0))}` : '; no child processes'}`);
    out(`mailprocd policy daemon: first start (compiling the tables) ${first.startupMs.toFixed(0)} ms; start from compiled tables ${h.startupMs.toFixed(0)} ms, stop ${h.stopMs.toFixed(0)} ms`);
  }

  const g = (k, f) => (rows[k] !== undefined ? f(rows[k]) : '-');
  const fields = {
    name: 'mailprocd-bench-policy', conns: PC, requests: PR, warmup: PW, subscribers: PSUB,
    headline: headline ?? '-', headline_driver: h ? (h.driver === 'built-in' ? 'builtin' : 'policy-load') : '-',
    req_per_s: f1(h?.reqPerS), p50_ms: f2(h?.p50), p99_ms: f2(h?.p99),
    req_per_s_unix: g('unix', (r) => f1(r.reqPerS)), p99_ms_unix: g('unix', (r) => f2(r.p99)),
    req_per_s_tcp_cached: g('tcp_cached', (r) => f1(r.reqPerS)), p99_ms_tcp_cached: g('tcp_cached', (r) => f2(r.p99)),
    req_per_s_builtin: g('builtin', (r) => f1(r.reqPerS)), p99_ms_builtin: g('builtin', (r) => f2(r.p99)),
    null_req_per_s: f1(ceiling?.reqPerS),
    faster_peer: faster?.name ?? '-', faster_peer_req_per_s: f1(faster?.r.reqPerS), faster_peer_p99_ms: f2(faster?.r.p99),
    ratio: ratio !== undefined ? ratio.toFixed(2) : '-', ratio_target_met: ratio !== undefined ? (ratio >= 5 ? 'yes' : 'no') : '-',
    p99_target_met: h ? (Number(h.p99) <= 2 ? 'yes' : 'no') : '-',
    master_rss_kb: h?.rssKb ?? '-', master_hwm_kb: h?.hwmKb ?? '-',
    foreign_cpu_pct: `${foreignOurs.toFixed(0)}${foreignTheirs !== undefined ? `/${foreignTheirs.toFixed(0)}` : ''}`,
    failures: failureCount() - failuresBefore, secs: elapsed(),
  };
  printResult(fields);
}

// ---- the part --------------------------------------------------------------------------------
export default {
  name: 'policy',
  summary: 'Postfix policy delegation, mailprocd beside policyd-weight and postgrey',
  usage: `  --policy-requests N    requests per measured run                  default 100000
  --policy-conns N       concurrent connections (ours and the peers') default 16
  --policy-warmup N      unmeasured requests before our runs        default 2000
  --policy-subscribers N subscribers of each closed list            default 500
  --policy-seconds S     time limit of each policy run              default 60
  (--no-peers skips policyd-weight and postgrey; --builtin: only the
   built-in policy driver; --log-info applies to the policy daemon too)
`,
  options: {
    'policy-requests': { type: 'string', default: '100000', min: 1 },
    'policy-conns': { type: 'string', default: '16', min: 1 },
    'policy-warmup': { type: 'string', default: '2000', min: 0 },
    'policy-subscribers': { type: 'string', default: '500', min: 1 },
    'policy-seconds': { type: 'string', default: '60', min: 1 },
  },
  run: runPolicyPart,
};
