// The session input (src/smtp/input-stream.ts) on a fake clock: command
// lines in any split, and the deadlines — a command line must arrive within
// commandTimeoutMs of waiting once begun, DATA must keep earning its budget
// (dataMinRate) — counting only time spent waiting for the client, never
// time in our own handlers or waiting for the message's reader.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InputError, InputStream, type InputClock } from '../../src/smtp/input-stream.js';

class FakeClock implements InputClock {
  private t = 0;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    this.seq++;
    this.timers.set(this.seq, { at: this.t + ms, fn });
    return this.seq;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Moves time on, firing the timers that come due, in order. */
  advance(ms: number): void {
    const until = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, x]) => x.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
    }
    this.t = until;
  }
}

interface Session {
  readonly input: InputStream;
  readonly clock: FakeClock;
  readonly commands: string[];
  /** The error the input ended with (read synchronously: the 'error' event comes a tick later). */
  readonly errors: Error[];
  /** Calls back the commands held by `hold` (their handlers "still running"). */
  release(): void;
}

/** A session input whose command handler answers at once, or holds commands that `hold` matches until release(). */
function session(o: { commandTimeoutMs?: number; dataMinRate?: number; hold?: RegExp } = {}): Session {
  const clock = new FakeClock();
  const input = new InputStream({ commandTimeoutMs: o.commandTimeoutMs ?? 1000, dataMinRate: o.dataMinRate ?? 500, clock });
  const commands: string[] = [];
  const held: (() => void)[] = [];
  input.on('error', () => undefined);
  input.oncommand = (line, next) => {
    const cmd = line.toString('latin1');
    commands.push(cmd);
    if (next === undefined) return;
    if (o.hold?.test(cmd)) held.push(next);
    else next();
  };
  return {
    input, clock, commands,
    get errors() {
      return input.errored === null ? [] : [input.errored];
    },
    release: () => held.splice(0).forEach((f) => f()),
  };
}

const timeout = (what: 'command line not finished' | 'DATA made too little progress') => (e: Error): boolean =>
  e instanceof InputError && e.code === '4.4.2' && e.message === `timeout exceeded (${what})`;

test('command lines end at CRLF or a bare LF, in any split; a last line without its end is a command when the input ends', async () => {
  const s = session();
  for (const piece of ['NO', 'OP\r', '\nRSET\nMAIL FROM:<a@b>\r\nQU', 'IT']) s.input.write(piece);
  await new Promise<void>((resolve) => s.input.end(() => resolve()));
  assert.deepEqual(s.commands, ['NOOP', 'RSET', 'MAIL FROM:<a@b>', 'QUIT']);
});

test('a command line over 16 KiB ends the session with 4.5.0, whole or in pieces', () => {
  for (const pieces of [[`NOOP ${'x'.repeat(17_000)}\r\n`], [`NOOP ${'x'.repeat(10_000)}`, 'x'.repeat(10_000)]]) {
    const s = session();
    for (const p of pieces) s.input.write(p);
    assert.equal(s.errors.length, 1);
    assert.ok(s.errors[0] instanceof InputError && s.errors[0].code === '4.5.0' && s.errors[0].message === 'command line too long');
    assert.deepEqual(s.commands, []);
  }
});

test('a command line trickled in a byte at a time ends the session once its waiting passes commandTimeoutMs (1000 ms)', () => {
  const s = session();
  const line = 'MAIL FROM:<slow@remote.test>\r\n';
  let sent = 0;
  while (s.errors.length === 0 && sent < line.length) {
    s.input.write(line[sent++] as string);
    s.clock.advance(300);
  }
  assert.equal(s.errors.length, 1, `sent ${sent} bytes`);
  assert.ok(timeout('command line not finished')(s.errors[0] as Error), String(s.errors[0]));
  assert.equal(sent, 4, 'the fourth byte came after 900 ms of waiting; the deadline passed 100 ms later');
  assert.equal(s.clock.now(), 1200);
  assert.deepEqual(s.commands, []);
});

test('the deadline is per line: lines that each finish in time go on for as long as the client likes', () => {
  const s = session();
  for (let i = 0; i < 20; i++) {
    s.input.write('NO');
    s.clock.advance(900);
    s.input.write('OP\r\n');
    s.clock.advance(60_000); // idle between commands is smtp-server's client_timeout, not ours
  }
  assert.deepEqual(s.errors, []);
  assert.equal(s.commands.length, 20);
});

test('time spent in our own command handler does not count against the next line the client already began', () => {
  const s = session({ hold: /^RCPT/ });
  s.input.write('RCPT TO:<a@b>\r\nRCPT TO:<c');
  s.clock.advance(30_000); // a slow lookup: the client is waiting for us
  assert.deepEqual(s.errors, []);
  s.release();
  s.clock.advance(900);
  s.input.write('@d>\r\n');
  s.release();
  assert.deepEqual(s.errors, []);
  assert.deepEqual(s.commands, ['RCPT TO:<a@b>', 'RCPT TO:<c@d>']);
});

test('DATA trickled a byte every 400 ms runs out of budget (1000 ms, 2 ms back per byte at 500 bytes/s) and ends the session', () => {
  const s = session();
  const message = s.input.startDataMode();
  message.resume();
  s.input.write(''); // what followed DATA in its chunk: nothing; the client's turn
  let sent = 0;
  while (s.errors.length === 0 && sent < 100) {
    s.clock.advance(400);
    if (s.errors.length === 0) {
      s.input.write('x');
      sent++;
    }
  }
  assert.equal(s.errors.length, 1);
  assert.ok(timeout('DATA made too little progress')(s.errors[0] as Error), String(s.errors[0]));
  assert.equal(sent, 2, 'budget 1000 → 602 → 204 after two bytes; out 204 ms after the second');
});

test('DATA at the minimum rate or faster keeps its budget for as long as the message lasts', async () => {
  const s = session();
  const message = s.input.startDataMode();
  const chunks: Buffer[] = [];
  message.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((resolve) => message.on('end', () => resolve()));
  s.input.write('');
  const line = `${'y'.repeat(598)}\r\n`; // 600 bytes earn 1200 ms, more than the 900 ms waited for them
  for (let i = 0; i < 50; i++) {
    s.clock.advance(900);
    s.input.write(line);
  }
  s.input.write('.\r\n');
  await ended;
  assert.deepEqual(s.errors, []);
  assert.equal(Buffer.concat(chunks).toString('latin1'), line.repeat(50));
});

test('with dataMinRate 0 the whole message must come within commandTimeoutMs of waiting', () => {
  const s = session({ dataMinRate: 0 });
  const message = s.input.startDataMode();
  message.resume();
  s.input.write('');
  let sent = 0;
  while (s.errors.length === 0 && sent < 100) {
    s.clock.advance(100);
    if (s.errors.length === 0) {
      s.input.write('z'.repeat(10));
      sent++;
    }
  }
  assert.ok(timeout('DATA made too little progress')(s.errors[0] as Error));
  assert.equal(sent, 9, 'nine pieces came within the first 900 ms; the deadline passed at 1000 ms, before the tenth');
});

test('waiting for the message\'s reader to drain is ours, not the client\'s', async () => {
  const s = session();
  const message = s.input.startDataMode(); // not read yet: the application is busy
  s.input.write('');
  s.clock.advance(100);
  s.input.write('w'.repeat(64 * 1024)); // more than the message stream buffers
  s.clock.advance(60_000);
  assert.deepEqual(s.errors, []);
  const ended = new Promise<void>((resolve) => message.on('end', () => resolve()));
  message.resume();
  await new Promise((r) => setImmediate(r));
  s.clock.advance(500);
  s.input.write('\r\n.\r\n');
  await ended;
  assert.deepEqual(s.errors, []);
});

test('after the end of DATA the deadline is gone until the next line begins', async () => {
  const s = session();
  const message = s.input.startDataMode();
  message.resume();
  const ended = new Promise<void>((resolve) => message.on('end', () => resolve()));
  s.input.write('Subject: x\r\n\r\nbody\r\n.\r\n');
  await ended;
  s.input.continue(); // the application answered
  s.clock.advance(600_000);
  s.input.write('QUIT\r\n');
  assert.deepEqual(s.errors, []);
  assert.deepEqual(s.commands, ['QUIT']);
});
