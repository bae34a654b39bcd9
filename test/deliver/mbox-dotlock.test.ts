// The mbox dotlock says who holds it (issue 8 point 9): the lock file we
// create records our pid, this boot's id and our pid namespace, so a lock
// left by one of our deliveries that was killed (a worker SIGKILLed while it
// held the lock) is broken at once instead of after stale_lock_time (500 s).
// A lock whose holder is alive, from another boot or pid namespace, or not in
// our format (another program's) keeps the stale-time rule.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, chown, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { deliverMbox, type MessageCopy } from '../../src/deliver/index.js';
import { requireRoot } from '../helpers/components.js';
import { TEST_RECIPIENT } from '../helpers/mailbox.js';
import { waitFor } from '../helpers/wait.js';

const HEADER = 'Return-Path: <a@example.org>\nDelivered-To: b@example.net\n';
const message = (body: string): MessageCopy => ({ header: Buffer.from(HEADER), body: Buffer.from(body), sender: 'a@example.org', arrival: new Date('2026-11-21T09:30:25Z'), recipient: TEST_RECIPIENT });

const BOOT = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
const PIDNS = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? '';

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mailprocd-dotlock-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A pid that was just in use and is now gone (the process exited and was reaped). */
function deadPid(): number {
  const r = spawnSync('/bin/sh', ['-c', 'echo $$'], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

const OTHER_BOOT = '00000000-0000-4000-8000-000000000000';

const locks: { name: string; content: () => string; broken: boolean }[] = [
  { name: 'ours, this boot, holder gone', content: () => `mailprocd pid=${deadPid()} boot=${BOOT} pidns=${PIDNS}\n`, broken: true },
  { name: 'ours, this boot, holder alive (this test process)', content: () => `mailprocd pid=${process.pid} boot=${BOOT} pidns=${PIDNS}\n`, broken: false },
  { name: 'ours, holder alive (pid 1)', content: () => `mailprocd pid=1 boot=${BOOT} pidns=${PIDNS}\n`, broken: false },
  { name: 'ours, but from another boot', content: () => `mailprocd pid=${deadPid()} boot=${OTHER_BOOT} pidns=${PIDNS}\n`, broken: false },
  { name: 'ours, but from another pid namespace', content: () => `mailprocd pid=${deadPid()} boot=${BOOT} pidns=1\n`, broken: false },
  { name: 'another program\'s: empty (Postfix, mutt)', content: () => '', broken: false },
  { name: 'another program\'s: a bare pid (liblockfile)', content: () => `${deadPid()}\n`, broken: false },
];

for (const c of locks) {
  test(`a fresh dotlock ${c.name}: ${c.broken ? 'broken at once' : 'kept until stale_lock_time'}`, async (t) => {
    const dir = await tempDir(t);
    const mbox = join(dir, 'mbox');
    await writeFile(mbox, '');
    const written = c.content();
    await writeFile(join(dir, 'mbox.lock'), written);
    const got = await deliverMbox(message('x\n'), { path: mbox, lockAttempts: 3, lockDelayMs: 10 });
    if (c.broken) {
      assert.equal(got.status.code, '2.0.0', got.status.text);
      assert.deepEqual(await readdir(dir), ['mbox'], 'no lock left');
    } else {
      assert.equal(got.status.code, '4.2.0', got.status.text);
      assert.equal(await readFile(mbox, 'utf8'), '', 'nothing written');
      assert.equal(await readFile(join(dir, 'mbox.lock'), 'utf8'), written, 'the lock is left alone');
    }
  });
}

test('a delivery killed with SIGKILL while it holds the dotlock leaves a lock naming it, and the next delivery breaks it at once', { timeout: 30_000 }, async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'mbox');
  await writeFile(mbox, '');
  // Another program's fcntl lock keeps the first delivery waiting with our dotlock taken.
  const fcntlHolder = spawn('python3', ['-c', `import fcntl,time\nf=open(${JSON.stringify(mbox)},'a')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(30)`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => fcntlHolder.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    fcntlHolder.stdout.once('data', () => resolve());
    fcntlHolder.once('exit', (code) => reject(new Error(`lock holder exited ${code}`)));
  });
  const index = new URL('../../src/deliver/index.js', import.meta.url).href;
  const worker = spawn(process.execPath, ['--input-type=module', '-e', `
    const { deliverMbox } = await import(${JSON.stringify(index)});
    await deliverMbox({ header: Buffer.from('X: y\\n'), body: Buffer.from('z\\n'), sender: '', arrival: new Date(), recipient: ${JSON.stringify(TEST_RECIPIENT)} },
      { path: ${JSON.stringify(mbox)}, lockAttempts: 1000000, lockDelayMs: 20 });
  `], { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise((r) => worker.once('exit', r));
  t.after(() => worker.kill('SIGKILL'));
  const lock = await waitFor('the dotlock to name its holder', async () => {
    const text = await readFile(join(dir, 'mbox.lock'), 'utf8').catch(() => '');
    return text.includes('pid=') ? text : undefined;
  });
  assert.equal(lock, `mailprocd pid=${worker.pid} boot=${BOOT} pidns=${PIDNS}\n`);
  worker.kill('SIGKILL');
  await exited;
  fcntlHolder.kill('SIGKILL');
  assert.deepEqual((await readdir(dir)).sort(), ['mbox', 'mbox.lock'], 'the killed delivery left its lock');
  // Two attempts 10 ms apart: a lock it could not break would give 4.2.0 (the stale time is 500 s).
  const got = await deliverMbox(message('after\n'), { path: mbox, lockAttempts: 2, lockDelayMs: 10 });
  assert.equal(got.status.code, '2.0.0', got.status.text);
  assert.match(await readFile(mbox, 'utf8'), /after\n/);
  assert.deepEqual(await readdir(dir), ['mbox']);
});

test('a lock of ours whose holder runs as another user (kill says EPERM) is kept', async (t) => {
  if (!requireRoot(t, 'run a delivery as uid 65534')) return;
  const dir = await tempDir(t);
  await chmod(dir, 0o777);
  const mbox = join(dir, 'mbox');
  await writeFile(mbox, '');
  await chown(mbox, 65534, 65534);
  // pid 1 is root's: nobody may not signal it, so kill(1, 0) says EPERM.
  const lock = `mailprocd pid=1 boot=${BOOT} pidns=${PIDNS}\n`;
  await writeFile(join(dir, 'mbox.lock'), lock);
  const index = new URL('../../src/deliver/index.js', import.meta.url).href;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `
    const { deliverMbox } = await import(${JSON.stringify(index)});
    process.setgroups([]); process.setgid(65534); process.setuid(65534);
    const got = await deliverMbox({ header: Buffer.from('X: y\\n'), body: Buffer.from('z\\n'), sender: '', arrival: new Date(), recipient: ${JSON.stringify(TEST_RECIPIENT)} },
      { path: ${JSON.stringify(mbox)}, lockAttempts: 2, lockDelayMs: 10 });
    process.stdout.write(JSON.stringify(got.status));
  `], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { code: string; text: string };
  assert.equal(got.code, '4.2.0', got.text);
  assert.match(got.text, /is locked/);
  assert.equal(await readFile(join(dir, 'mbox.lock'), 'utf8'), lock);
  assert.equal(await readFile(mbox, 'utf8'), '');
});
