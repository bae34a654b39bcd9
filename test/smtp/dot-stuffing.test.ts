// DATA as the listeners read it: RFC 5321 §4.5.2 dot-unstuffing (a line,
// ended by CRLF only, that starts with a period loses it) and the end of DATA
// at <CRLF>.<CRLF> only, with what follows going back to the command parser.
// The decoder (src/smtp/data-decoder.ts) is fed every case whole, one byte at
// a time and cut in two at every point; the session input
// (src/smtp/input-stream.ts) the same, with the command after the message:
// the result must not depend on how the bytes arrive.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DataDecoder } from '../../src/smtp/data-decoder.js';
import { InputStream } from '../../src/smtp/input-stream.js';

interface Fed {
  readonly body: string;
  readonly commands: string[];
}

/** Feeds wire bytes (after the DATA command) to a session input in the given pieces; resolves with the message and the commands after it. */
async function feed(pieces: readonly Buffer[]): Promise<Fed> {
  const stream = new InputStream({ commandTimeoutMs: Infinity, dataMinRate: 0 });
  const commands: string[] = [];
  stream.oncommand = (cmd: Buffer, next?: () => void) => {
    commands.push(cmd.toString('latin1'));
    next?.();
  };
  const data = stream.startDataMode();
  const chunks: Buffer[] = [];
  data.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((resolve) => data.on('end', () => resolve()));
  // Not awaited one by one: the piece holding the end of DATA completes only after continue(), as in a session.
  for (const p of pieces) stream.write(p);
  await ended;
  stream.continue();
  await new Promise<void>((resolve) => stream.end(() => resolve()));
  return { body: Buffer.concat(chunks).toString('latin1'), commands };
}

/** The decoder alone: the message and the bytes after the terminator. */
function decode(pieces: readonly Buffer[]): { body: string; rest: string | undefined } {
  const d = new DataDecoder();
  const body: Buffer[] = [];
  let rest: Buffer[] | undefined;
  for (const p of pieces) {
    if (rest !== undefined) {
      rest.push(p);
      continue;
    }
    const got = d.push(p);
    body.push(got.body);
    if (got.rest !== undefined) rest = [got.rest];
  }
  return { body: Buffer.concat(body).toString('latin1'), rest: rest === undefined ? undefined : Buffer.concat(rest).toString('latin1') };
}

const CASES: { name: string; wire: string; body: string }[] = [
  { name: 'a doubled leading period is one period', wire: 'a\r\n..b\r\n.\r\n', body: 'a\r\n.b\r\n' },
  { name: 'a single leading period before other text is removed (RFC 5321 §4.5.2)', wire: 'a\r\n.b\r\n.\r\n', body: 'a\r\nb\r\n' },
  { name: 'the same on the first line of DATA', wire: '.b\r\n.\r\n', body: 'b\r\n' },
  { name: 'a line holding only a period, sent as ".."', wire: '..\r\n.\r\n', body: '.\r\n' },
  { name: 'an empty message', wire: '.\r\n', body: '' },
  { name: 'an empty line before the end', wire: '\r\n.\r\n', body: '\r\n' },
  { name: 'after a bare LF no line starts: the period stays', wire: 'a\n.b\r\n.\r\n', body: 'a\n.b\r\n' },
  { name: 'after a bare LF a doubled period stays doubled', wire: 'a\n..b\r\n.\r\n', body: 'a\n..b\r\n' },
  { name: 'after a bare LF ".\\r\\n" does not end DATA', wire: 'a\n.\r\nb\r\n.\r\n', body: 'a\n.\r\nb\r\n' },
  { name: '".\\n" after CRLF is a line starting with a period: the period goes, DATA goes on', wire: 'a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n', body: 'a\r\n\nMAIL FROM:<x@y>\r\n' },
  { name: '".\\r" not followed by LF: the period goes, the CR stays', wire: 'a\r\n.\rb\r\n.\r\n', body: 'a\r\n\rb\r\n' },
  { name: 'periods inside lines are content', wire: 'a.b\r\n...\r\n x.\r\n.\r\n', body: 'a.b\r\n..\r\n x.\r\n' },
];

for (const c of CASES) {
  test(`DATA: ${c.name}`, async () => {
    const wire = Buffer.from(`${c.wire}QUIT\r\n`, 'latin1');
    const want = { body: c.body, rest: 'QUIT\r\n' };
    assert.deepEqual(decode([wire]), want, 'decoder, whole');
    assert.deepEqual(decode([...wire].map((b) => Buffer.from([b]))), want, 'decoder, one byte at a time');
    for (let cut = 0; cut <= wire.length; cut++) {
      assert.deepEqual(decode([wire.subarray(0, cut), wire.subarray(cut)]), want, `decoder, cut at ${cut}`);
    }
    const fed: Fed = { body: c.body, commands: ['QUIT'] };
    assert.deepEqual(await feed([wire]), fed, 'session input, whole');
    assert.deepEqual(await feed([...wire].map((b) => Buffer.from([b]))), fed, 'session input, one byte at a time');
  });
}

test('DATA: without its terminator the decoder gives the text so far and waits', () => {
  assert.deepEqual(decode([Buffer.from('a\r\n..b\r\n.')]), { body: 'a\r\n.b', rest: undefined });
});

test('DATA: a large message with stuffed lines comes through whole, in pieces of any size', async () => {
  const lines: string[] = [];
  for (let i = 0; i < 20_000; i++) lines.push(i % 7 === 0 ? `.line ${i}` : `line ${i}`);
  const body = `${lines.join('\r\n')}\r\n`;
  const wire = Buffer.from(`${body.replace(/^\./gm, '..')}.\r\nQUIT\r\n`, 'latin1');
  const pieces: Buffer[] = [];
  for (let at = 0, size = 1; at < wire.length; at += size, size = (size * 7 + 3) % 4099 + 1) pieces.push(wire.subarray(at, at + size));
  assert.deepEqual(await feed(pieces), { body, commands: ['QUIT'] });
});
