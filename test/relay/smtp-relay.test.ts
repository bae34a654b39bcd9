// The outbound relay (src/relay): a peer's reply mapped to a Status per
// recipient (pure table), and sending through a real SMTP peer (the loopback
// sink): bytes as given, the null sender, 8BITMIME when needed, a refusal
// at RCPT for one recipient only, a peer that is down or silent → 4.4.x, and
// one connection reused across messages (the pool).
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { test } from 'node:test';
import { parseRelayTarget, SmtpRelay, statusFromReply, statusFromSendError } from '../../src/relay/index.js';
import { startSmtpSink } from '../helpers/smtp-sink.js';

const replies: { reply: number; response: string; want: string; why: string }[] = [
  { reply: 451, response: '451 4.7.1 greylisted, try again later', want: '4.7.1', why: 'a temporary reply keeps its own enhanced code' },
  { reply: 550, response: '550 5.1.1 <x@y>: no such user', want: '5.1.1', why: 'a permanent reply keeps its own enhanced code' },
  { reply: 451, response: '451 local error', want: '4.0.0', why: 'no enhanced code: the class default' },
  { reply: 550, response: '550 4.7.1 confused', want: '5.0.0', why: 'an enhanced code of the wrong class is not believed' },
  { reply: 452, response: '452-4.2.2 first line\r\n452 4.2.2 mailbox full', want: '4.2.2', why: 'the last line of a multi-line reply decides' },
  { reply: 554, response: '554 5.7.1 refused', want: '5.7.1', why: 'a 554 with its code' },
];

for (const c of replies) {
  test(`statusFromReply(${c.reply}, ${JSON.stringify(c.response)}) is ${c.want}: ${c.why}`, () => {
    assert.equal(statusFromReply(c.reply, c.response).code, c.want);
  });
}

const errors: { err: Record<string, unknown>; want: string; why: string }[] = [
  { err: { code: 'ECONNECTION', message: 'connect ECONNREFUSED 127.0.0.1:25' }, want: '4.4.1', why: 'nobody listening: no answer from host' },
  { err: { code: 'ESOCKET', message: 'read ECONNRESET' }, want: '4.4.2', why: 'a broken connection' },
  { err: { code: 'ETIMEDOUT', message: 'Greeting never received' }, want: '4.4.2', why: 'a timeout' },
  { err: { code: 'EDNS', message: 'getaddrinfo ENOTFOUND relay' }, want: '4.4.3', why: 'a name that does not resolve' },
  { err: { code: 'EWHATEVER', message: 'odd' }, want: '4.4.1', why: 'unknown means temporary' },
  { err: { code: 'EENVELOPE', response: '553 5.1.3 bad address', responseCode: 553 }, want: '5.1.3', why: 'a reply wins over the error code' },
];

for (const c of errors) {
  test(`statusFromSendError(${String(c.err.code)}) is ${c.want}: ${c.why}`, () => {
    const s = statusFromSendError(c.err, '127.0.0.1:25');
    assert.equal(s.code, c.want);
    assert.match(s.text, /127\.0\.0\.1:25/);
  });
}

test('parseRelayTarget reads HOST:PORT and [IPv6]:PORT and refuses the rest', () => {
  assert.deepEqual(parseRelayTarget('127.0.0.1:25'), { host: '127.0.0.1', port: 25 });
  assert.deepEqual(parseRelayTarget('[::1]:2525'), { host: '::1', port: 2525 });
  assert.throws(() => parseRelayTarget('relay'), /HOST:PORT/);
  assert.throws(() => parseRelayTarget('relay:0'), /HOST:PORT/);
});

const MESSAGE = Buffer.from('From: a@remote.test\r\nTo: b@local.test\r\nSubject: hi\r\n\r\nline one\r\n.leading dot\r\n');

function relayTo(port: number, timeoutMs = 5000): SmtpRelay {
  return new SmtpRelay({ host: '127.0.0.1', port }, { name: 'mx.test', timeoutMs });
}

test('a message goes out byte for byte with the null sender, and the recipient gets 2.0.0', async () => {
  const sink = await startSmtpSink();
  const relay = relayTo(sink.port);
  try {
    const [s] = await relay.send({ from: '', to: ['alice@remote.test'], raw: MESSAGE });
    assert.equal(s?.code, '2.0.0', s?.text);
    assert.equal(sink.messages.length, 1);
    assert.equal(sink.messages[0]?.from, '');
    assert.deepEqual(sink.messages[0]?.to, ['alice@remote.test']);
    assert.equal(sink.messages[0]?.raw.toString('latin1'), MESSAGE.toString('latin1'));
    assert.equal(sink.messages[0]?.bodyType, '7bit');
  } finally {
    relay.close();
    await sink.close();
  }
});

test('8-bit bytes go out as they are with BODY=8BITMIME', async () => {
  const sink = await startSmtpSink();
  const relay = relayTo(sink.port);
  try {
    const raw = Buffer.from('Subject: Grüße\r\n\r\nbody\r\n', 'utf8');
    const [s] = await relay.send({ from: 's@remote.test', to: ['alice@remote.test'], raw });
    assert.equal(s?.code, '2.0.0', s?.text);
    assert.equal(sink.messages[0]?.bodyType, '8bitmime');
    assert.equal(sink.messages[0]?.raw.toString('utf8'), raw.toString('utf8'));
  } finally {
    relay.close();
    await sink.close();
  }
});

test('a refusal at RCPT applies to that recipient only; the other gets the message', async () => {
  const sink = await startSmtpSink();
  const relay = relayTo(sink.port);
  try {
    sink.refuseNext({ code: 550, text: '5.1.1 no such user', at: 'rcpt' });
    const got = await relay.send({ from: 's@remote.test', to: ['gone@remote.test', 'here@remote.test'], raw: MESSAGE });
    assert.deepEqual(got.map((s) => s.code), ['5.1.1', '2.0.0']);
    assert.deepEqual(sink.messages[0]?.to, ['here@remote.test']);
  } finally {
    relay.close();
    await sink.close();
  }
});

test('every recipient refused at RCPT: each gets its own refusal, not an exception', async () => {
  const sink = await startSmtpSink();
  const relay = relayTo(sink.port);
  try {
    sink.refuseNext({ code: 450, text: '4.2.1 try later', at: 'rcpt' });
    const got = await relay.send({ from: 's@remote.test', to: ['busy@remote.test'], raw: MESSAGE });
    assert.deepEqual(got.map((s) => s.code), ['4.2.1']);
    assert.equal(sink.messages.length, 0);
  } finally {
    relay.close();
    await sink.close();
  }
});

test('a 451 after DATA is temporary with its enhanced code for every recipient', async () => {
  const sink = await startSmtpSink();
  const relay = relayTo(sink.port);
  try {
    sink.refuseNext({ code: 451, text: '4.7.1 greylisted, try again later' });
    const got = await relay.send({ from: 's@remote.test', to: ['a@remote.test', 'b@remote.test'], raw: MESSAGE });
    assert.deepEqual(got.map((s) => s.code), ['4.7.1', '4.7.1']);
    assert.match(got[0]?.text ?? '', /greylisted/);
  } finally {
    relay.close();
    await sink.close();
  }
});

test('connections are reused: three messages in a row use one connection', async () => {
  const sink = await startSmtpSink();
  const relay = relayTo(sink.port);
  try {
    for (let i = 0; i < 3; i++) {
      const [s] = await relay.send({ from: 's@remote.test', to: [`r${i}@remote.test`], raw: MESSAGE });
      assert.equal(s?.code, '2.0.0', s?.text);
    }
    assert.equal(sink.messages.length, 3);
    assert.equal(sink.connections(), 1);
  } finally {
    relay.close();
    await sink.close();
  }
});

test('a peer that is down (connection refused) gives 4.4.1 for every recipient, not an exception', async () => {
  const sink = await startSmtpSink();
  const port = sink.port;
  await sink.close();
  const relay = relayTo(port);
  try {
    const got = await relay.send({ from: '', to: ['a@remote.test', 'b@remote.test'], raw: MESSAGE });
    assert.deepEqual(got.map((s) => s.code), ['4.4.1', '4.4.1']);
    assert.match(got[0]?.text ?? '', /127\.0\.0\.1/);
  } finally {
    relay.close();
  }
});

test('a peer that accepts the connection but never greets gives 4.4.2 after the timeout, not a hang', async () => {
  const sockets: Socket[] = [];
  const silent = createServer((sock) => sockets.push(sock));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const relay = relayTo((silent.address() as AddressInfo).port, 300);
  try {
    const [s] = await relay.send({ from: '', to: ['a@remote.test'], raw: MESSAGE });
    assert.equal(s?.code, '4.4.2', s?.text);
  } finally {
    relay.close();
    for (const sock of sockets) sock.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  }
});
