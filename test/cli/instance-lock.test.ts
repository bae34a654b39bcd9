// One mailprocd per state directory: a second one started on the same state
// exits non-zero at once with one line naming the state directory and the pid
// of the daemon that holds it — before it compiles a table or touches a
// socket — and the first daemon keeps answering on every socket it had,
// its unix LMTP socket included (which the second would otherwise have
// unlinked and bound again).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse, stringify } from 'yaml';
import { DAEMON, makeTestDir, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { RawClient } from '../helpers/raw-client.js';

interface SecondRun {
  readonly code: number | null;
  readonly output: string[];
  /** The second daemon got as far as "ready" (and was then stopped by the test). */
  readonly started: boolean;
}

/**
 * Runs a second mailprocd with `configFile`; resolves when it exits, or — if it
 * reaches "ready", which is the failure this test looks for — after stopping it.
 */
function runSecond(configFile: string): Promise<SecondRun> {
  const child = spawn(process.execPath, [DAEMON, '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  let started = false;
  let partial = '';
  const onData = (chunk: Buffer): void => {
    partial += chunk.toString('utf8');
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    output.push(...lines);
    if (!started && lines.some((l) => / ready /.test(l))) {
      started = true;
      child.kill('SIGTERM');
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, output, started })));
}

/** LHLO and a known recipient on the socket: the daemon behind it is serving. */
async function answers(target: { path: string } | { port: number }): Promise<string> {
  const c = await RawClient.open(target);
  try {
    const greeting = await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    const rcpt = await c.command('RCPT TO:<alice@example.test>');
    return `${greeting.code} ${rcpt.code}`;
  } finally {
    c.close();
  }
}

function assertRefused(second: SecondRun, first: TestDaemon): void {
  const state = join(first.dir, 'state');
  const all = second.output.join('\n');
  assert.equal(second.started, false, `the second daemon must not start:\n${all}`);
  assert.notEqual(second.code, 0, `exit code non-zero:\n${all}`);
  const naming = second.output.filter((l) => l.includes(state) && new RegExp(`\\bpid ${first.child.pid ?? -1}\\b`).test(l));
  assert.equal(naming.length, 1, `one line names the state directory ${state} and pid ${first.child.pid ?? -1}:\n${all}`);
  assert.ok(!/cannot listen|compiled tables/.test(all), `refused before any listener or table compile:\n${all}`);
}

test('a second mailprocd on the same state directory while a TCP listener is busy: refused naming the pid, the first keeps serving', { timeout: 60_000 }, async () => {
  const first = await startDaemon();
  try {
    // The same configuration, with the ports the first daemon actually bound.
    const c = parse(readFileSync(first.configFile, 'utf8')) as Record<string, Record<string, unknown>>;
    c.lmtp = { ...c.lmtp, listen: [`unix:${first.socket}`, `127.0.0.1:${first.lmtpPort}`] };
    c.smtp = { ...c.smtp, listen: [`127.0.0.1:${first.smtpPort}`] };
    c.policy = { ...c.policy, listen: [`unix:${first.policySocket}`, `127.0.0.1:${first.policyPort}`] };
    c.milter = { ...c.milter, listen: [`unix:${first.milterSocket}`, `127.0.0.1:${first.milterPort}`] };
    const second = join(first.dir, 'second.yaml');
    writeFileSync(second, stringify(c));
    const socketBefore = statSync(first.socket).ino;

    assertRefused(await runSecond(second), first);
    assert.equal(statSync(first.socket).ino, socketBefore, 'the unix LMTP socket is the first daemon\'s, untouched');
    assert.equal(await answers({ path: first.socket }), '220 250', 'the first daemon answers on its unix socket');
    assert.equal(await answers({ port: first.lmtpPort }), '220 250', 'and on its TCP port');
    assert.equal(first.child.exitCode, null, 'the first daemon is still running');
  } finally {
    await first.stop();
    first.cleanup();
  }
});

test('a second mailprocd on the same state directory with only unix listeners: refused, and the first daemon still answers on its unix LMTP socket', { timeout: 60_000 }, async () => {
  const dir = makeTestDir();
  const d = await startDaemon({
    dir,
    config: {
      lmtp: { listen: [`unix:${join(dir, 'lmtp.sock')}`] },
      smtp: { listen: [] },
      policy: { listen: [`unix:${join(dir, 'policy.sock')}`] },
      milter: { listen: [`unix:${join(dir, 'milter.sock')}`] },
    },
  });
  try {
    const socketBefore = statSync(d.socket).ino;
    assertRefused(await runSecond(d.configFile), d);
    assert.equal(statSync(d.socket).ino, socketBefore, 'the unix LMTP socket was not removed and bound again');
    assert.equal(await answers({ path: d.socket }), '220 250', 'the first daemon answers on its unix LMTP socket');
    assert.equal(d.child.exitCode, null, 'the first daemon is still running');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('after the holder is killed with SIGKILL the next start takes the lock (the kernel released it)', { timeout: 60_000 }, async () => {
  const d = await startDaemon();
  await d.kill();
  const again = await startDaemon({ dir: d.dir });
  try {
    const lock = readFileSync(join(d.dir, 'state', 'mailprocd.lock'), 'utf8');
    assert.equal(lock, `${again.child.pid ?? -1}\n`, 'the lock file names the running daemon');
  } finally {
    await again.stop();
    again.cleanup();
  }
});
