// The daemon's log as an administrator meets it: under systemd (stderr is the
// journal: JOURNAL_STREAM names stderr's device:inode) every line carries its
// syslog priority and no time of ours; anywhere else lines are as before;
// log.format: json gives one JSON object per line; log.file is written and
// opened again on SIGUSR1 after logrotate moved it; a worker starts without
// V8's "disabling flag --expose_wasm" notice.
import assert from 'node:assert/strict';
import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTestDir, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { lmtpDeliver } from '../helpers/raw-client.js';
import { waitFor } from '../helpers/wait.js';

const TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;

/** One message to alice, which starts her worker; resolves once the worker said it is ready and the delivery was logged. */
async function deliverOne(d: TestDaemon): Promise<void> {
  assert.match(await lmtpDeliver(d.lmtpPort, 'alice@example.test'), /^250 /);
  await d.waitForLog(/worker for \S+ ready in/);
  // to=<alice@…>, … status=sent in text; "to":"alice@…", … "status":"sent" in JSON.
  await d.waitForLog(/alice@example\.test\W.*\bsent\b/);
}

/** stderr goes to a file; JOURNAL_STREAM names that file, or something else. */
async function startOnFile(journalStream: (file: string) => string): Promise<{ d: TestDaemon; lines: () => string[] }> {
  const dir = makeTestDir();
  const stderr = join(dir, 'stderr');
  writeFileSync(stderr, '');
  const d = await startDaemon({ dir, stderrFile: stderr, env: { JOURNAL_STREAM: journalStream(stderr) } });
  return { d, lines: () => readFileSync(stderr, 'utf8').split('\n').filter((l) => l !== '') };
}

const devIno = (file: string): string => {
  const st = statSync(file, { bigint: true });
  return `${st.dev}:${st.ino}`;
};

test('when stderr is the journal every line starts with a syslog priority and has no timestamp', { timeout: 120_000 }, async () => {
  const { d, lines } = await startOnFile(devIno);
  try {
    await deliverOne(d);
    const got = lines();
    assert.ok(got.length > 3);
    for (const l of got) {
      assert.match(l, /^<[3467]>/, `a priority: ${l}`);
      assert.doesNotMatch(l.slice(3), TIME, `no time of ours: ${l}`);
      assert.doesNotMatch(l, /^<\d>mailprocd\[/, `no name of ours: ${l}`);
    }
    assert.ok(got.some((l) => /^<6>ready /.test(l)), 'ready at info');
    assert.ok(got.some((l) => /^<6>\S+: to=<alice@example\.test>, .*status=sent/.test(l)), 'the delivery line at info');
    assert.ok(got.some((l) => /^<7>debug: started worker for /.test(l)), 'debug lines at debug');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('when JOURNAL_STREAM names another file lines keep their timestamp and get no priority', { timeout: 120_000 }, async () => {
  const { d, lines } = await startOnFile((stderr) => devIno(join(stderr, '..')));
  try {
    await deliverOne(d);
    const got = lines();
    assert.ok(got.length > 3);
    for (const l of got) {
      assert.doesNotMatch(l, /^<\d>/, `no priority: ${l}`);
      assert.match(l, TIME, `a time: ${l}`);
    }
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('with log.format json every line the daemon writes while running is a JSON object', { timeout: 120_000 }, async () => {
  const d = await startDaemon({ config: { log: { format: 'json' } } });
  try {
    await deliverOne(d);
    assert.ok(d.logs.length > 3);
    const parsed = d.logs.map((l) => {
      assert.doesNotThrow(() => JSON.parse(l), `JSON: ${l}`);
      return JSON.parse(l) as Record<string, unknown>;
    });
    const sent = parsed.find((o) => o.status === 'sent');
    assert.equal(sent?.to, 'alice@example.test');
    assert.equal(sent?.level, 'info');
    assert.equal(typeof sent?.time, 'string');
    const started = parsed.find((o) => typeof o.message === 'string' && o.message.startsWith('started worker'));
    assert.equal(started?.pid, d.child.pid, 'pid is the daemon\'s');
    assert.equal(typeof started?.field_pid, 'number', 'the worker\'s pid is kept beside it');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('log.file gets the lines, created 0640, and a new file after a rename and SIGUSR1', { timeout: 120_000 }, async () => {
  const dir = makeTestDir();
  const file = join(dir, 'mailprocd.log');
  const d = await startDaemon({ dir, logFile: file, config: { log: { file } } });
  try {
    assert.equal(statSync(file).mode & 0o777, 0o640);
    assert.match(readFileSync(file, 'utf8'), / ready lmtp=/);
    // logrotate: move the file away, then the postrotate signal.
    renameSync(file, `${file}.1`);
    d.child.kill('SIGUSR1');
    // The daemon opens the file again at once; a delivery then writes its line there.
    await waitFor('the log file opened again', () => { try { return statSync(file); } catch { return undefined; } });
    await deliverOne(d);
    const fresh = readFileSync(file, 'utf8');
    assert.match(fresh, /to=<alice@example\.test>.*status=sent/);
    assert.doesNotMatch(fresh, / ready lmtp=/, 'only what came after the reopen');
    assert.doesNotMatch(readFileSync(`${file}.1`, 'utf8'), /alice@example\.test/, 'nothing more in the moved file');
    assert.equal(d.child.exitCode, null, 'SIGUSR1 did not end the daemon');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('a worker starts without V8 notice "disabling flag --expose_wasm"', { timeout: 120_000 }, async () => {
  const d = await startDaemon();
  try {
    await deliverOne(d);
    assert.deepEqual(d.logs.filter((l) => /disabling flag|conflicting flags/.test(l)), []);
  } finally {
    await d.stop();
    d.cleanup();
  }
});
