// "A 250 means the bytes are on stable storage" (reliability.md §0.1), seen
// from the kernel: the running daemon is traced with strace (-f: the worker it
// spawns too; -yy: every descriptor with its path or socket) while a client hands over
// one message, and the order of the system calls is checked:
//   LMTP → Maildir  fsync(tmp/NAME), link(tmp/NAME, new/NAME), fsync(new/),
//                   then the 250 is written to the client;
//   LMTP → mbox     (a new mailbox) fsync(mbox), fsync(its directory), then 250;
//   SMTP → spool    fsync(incoming/ID), rename into active/, fsync(active/),
//                   then the 250.
// Needs strace (Debian strace) and ptrace rights over our own child process.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { requireProgram } from '../helpers/components.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { RawClient } from '../helpers/raw-client.js';
import { childPids } from '../helpers/users.js';

/** One completed system call: name, its arguments as strace printed them, and the result. */
interface Call {
  readonly tid: number;
  readonly name: string;
  readonly args: string;
  readonly result: string;
}

const CALLS = 'openat,fsync,fdatasync,link,linkat,rename,renameat,renameat2,write,writev,sendmsg,sendto';

/**
 * Parses `strace -f` output into calls in the order they completed. A call
 * split by another thread ("<unfinished ...>" … "<... NAME resumed>") counts
 * where it completed; a write counts where it started, so "written after X"
 * means it began after X had returned.
 */
function parseTrace(text: string): Call[] {
  const calls: Call[] = [];
  const pending = new Map<number, { name: string; args: string; at: number }>();
  for (const line of text.split('\n')) {
    const m = /^(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const tid = Number(m[1]);
    const rest = m[2] ?? '';
    const unfinished = /^(\w+)\((.*) <unfinished \.\.\.>$/.exec(rest);
    if (unfinished) {
      const name = unfinished[1] ?? '';
      pending.set(tid, { name, args: unfinished[2] ?? '', at: calls.length });
      // A write is placed where it started: reserve its slot now.
      if (name.startsWith('write') || name.startsWith('send')) calls.push({ tid, name, args: unfinished[2] ?? '', result: '?' });
      continue;
    }
    const resumed = /^<\.\.\. (\w+) resumed>(.*)\)\s+= (.*)$/.exec(rest);
    if (resumed) {
      const p = pending.get(tid);
      pending.delete(tid);
      if (p === undefined) continue;
      if (p.name.startsWith('write') || p.name.startsWith('send')) continue;
      calls.push({ tid, name: p.name, args: p.args + (resumed[2] ?? ''), result: resumed[3] ?? '' });
      continue;
    }
    const whole = /^(\w+)\((.*)\)\s+= (.*)$/.exec(rest);
    if (whole) calls.push({ tid, name: whole[1] ?? '', args: whole[2] ?? '', result: whole[3] ?? '' });
  }
  return calls;
}

class Tracer {
  private constructor(
    private readonly proc: ChildProcess,
    private readonly out: string,
  ) {}

  /**
   * Attaches to the daemon and the workers it has already started, each with
   * all its threads, and (-f) to what they spawn from now on.
   */
  static async attach(strace: string, pid: number, out: string): Promise<Tracer> {
    const pids = [pid, ...childPids(pid)];
    const proc = spawn(strace, ['-f', '-yy', '-s', '64', '-e', `trace=${CALLS}`, '-o', out, ...pids.flatMap((p) => ['-p', String(p)])], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`strace did not attach to ${pids.join(', ')}: ${err}`)), 10_000);
      proc.stderr?.on('data', (d: Buffer) => {
        err += d.toString();
        if (pids.every((p) => new RegExp(`Process ${p} attached`).test(err))) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`strace exited (${code}): ${err}`));
      });
    });
    return new Tracer(proc, out);
  }

  /**
   * Waits until strace has written a completed call matching `seen` to its
   * file. The client has its reply as soon as the daemon's write is in the
   * kernel, which can be before strace, stopping that write on its way out,
   * has printed it; detaching then could lose the line. Gives up after
   * `ms` (the assertion on the calls then says what is missing).
   */
  async until(seen: (c: Call) => boolean, ms = 30_000): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (parseTrace(readFileSync(this.out, 'utf8')).some(seen)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Detaches (SIGINT) and returns the calls seen. */
  async stop(): Promise<Call[]> {
    if (this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGINT');
      await exited;
    }
    return parseTrace(readFileSync(this.out, 'utf8'));
  }
}

let d: TestDaemon | undefined;
let strace: string | undefined;

before(async () => {
  d = await startDaemon({
    rules: 'alice@example.test  maildir:${MAIL}/alice/Maildir/\ncarol@example.test  mbox:${MAIL}/carol/mail/inbox\n',
  });
});

after(async () => {
  await d?.stop();
  d?.cleanup();
});

/** The index of the first call matching, after `from`; fails naming what was looked for. */
function indexOf(calls: readonly Call[], what: string, match: (c: Call) => boolean, from = 0): number {
  const i = calls.findIndex((c, k) => k >= from && match(c));
  assert.ok(i >= 0, `no ${what} in the trace (after call ${from}):\n${calls.slice(from).map((c) => `${c.tid} ${c.name}(${c.args}) = ${c.result}`).join('\n')}`);
  return i;
}

const fsyncOf = (path: RegExp) => (c: Call): boolean => (c.name === 'fsync' || c.name === 'fdatasync') && c.result === '0' && path.test(c.args);
/** The reply after DATA (2.0.0; MAIL and RCPT got 2.1.x, LHLO/EHLO no code) written to the client's socket. */
const reply250 = (c: Call): boolean => /^(write|writev|sendmsg|sendto)$/.test(c.name) && /<(TCP|UNIX|socket)/.test(c.args) && /"250 2\.0\.0 /.test(c.args);

async function traced(t: TestContext, run: (daemon: TestDaemon) => Promise<void>): Promise<Call[] | undefined> {
  strace ??= requireProgram(t, 'strace', 'strace');
  if (strace === undefined || d === undefined) return undefined;
  const tracer = await Tracer.attach(strace, d.child.pid ?? 0, join(d.dir, `trace-${Date.now()}`));
  try {
    await run(d);
  } catch (err) {
    await tracer.stop();
    throw err;
  }
  await tracer.until(reply250);
  return tracer.stop();
}

async function lmtpMessage(port: number, rcpt: string): Promise<void> {
  const c = await RawClient.open({ port });
  try {
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    assert.equal((await c.command(`RCPT TO:<${rcpt}>`)).code, 250);
    await c.command('DATA');
    c.write('Subject: durable\r\n\r\nkeep me\r\n.\r\n');
    assert.equal((await c.reply()).code, 250);
  } finally {
    c.close();
  }
}

test('LMTP to a Maildir: the 250 is written only after the file is fsynced, linked into new/ and new/ is fsynced', async (t) => {
  const calls = await traced(t, (daemon) => lmtpMessage(daemon.lmtpPort, 'alice@example.test'));
  if (calls === undefined) return;
  const dataSync = indexOf(calls, 'fsync of the message in tmp/', fsyncOf(/\/alice\/Maildir\/tmp\/[^>]+>/));
  const link = indexOf(calls, 'link from tmp/ into new/', (c) => /^link/.test(c.name) && c.result === '0' && /\/Maildir\/tmp\/.*\/Maildir\/new\//.test(c.args), dataSync);
  const dirSync = indexOf(calls, 'fsync of new/', fsyncOf(/\/alice\/Maildir\/new>/), link);
  const reply = indexOf(calls, 'the 250 to the client', reply250);
  assert.ok(reply > dirSync, `250 written (call ${reply}) after new/ was fsynced (call ${dirSync})`);
});

test('LMTP to a new mbox: the 250 is written only after the mailbox and its directory are fsynced', async (t) => {
  const calls = await traced(t, (daemon) => lmtpMessage(daemon.lmtpPort, 'carol@example.test'));
  if (calls === undefined) return;
  const dataSync = indexOf(calls, 'fsync of the mbox', fsyncOf(/\/carol\/mail\/inbox>/));
  const dirSync = indexOf(calls, 'fsync of the new mailbox\'s directory', fsyncOf(/\/carol\/mail>/), dataSync);
  const reply = indexOf(calls, 'the 250 to the client', reply250);
  assert.ok(reply > dirSync, `250 written (call ${reply}) after the directory was fsynced (call ${dirSync})`);
});

test('SMTP: the 250 after DATA is written only after the spool file is fsynced, renamed into active/ and active/ is fsynced', async (t) => {
  const calls = await traced(t, async (daemon) => {
    const c = await RawClient.open({ port: daemon.smtpPort });
    try {
      await c.reply();
      await c.command('EHLO client.test');
      await c.command('MAIL FROM:<s@remote.test>');
      assert.equal((await c.command('RCPT TO:<alice@example.test>')).code, 250);
      await c.command('DATA');
      c.write('Subject: spooled\r\n\r\nkeep me too\r\n.\r\n');
      assert.equal((await c.reply()).code, 250);
    } finally {
      c.close();
    }
  });
  if (calls === undefined) return;
  const dataSync = indexOf(calls, 'fsync of the spool file', fsyncOf(/\/incoming\/[^>]+>/));
  const rename = indexOf(calls, 'rename into active/', (c) => /^rename/.test(c.name) && c.result === '0' && /\/incoming\/.*\/active\//.test(c.args), dataSync);
  const dirSync = indexOf(calls, 'fsync of active/', fsyncOf(/\/active>/), rename);
  const reply = indexOf(calls, 'the 250 to the client', reply250);
  assert.ok(reply > dirSync, `250 written (call ${reply}) after active/ was fsynced (call ${dirSync})`);
});
