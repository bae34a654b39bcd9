// mbox delivery against real files: the From_ line and quoting, appends,
// dotlocking between two processes, stale and held locks, refused targets
// (symlink, FIFO, hard link, directory, replaced while locking), and a disk
// that fills mid-write (tmpfs, needs root) leaving the mbox exactly as it was.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants, readdirSync, readlinkSync, realpathSync } from 'node:fs';
import { link, mkdir, mkdtemp, open, readFile, readdir, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { deliverMbox, type MessageCopy } from '../../src/deliver/index.js';
import { fromLine } from '../../src/deliver/mbox.js';
import { mountTmpfs } from '../helpers/components.js';
import { TEST_RECIPIENT } from '../helpers/mailbox.js';
import { waitFor } from '../helpers/wait.js';

const HEADER = 'Return-Path: <a@example.org>\nDelivered-To: b@example.net\n';
const ARRIVAL = new Date('2026-11-21T09:30:25Z');
const FROM_LINE = 'From a@example.org Sat Nov 21 09:30:25 2026\n';

function message(body: string | Buffer, sender = 'a@example.org'): MessageCopy {
  return { header: Buffer.from(HEADER), body: typeof body === 'string' ? Buffer.from(body) : body, sender, arrival: ARRIVAL, recipient: TEST_RECIPIENT };
}

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mailprocd-mbox-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');

const fromLines: { name: string; sender: string; date: string; want: string }[] = [
  { name: 'a sender and a two-digit day', sender: 'a@example.org', date: '2026-11-21T09:30:25Z', want: FROM_LINE },
  { name: 'the null sender as MAILER-DAEMON, a one-digit day padded like asctime', sender: '', date: '2026-11-01T00:00:09Z', want: 'From MAILER-DAEMON Sun Nov  1 00:00:09 2026\n' },
  { name: 'whitespace in a quoted local part replaced', sender: '"a b"@example.org', date: '2027-01-31T23:59:59Z', want: 'From "a_b"@example.org Sun Jan 31 23:59:59 2027\n' },
];
for (const c of fromLines) {
  test(`From_ line: ${c.name}`, () => {
    assert.equal(fromLine(c.sender, new Date(c.date)), c.want);
  });
}

// mboxo, as Postfix: only lines beginning "From " get a '>'.
const stored: { name: string; body: string; want: string }[] = [
  { name: 'a plain message gets one empty line after it', body: 'Subject: x\n\nhello\n', want: 'Subject: x\n\nhello\n\n' },
  { name: '"From " lines are quoted, ">From " and "From" without a space are not', body: 'Subject: x\n\nFrom here\n>From there\nFrom\nFromage\n From indented\n', want: 'Subject: x\n\n>From here\n>From there\nFrom\nFromage\n From indented\n\n' },
  { name: 'a "From " at the very start of the body is quoted', body: 'From the start\nand on\n', want: '>From the start\nand on\n\n' },
  { name: 'a missing final LF is added', body: 'Subject: x\n\nno newline', want: 'Subject: x\n\nno newline\n\n' },
  { name: 'a last line "From x" without LF is quoted and ended', body: 'a\nFrom b\nFrom c', want: 'a\n>From b\n>From c\n\n' },
  { name: 'a header-only message (empty body)', body: '', want: '\n' },
  { name: 'NUL bytes and 8-bit data pass through', body: 'A\u0000B\n\u00e9\n', want: 'A\u0000B\n\u00e9\n\n' },
];
for (const c of stored) {
  test(`mbox: ${c.name}`, async (t) => {
    const mbox = join(await tempDir(t), 'mbox');
    const got = await deliverMbox(message(Buffer.from(c.body, 'latin1')), { path: mbox });
    assert.equal(got.status.code, '2.0.0', got.status.text);
    assert.equal(got.path, mbox);
    assert.equal((await readFile(mbox)).toString('latin1'), FROM_LINE + HEADER + c.want);
  });
}

test('a new mbox is created 0600, later messages are appended, and the lock is gone', async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'mbox');
  for (const b of ['one\n', 'two\n']) assert.equal((await deliverMbox(message(b), { path: mbox })).status.code, '2.0.0');
  assert.equal((await stat(mbox)).mode & 0o777, 0o600);
  assert.equal((await readFile(mbox, 'latin1')), `${FROM_LINE}${HEADER}one\n\n${FROM_LINE}${HEADER}two\n\n`);
  assert.deepEqual(await readdir(dir), ['mbox']);
});

test('a missing directory is created 0700 (like a fresh ~/mail) and the message appended', async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'none', 'deeper', 'mbox');
  const got = await deliverMbox(message('x\n'), { path: mbox });
  assert.equal(got.status.code, '2.0.0', got.status.text);
  assert.equal((await stat(join(dir, 'none'))).mode & 0o777, 0o700);
  assert.equal(await readFile(mbox, 'latin1'), `${FROM_LINE}${HEADER}x\n\n`);
});

test('an fcntl lock held by another program defers with 4.2.0 and writes nothing', { timeout: 30_000 }, async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'mbox');
  await writeFile(mbox, 'before\n');
  const before = await sha256(mbox);
  // python3 (on every machine that builds native addons) holds a POSIX record lock, as Dovecot or mutt would.
  const holder = spawn('python3', ['-c', `import fcntl,sys,time\nf=open(${JSON.stringify(mbox)},'a')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(30)`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => holder.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    holder.stdout.once('data', () => resolve());
    holder.once('exit', (code) => reject(new Error(`lock holder exited ${code}`)));
  });
  const got = await deliverMbox(message('x\n'), { path: mbox, lockAttempts: 3, lockDelayMs: 20 });
  assert.equal(got.status.code, '4.2.0', got.status.text);
  assert.match(got.status.text, /locked by another program/);
  assert.equal(await sha256(mbox), before);
  assert.deepEqual((await readdir(dir)).sort(), ['mbox'], 'the dotlock was removed');
  holder.kill('SIGKILL');
  await new Promise((r) => holder.once('exit', r));
  const again = await deliverMbox(message('x\n'), { path: mbox });
  assert.equal(again.status.code, '2.0.0', 'delivered once the lock is gone');
});

test('two processes delivering 50 messages each at once interleave nothing', { timeout: 60_000 }, async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'mbox');
  const script = join(dir, 'deliver.mjs');
  const index = new URL('../../src/deliver/index.js', import.meta.url).href;
  await writeFile(script, `
const { deliverMbox } = await import(${JSON.stringify(index)});
const [mbox, tag] = process.argv.slice(2);
const header = Buffer.from(${JSON.stringify(HEADER)});
const results = await Promise.all(Array.from({ length: 50 }, (_, i) => deliverMbox({
  header, sender: 'a@example.org', arrival: new Date(${ARRIVAL.getTime()}),
  body: Buffer.from('Subject: ' + tag + i + '\\n\\nFrom me\\n' + 'x'.repeat(5000 * (i % 7)) + '\\nend ' + tag + i),
}, { path: mbox, lockAttempts: 100000, lockDelayMs: 1 })));
process.stdout.write(JSON.stringify(results.map((r) => r.status.code)));
`);
  const run = promisify(execFile);
  const outs = await Promise.all(['p', 'q'].map((tag) => run(process.execPath, [script, mbox, tag])));
  for (const { stdout } of outs) assert.deepEqual(JSON.parse(stdout), Array(50).fill('2.0.0'));
  const content = await readFile(mbox, 'latin1');
  assert.ok(content.startsWith('From '));
  const parts = content.slice('From '.length).split('\nFrom ');
  assert.equal(parts.length, 100);
  const want = new Set<string>();
  for (const tag of ['p', 'q']) {
    for (let i = 0; i < 50; i++) {
      want.add(`${FROM_LINE.slice(5)}${HEADER}Subject: ${tag}${i}\n\n>From me\n${'x'.repeat(5000 * (i % 7))}\nend ${tag}${i}\n`);
    }
  }
  assert.deepEqual(new Set(parts.map((p, i) => (i < parts.length - 1 ? p : p.slice(0, -1)))), want);
  assert.deepEqual(await readdir(dir), ['deliver.mjs', 'mbox']);
});

test('a stale dotlock is removed and the delivery goes ahead', async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'mbox');
  await writeFile(join(dir, 'mbox.lock'), '');
  const old = new Date(Date.now() - 600_000);
  await utimes(join(dir, 'mbox.lock'), old, old);
  const got = await deliverMbox(message('x\n'), { path: mbox, lockDelayMs: 5 });
  assert.equal(got.status.code, '2.0.0', got.status.text);
  assert.deepEqual(await readdir(dir), ['mbox']);
});

test('a fresh dotlock held by someone else gives 4.2.0 after the attempts and is left alone', async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'mbox');
  await writeFile(mbox, 'From old\n\n');
  const before = await sha256(mbox);
  await writeFile(join(dir, 'mbox.lock'), '');
  const started = Date.now();
  const got = await deliverMbox(message('x\n'), { path: mbox, lockAttempts: 4, lockDelayMs: 20 });
  assert.ok(Date.now() - started >= 60, 'waited between the attempts');
  assert.equal(got.status.code, '4.2.0', got.status.text);
  assert.match(got.status.text, /is locked/);
  assert.equal(await sha256(mbox), before);
  assert.deepEqual(await readdir(dir), ['mbox', 'mbox.lock']);
});

/** How many of this process's descriptors are open on `path`. */
function descriptorsOf(path: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false; // closed since the listing
    }
  }).length;
}

test('a mailbox replaced while we waited for the lock is not written (4.2.0)', async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'mbox');
  await writeFile(mbox, 'original\n');
  const original = await open(mbox, 'r'); // keeps the replaced file readable
  t.after(() => original.close());
  await writeFile(join(dir, 'mbox.lock'), '');
  // Replaced once the delivery has certainly opened the mailbox (a second
  // descriptor of it in this process, beside `original`), not after a pause
  // that a loaded machine may outlast; and with 30 s of lock attempts to spare.
  const delivery = deliverMbox(message('x\n'), { path: mbox, lockAttempts: 3000, lockDelayMs: 10 });
  await waitFor('the delivery to open the mailbox', () => (descriptorsOf(realpathSync(mbox)) >= 2 ? true : undefined));
  await writeFile(join(dir, 'mbox.new'), 'replacement\n');
  await rename(join(dir, 'mbox.new'), mbox);
  await rm(join(dir, 'mbox.lock'));
  const got = await delivery;
  assert.equal(got.status.code, '4.2.0', got.status.text);
  assert.match(got.status.text, /changed unexpectedly/);
  assert.equal((await original.readFile()).toString(), 'original\n');
  assert.equal(await readFile(mbox, 'latin1'), 'replacement\n');
});

const refusals: { name: string; make: (dir: string, mbox: string) => Promise<void> }[] = [
  { name: 'a symlink to another file', make: async (dir, mbox) => { await writeFile(join(dir, 'victim'), 'v\n'); await symlink(join(dir, 'victim'), mbox); } },
  { name: 'a dangling symlink', make: async (dir, mbox) => { await symlink(join(dir, 'victim'), mbox); } },
  { name: 'a file with a second hard link', make: async (dir, mbox) => { await writeFile(join(dir, 'victim'), 'v\n'); await link(join(dir, 'victim'), mbox); } },
  { name: 'a FIFO without a reader', make: async (_dir, mbox) => { execFileSync('mkfifo', [mbox]); } },
  { name: 'a directory', make: async (_dir, mbox) => { await mkdir(mbox); } },
];
for (const c of refusals) {
  test(`a mailbox that is ${c.name} is refused (5.2.0) with nothing written`, { timeout: 10_000 }, async (t) => {
    const dir = await tempDir(t);
    const mbox = join(dir, 'mbox');
    await c.make(dir, mbox);
    const listing = (await readdir(dir)).sort();
    const victim = await readFile(join(dir, 'victim'), 'latin1').catch(() => undefined);
    const got = await deliverMbox(message('x\n'), { path: mbox });
    assert.equal(got.status.code, '5.2.0', got.status.text);
    assert.deepEqual((await readdir(dir)).sort(), listing);
    assert.equal(await readFile(join(dir, 'victim'), 'latin1').catch(() => undefined), victim);
  });
}

test('a FIFO with a reader is refused without a hang and receives nothing', { timeout: 10_000 }, async (t) => {
  const dir = await tempDir(t);
  const mbox = join(dir, 'mbox');
  execFileSync('mkfifo', [mbox]);
  const reader = await open(mbox, constants.O_RDONLY | constants.O_NONBLOCK);
  t.after(() => reader.close());
  const got = await deliverMbox(message('x\n'), { path: mbox });
  assert.equal(got.status.code, '5.2.0', got.status.text);
  assert.match(got.status.text, /not a regular file/);
  const { bytesRead } = await reader.read(Buffer.alloc(100), 0, 100, null).catch(() => ({ bytesRead: 0 }));
  assert.equal(bytesRead, 0);
});

test('a disk full mid-write gives 4.3.1 and leaves the mbox byte for byte as it was', async (t) => {
  const mnt = await tempDir(t);
  if (!mountTmpfs(t, mnt, '64k')) return;
  try {
    const mbox = join(mnt, 'mbox');
    const first = await deliverMbox(message(`Subject: big\n\n${'z'.repeat(40_000)}\n`), { path: mbox });
    assert.equal(first.status.code, '2.0.0', first.status.text);
    const before = await sha256(mbox);
    const size = (await stat(mbox)).size;
    const got = await deliverMbox(message(`Subject: too big\n\n${'From y\n'.repeat(10_000)}`), { path: mbox });
    assert.equal(got.status.code, '4.3.1', got.status.text);
    assert.match(got.status.text, /^cannot append to mailbox .*: No space left on device/);
    assert.equal((await stat(mbox)).size, size);
    assert.equal(await sha256(mbox), before);
    assert.deepEqual(await readdir(mnt), ['mbox']);
  } finally {
    execFileSync('umount', [mnt]);
  }
});
