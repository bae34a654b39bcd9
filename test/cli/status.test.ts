// `mailproc status` and `mailproc queue list` as an administrator reads them:
// delivery delay percentiles from the daemon's metrics (total and each
// delays= stage) beside workers and spam checkers, local times and sizes in
// the text, the same facts in --json for tools. Against a real daemon after
// one delivery (waited for by its log line), and the text from fixed replies.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { formatLocalTime } from '../../src/cli/mailproc/format.js';
import { formatQueueList, formatQueueMessage } from '../../src/cli/mailproc/queue.js';
import { formatStatus } from '../../src/cli/mailproc/status.js';
import { MAILPROC, startDaemon } from '../helpers/daemon.js';
import { lmtpDeliver } from '../helpers/raw-client.js';

const NOW = Date.UTC(2026, 11, 5, 12, 0, 0);

function mailproc(config: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAILPROC, '--config', config, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('after one delivery, status shows its delay percentiles per stage, and --json carries them in seconds', { timeout: 120_000 }, async (t) => {
  const d = await startDaemon();
  t.after(async () => { await d.stop(); d.cleanup(); });
  const before = mailproc(d.configFile, 'status');
  assert.equal(before.status, 0, before.stderr);
  assert.match(before.stdout, /^delivery delay: no delivery attempt since start$/m);

  assert.match(await lmtpDeliver(d.lmtpPort, 'alice@example.test'), /^250 /);
  await d.waitForLog(/to=<alice@example\.test>.*status=sent/);

  const text = mailproc(d.configFile, 'status');
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^delivery delay since start, 1 delivery attempt\(s\)/m);
  assert.match(text.stdout, /^STAGE +P50 +P90 +P99 +WHAT$/m);
  for (const stage of ['total', 'before', 'slot', 'transfer', 'work']) assert.match(text.stdout, new RegExp(`^${stage} +\\d+(ms|\\.\\d+s) +\\S+ +\\S+ +\\S`, 'm'), stage);
  assert.match(text.stdout, /^spam checkers: /m);
  assert.match(text.stdout, /^queue: 0 message\(s\), 0 recipient\(s\) to go$/m);
  assert.match(text.stdout, /^policy state: lmdb \(this node's own store\)$/m);

  const json = mailproc(d.configFile, 'status', '--json');
  assert.equal(json.status, 0, json.stderr);
  const r = JSON.parse(json.stdout) as { delays: { total: { count: number; p50: number; p99: number }; stages: Record<string, { count: number; p50: number }> } };
  assert.equal(r.delays.total.count, 1);
  assert.ok(r.delays.total.p50 >= 0 && r.delays.total.p50 <= r.delays.total.p99);
  for (const stage of ['before', 'slot', 'transfer', 'work']) assert.equal(r.delays.stages[stage]?.count, 1, stage);
  assert.deepEqual((JSON.parse(json.stdout) as { state: unknown }).state, { backend: 'lmdb', engine: 'lmdb', up: true });

  const queue = mailproc(d.configFile, 'queue', 'list');
  assert.equal(queue.status, 0, queue.stderr);
  assert.equal(queue.stdout, 'Mail queue is empty\n');
});

test('status text: uptime with its local start time, stage rows in delivery order, "-" for a stage with nothing measured', () => {
  const text = formatStatus({
    pid: 42, uptime: 90, workers: [], load: [], spam: { enabled: false }, queue: { messages: 0, recipients: 0 },
    delays: {
      total: { count: 3, p50: 0.012, p90: 0.04, p99: 2.5 },
      stages: { before: { count: 3, p50: 0.001, p90: 0.002, p99: 0.003 }, slot: { count: 0 }, transfer: { count: 3, p50: 0, p90: 0, p99: 0 }, work: { count: 3, p50: 0.01, p90: 0.03, p99: 130 } },
    },
  }, NOW);
  assert.ok(text.startsWith(`mailprocd pid 42, up 90s (since ${formatLocalTime(NOW - 90_000)})\n`), text);
  const rows = text.split('\n').filter((l) => /^(total|before|slot|transfer|work) /.test(l)).map((l) => l.split(/ {2,}/).slice(0, 4));
  assert.deepEqual(rows, [
    ['total', '12ms', '40ms', '2.50s'],
    ['before', '1ms', '2ms', '3ms'],
    ['slot', '-', '-', '-'],
    ['transfer', '0ms', '0ms', '0ms'],
    ['work', '10ms', '30ms', '2m'],
  ]);
});

test('queue list text: size in KiB, arrival in local time, the recipients still to go, the next attempt, a total', () => {
  const arrival = NOW - 3_600_000;
  const text = formatQueueList([{
    id: '1A2B3C4D5E', sender: '', arrival, recipients: ['a@x.test', 'B@x.test'], done: ['b@x.test'],
    size: 12_605, attempts: 2, nextAttempt: NOW + 300_000, lastError: '4.4.1 connect to relay: refused',
  }], NOW);
  assert.equal(text, [
    `1A2B3C4D5E             12.3 KiB  ${formatLocalTime(arrival)}  MAILER-DAEMON`,
    '    (4.4.1 connect to relay: refused)',
    '    a@x.test',
    '    attempts 2, next in 5m',
    '',
    '-- 12.3 KiB in 1 message(s)',
    '',
  ].join('\n'));
});

test('queue show text: local times with how long ago and until when, the size both ways, and a sender\'s header bytes never reach the terminal raw', () => {
  const arrival = NOW - 7_200_000;
  const text = formatQueueMessage({
    id: '1A2B3C4D5E', sender: 'evil@x.test', arrival, recipients: ['a@x.test', 'b@x.test'], done: ['a@x.test'],
    size: 2048, attempts: 1, nextAttempt: NOW + 60_000, lastError: '4.2.2 mailbox full',
  }, 'Subject: \x1b[2J\x1b]0;owned\x07 hi\r\nX-Bidi: \u202eevil\r\n\r\n', NOW);
  assert.match(text, new RegExp(`^arrived: +${formatLocalTime(arrival).replaceAll('+', '\\+')} \\(2h ago\\)$`, 'm'));
  assert.match(text, /^attempts: +1, next .* \(in 60s\)$/m);
  assert.match(text, /^size: +2\.0 KiB \(2048 bytes\)$/m);
  assert.match(text, /^ {2}a@x\.test {2}done$/m);
  assert.match(text, /^ {2}b@x\.test {2}to go$/m);
  for (const raw of ['\x1b', '\x07', '\u202e']) assert.ok(!text.includes(raw), `${JSON.stringify(raw)} printed raw`);
  assert.match(text, /Subject: \\x1b\[2J\\x1b\]0;owned\\x07 hi/);
  assert.match(text, /X-Bidi: \\u202eevil/);
});

test('status text: a shared policy state engine, reachable, and in an outage with its start, reason and refused calls', () => {
  const base = { pid: 7, uptime: 60, workers: [], load: [], spam: { enabled: false }, queue: { messages: 0, recipients: 0 } };
  const up = formatStatus({ ...base, state: { backend: 'postgresql', engine: 'postgresql://mailproc:***@db.example/mail', up: true } }, NOW);
  assert.match(up, /^policy state: postgresql postgresql:\/\/mailproc:\*\*\*@db\.example\/mail, reachable$/m);
  const since = NOW - 125_000;
  const down = formatStatus({ ...base, state: { backend: 'redis', engine: 'redis://cache.example:6379', up: false, outage: { since, reason: 'connect ECONNREFUSED', refused: 12 } } }, NOW);
  assert.ok(down.includes(`policy state: redis redis://cache.example:6379, UNREACHABLE for 2m (since ${formatLocalTime(since)}): connect ECONNREFUSED; 12 call(s) answered with failure actions\n`), down);
  assert.doesNotMatch(formatStatus(base, NOW), /policy state/, 'an older daemon that does not say: no line');
  assert.doesNotMatch(up, /user policies/, 'no cache reported (Redis, an older daemon): no line');
});

test('status text: whether a PostgreSQL node keeps user policies in memory, and how many', () => {
  const base = { pid: 7, uptime: 60, workers: [], load: [], spam: { enabled: false }, queue: { messages: 0, recipients: 0 } };
  const state = { backend: 'postgresql', engine: 'postgresql:///mail', up: true };
  const kept = formatStatus({ ...base, state: { ...state, userPolicyCache: { listening: true, entries: 42 } } }, NOW);
  assert.match(kept, /^policy state: postgresql postgresql:\/\/\/mail, reachable\n {2}user policies: kept in memory between changes \(42 address\(es\)\); change notifications heard$/m);
  const asked = formatStatus({ ...base, state: { ...state, userPolicyCache: { listening: false, entries: 0 } } }, NOW);
  assert.match(asked, /^ {2}user policies: asked of the engine for every request \(not listening for changes; see the log\)$/m);
});
