// Pipe delivery against real processes: exit codes and output codes (PI-1),
// the time limit and the process group (PI-2), a command that does not read
// its input (PI-3), and what the command sees — environment, argv, cwd and
// the message bytes (PI-4).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { deliverPipe, type MessageCopy } from '../../src/deliver/index.js';
import { PIPE_PATH } from '../../src/deliver/pipe.js';
import { TEST_RECIPIENT } from '../helpers/mailbox.js';
import { waitFor } from '../helpers/wait.js';

const HEADER = Buffer.from('Return-Path: <a@example.org>\nDelivered-To: b@example.net\n');

function message(body: string | Buffer, over: Partial<MessageCopy> = {}): MessageCopy {
  return {
    header: HEADER, body: typeof body === 'string' ? Buffer.from(body) : body, sender: 'a@example.org',
    arrival: new Date('2026-11-21T09:30:25Z'), recipient: TEST_RECIPIENT, ...over,
  };
}

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mailprocd-pipe-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const sh = (script: string): string[] => ['/bin/sh', '-c', script];
const TIMEOUT = 30_000;

// PI-1: exit codes, signals and output codes.
const matrix: { name: string; argv: string[]; unknownExit?: 'temporary' | 'permanent'; code: string; text?: RegExp }[] = [
  { name: 'exit 0 is delivered', argv: sh('cat >/dev/null; exit 0'), code: '2.0.0', text: /^delivered to command \/bin\/sh$/ },
  { name: 'exit 75 (EX_TEMPFAIL) is temporary', argv: sh('cat >/dev/null; exit 75'), code: '4.3.0', text: /exited with status 75 \(EX_TEMPFAIL/ },
  { name: 'exit 71 (EX_OSERR) is temporary', argv: sh('cat >/dev/null; exit 71'), code: '4.3.0' },
  { name: 'exit 67 (EX_NOUSER) is 5.1.1', argv: sh('cat >/dev/null; exit 67'), code: '5.1.1' },
  { name: 'exit 77 (EX_NOPERM) is 5.7.0', argv: sh('cat >/dev/null; exit 77'), code: '5.7.0' },
  { name: 'exit 78 (EX_CONFIG) is 5.3.5', argv: sh('cat >/dev/null; exit 78'), code: '5.3.5' },
  { name: 'exit 1 is temporary by default', argv: sh('cat >/dev/null; exit 1'), code: '4.3.0', text: /^command \/bin\/sh died with status 1$/ },
  { name: 'exit 1 is 5.3.0 when unknown exits are permanent', argv: sh('cat >/dev/null; exit 1'), unknownExit: 'permanent', code: '5.3.0' },
  { name: 'exit 100 (qmail hard error) is permanent', argv: sh('cat >/dev/null; exit 100'), code: '5.3.0' },
  { name: 'exit 111 (qmail soft error) is temporary', argv: sh('cat >/dev/null; exit 111'), code: '4.3.0' },
  { name: 'exit 99 (qmail success, stop) is delivered', argv: sh('cat >/dev/null; exit 99'), code: '2.0.0', text: /qmail "success, stop"/ },
  { name: 'a command that kills itself with SIGKILL is temporary', argv: sh('cat >/dev/null; kill -KILL $$'), code: '4.3.0', text: /killed by signal 9 \(SIGKILL\)/ },
  { name: 'an enhanced code at the start of the output wins over exit 1', argv: sh('cat >/dev/null; echo "4.2.2 mailbox full"; exit 1'), code: '4.2.2', text: /^command \/bin\/sh died with status 1: mailbox full$/ },
  { name: 'an enhanced code on stderr counts too', argv: sh('cat >/dev/null; echo "5.1.1 no such user here" >&2; exit 75'), code: '5.1.1', text: /no such user here$/ },
  { name: 'a 2.x.x in the output never turns a failure into success', argv: sh('cat >/dev/null; echo "2.0.0 all fine"; exit 1'), code: '4.3.0', text: /: 2\.0\.0 all fine$/ },
  { name: 'the output of a successful command does not change its result', argv: sh('cat >/dev/null; echo "5.1.1 ignored"; exit 0'), code: '2.0.0' },
  { name: 'an enhanced code not at the start is just text', argv: sh('cat >/dev/null; echo "oops 5.1.1 x"; exit 67'), code: '5.1.1', text: /EX_NOUSER: addressee unknown\): oops 5\.1\.1 x$/ },
  { name: 'a malformed code is just text', argv: sh('cat >/dev/null; echo "4.2.2x full"; exit 1'), code: '4.3.0', text: /: 4\.2\.2x full$/ },
  { name: 'output is one printable line of at most 200 characters', argv: sh(`cat >/dev/null; printf 'line one\\n\\tline\\001two\\r\\n\\303\\251'; head -c 5000 /dev/zero | tr '\\0' y; exit 1`), code: '4.3.0', text: /^command \/bin\/sh died with status 1: line one line two \?y{181}\.\.\.$/ },
  { name: 'a command that is not there is temporary (an admin error)', argv: ['/nonexistent/mailprocd-filter'], code: '4.3.0', text: /^cannot run command \/nonexistent\/mailprocd-filter: No such file or directory \[ENOENT\]$/ },
  { name: 'a program not found in PATH is temporary', argv: ['mailprocd-no-such-program'], code: '4.3.0', text: /ENOENT/ },
  { name: 'a command that writes 1 MiB of output is not stopped by it', argv: sh('cat >/dev/null; head -c 1048576 /dev/zero; exit 0'), code: '2.0.0' },
];

for (const c of matrix) {
  test(`PI-1: ${c.name}`, async () => {
    const got = await deliverPipe(message('Subject: x\n\nhello\n'), { argv: c.argv, timeoutMs: TIMEOUT, ...(c.unknownExit ? { unknownExit: c.unknownExit } : {}) });
    assert.equal(got.status.code, c.code, got.status.text);
    if (c.text) assert.match(got.status.text, c.text);
    assert.match(got.status.text, /^[\x20-\x7e]*$/);
  });
}

test('PI-1: a file that is not executable is temporary and names the uid', async (t) => {
  const file = join(await tempDir(t), 'filter');
  await writeFile(file, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
  const got = await deliverPipe(message('x\n'), { argv: [file], timeoutMs: TIMEOUT });
  // Even root may not execute a file without any x bit: EACCES for everybody.
  assert.equal(got.status.code, '4.2.0', got.status.text);
  assert.match(got.status.text, /^cannot run command .*filter: Permission denied \(not writable by uid \d+/);
});

test('an empty argv is a programmer error and throws', async () => {
  await assert.rejects(deliverPipe(message('x\n'), { argv: [], timeoutMs: TIMEOUT }), /empty argv/);
  await assert.rejects(deliverPipe(message('x\n'), { argv: [''], timeoutMs: TIMEOUT }), /empty argv/);
  await assert.rejects(deliverPipe(message('x\n'), { argv: ['/bin/true'], timeoutMs: 0 }), /timeoutMs/);
});

// /proc helpers: live (non-zombie) processes in a process group.
function procStat(pid: number): { state: string; pgid: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: f[0]!, pgid: Number(f[2]) };
  } catch {
    return undefined;
  }
}
const alive = (pid: number): boolean => {
  const s = procStat(pid);
  return s !== undefined && s.state !== 'Z';
};
async function groupMembers(pgid: number): Promise<number[]> {
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).map(Number);
  return pids.filter((p) => {
    const s = procStat(p);
    return s !== undefined && s.state !== 'Z' && s.pgid === pgid;
  });
}

test('PI-2: past the time limit the whole process group is killed, fast, and the result is temporary', async (t) => {
  const dir = await tempDir(t);
  const shPid = join(dir, 'sh.pid');
  const sleepPid = join(dir, 'sleep.pid');
  const started = Date.now();
  // 3 s for sh to start and write both pid files (milliseconds when idle; a
  // 0.5 s limit could kill it first on a loaded machine), against a child
  // that would run an hour; "fast" = within seconds of the limit, not at the
  // end of the grandchild holding stdout.
  const got = await deliverPipe(message('x\n'), {
    argv: sh(`echo $$ > ${shPid}; sleep 3600 & echo $! > ${sleepPid}; wait`), timeoutMs: 3000,
  });
  const elapsed = Date.now() - started;
  assert.equal(got.status.code, '4.3.0', got.status.text);
  assert.equal(got.status.text, 'command /bin/sh timed out after 3 s');
  assert.ok(elapsed < 10_000, `took ${elapsed} ms`);
  const pgid = Number(await readFile(shPid, 'utf8'));
  const grandchild = Number(await readFile(sleepPid, 'utf8'));
  assert.ok(pgid > 0 && grandchild > 0);
  // SIGKILL is delivered at once, but reaping by init may lag a moment.
  await waitFor('the group to be gone', async () => (!alive(grandchild) && (await groupMembers(pgid)).length === 0 ? true : undefined)).catch(() => undefined);
  assert.equal(alive(grandchild), false, `grandchild sleep ${grandchild} still runs`);
  assert.deepEqual(await groupMembers(pgid), []);
});

test('PI-2: a background process left holding stdout does not hold up the result', async (t) => {
  const dir = await tempDir(t);
  const shPid = join(dir, 'sh.pid');
  t.after(async () => {
    const pgid = Number(await readFile(shPid, 'utf8').catch(() => '0'));
    if (pgid > 0) try { process.kill(-pgid, 'SIGKILL'); } catch { /* gone */ }
  });
  const started = Date.now();
  const got = await deliverPipe(message('x\n'), { argv: sh(`echo $$ > ${shPid}; cat >/dev/null; sleep 30 & exit 0`), timeoutMs: 20_000 });
  assert.equal(got.status.code, '2.0.0', got.status.text);
  assert.ok(Date.now() - started < 5000);
});

test('PI-3: a command that exits 0 without reading a 1 MiB message is delivered, with a note', async () => {
  const got = await deliverPipe(message(Buffer.alloc(1 << 20, 'abcdefghij\n')), { argv: ['true'], timeoutMs: TIMEOUT });
  assert.equal(got.status.code, '2.0.0');
  assert.equal(got.status.text, 'delivered to command true (it did not read the whole message)');
});

test('PI-3: a command that reads everything gets no note', async () => {
  const got = await deliverPipe(message(Buffer.alloc(1 << 20, 'abcdefghij\n')), { argv: ['cat'], timeoutMs: TIMEOUT });
  assert.equal(got.status.code, '2.0.0');
  assert.equal(got.status.text, 'delivered to command cat');
});

// PI-4: a small node program records what it was given.
const RECORDER = `
const fs = require('node:fs');
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  fs.writeFileSync(process.argv[2], JSON.stringify({
    env: process.env, argv: process.argv.slice(3), cwd: process.cwd(),
    stdin: Buffer.concat(chunks).toString('base64'), uid: process.getuid(), gid: process.getgid(),
  }));
});
`;
interface Record_ { env: Record<string, string>; argv: string[]; cwd: string; stdin: string; uid: number; gid: number }

async function record(t: TestContext, copy: MessageCopy, args: string[], home?: string): Promise<Record_> {
  const dir = await tempDir(t);
  const script = join(dir, 'record.cjs');
  const out = join(dir, 'out.json');
  await writeFile(script, RECORDER);
  const got = await deliverPipe(copy, { argv: [process.execPath, script, out, ...args], timeoutMs: TIMEOUT, ...(home !== undefined ? { home } : {}) });
  assert.equal(got.status.code, '2.0.0', got.status.text);
  return JSON.parse(await readFile(out, 'utf8')) as Record_;
}

function withEnv(t: TestContext, vars: Record<string, string | undefined>): void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (v: Record<string, string | undefined>): void => {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
  };
  apply(vars);
  t.after(() => apply(saved));
}

const login = (): string => process.env.USER ?? process.env.LOGNAME ?? userInfo().username;

test('PI-4: the environment holds only the documented variables, with the right values', async (t) => {
  const home = await tempDir(t);
  withEnv(t, { TZ: 'Europe/Berlin', MAILPROCD_TEST_SECRET: 'must not leak', NODE_OPTIONS: undefined });
  const recipient = { address: 'bob+lists@example.net', local: 'bob+lists', user: 'bob', extension: 'lists', domain: 'example.net' };
  const got = await record(t, message('x\n', { recipient, sender: 'alice@example.org' }), [], home);
  assert.deepEqual(got.env, {
    HOME: home, USER: login(), LOGNAME: login(), SHELL: '/bin/sh', PATH: PIPE_PATH,
    SENDER: 'alice@example.org', RECIPIENT: 'bob+lists@example.net', LOCAL: 'bob+lists',
    EXTENSION: 'lists', DOMAIN: 'example.net', TZ: 'Europe/Berlin',
  });
  assert.equal(got.cwd, home);
  assert.equal(got.uid, process.getuid?.());
  assert.equal(got.gid, process.getgid?.());
});

test('PI-4: the null sender is an empty SENDER, no extension means no EXTENSION, no TZ is passed when unset', async (t) => {
  withEnv(t, { TZ: undefined });
  const got = await record(t, message('x\n', { sender: '' }), [], '/nonexistent-mailprocd-home');
  assert.equal(got.env.SENDER, '');
  assert.equal(got.env.RECIPIENT, TEST_RECIPIENT.address);
  assert.equal(got.env.LOCAL, 'b');
  assert.equal(got.env.DOMAIN, 'example.net');
  assert.equal('EXTENSION' in got.env, false);
  assert.equal('TZ' in got.env, false);
  assert.equal(got.env.HOME, '/nonexistent-mailprocd-home');
  assert.equal(got.cwd, '/', 'a missing HOME is not the working directory');
});

test('PI-4: arguments arrive one by one, never through a shell', async (t) => {
  const args = ['; rm -rf /', 'a b', '$HOME', '*', '`id`', '"quoted"', '', 'x\ny'];
  const got = await record(t, message('x\n'), args);
  assert.deepEqual(got.argv, args);
});

const bodies: { name: string; body: Buffer }[] = [
  { name: 'a plain message', body: Buffer.from('Subject: hi\n\nhello\n') },
  { name: 'NUL bytes and 8-bit data', body: Buffer.from([0x41, 0x00, 0x0a, 0xff, 0x00, 0xe9, 0x0a]) },
  { name: 'a body without a final LF', body: Buffer.from('Subject: x\n\nno newline') },
  { name: 'an empty body', body: Buffer.alloc(0) },
  { name: 'a 3 MiB body', body: Buffer.alloc(3 << 20, 'From me\n.\n') },
];
for (const c of bodies) {
  test(`PI-4: the command reads exactly header + body (${c.name})`, async (t) => {
    const got = await record(t, message(c.body), []);
    assert.ok(Buffer.from(got.stdin, 'base64').equals(Buffer.concat([HEADER, c.body])));
  });
}

test('the dispatcher runs a pipe destination with the default limit when LeafOptions has no pipe keys', async () => {
  const { executeDestination } = await import('../../src/deliver/execute.js');
  const leaf = { hostname: 'mx.example', fsync: false, mboxLockAttempts: 1, mboxLockDelayMs: 1, mboxStaleLockMs: 1 };
  const done = await executeDestination(message('x\n'), { kind: 'pipe', argv: sh('cat >/dev/null; exit 1') }, leaf);
  assert.equal(done.status.code, '4.3.0', done.status.text);
  const bounced = await executeDestination(message('x\n'), { kind: 'pipe', argv: sh('cat >/dev/null; exit 1') }, { ...leaf, pipeUnknownExit: 'permanent' });
  assert.equal(bounced.status.code, '5.3.0', bounced.status.text);
  const late = await executeDestination(message('x\n'), { kind: 'pipe', argv: ['sleep', '5'] }, { ...leaf, pipeTimeoutMs: 200 });
  assert.equal(late.status.text, 'command sleep timed out after 0.2 s');
});

test('PI-4: a bare command name is looked up in the command PATH, not the worker\'s', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'mailprocd-test-filter'), '#!/bin/sh\ncat >/dev/null\n', { mode: 0o755 });
  withEnv(t, { PATH: `${dir}:${process.env.PATH ?? ''}` });
  const bare = await deliverPipe(message('x\n'), { argv: ['mailprocd-test-filter'], timeoutMs: TIMEOUT });
  assert.equal(bare.status.code, '4.3.0', bare.status.text);
  assert.match(bare.status.text, /ENOENT/);
  const full = await deliverPipe(message('x\n'), { argv: [join(dir, 'mailprocd-test-filter')], timeoutMs: TIMEOUT });
  assert.equal(full.status.code, '2.0.0', full.status.text);
});
