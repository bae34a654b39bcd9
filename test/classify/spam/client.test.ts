// The spamd client (src/classify/spam/client.ts):
// - against a REAL spamd started by the test (Debian package "spamd"; as
//   nobody on a unix socket in a temp dir, -L; stopped by PID): every command,
//   8-bit bytes kept, a message without a final newline, a message larger than
//   the socket buffers, TELL learn/forget, TELL refused without --allow-tell,
//   the reply cap;
// - against small loopback servers of the test's own: the exact recorded
//   request over TCP, a missing socket and a refused port (connect), a server
//   that never answers (timeout), one that answers garbage, stops mid-reply or
//   resets (protocol, connect), one that announces a huge body (too-large), one
//   that answers and keeps the connection open (taken at the reply's end).
// After each exchange with a test server, no handle or timer of the client's
// is left. Timeouts are hang detectors (60 s), except the one under test,
// which only has to fire: nothing asserts that anything is fast.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, type TestContext } from 'node:test';
import {
  check,
  headers,
  ping,
  processMessage,
  report,
  reportIfSpam,
  SpamdError,
  symbols,
  tell,
  type SpamcOptions,
  type SpamdErrorKind,
  type SpamdTarget,
} from '../../../src/classify/spam/index.js';
import { startSpamd, type TestSpamd } from '../../helpers/spamd.js';

const FIXTURES = fileURLToPath(new URL('../../../../test/fixtures/spamd/', import.meta.url));
const fixture = (name: string): Buffer => readFileSync(join(FIXTURES, name));
const GTUBE = fixture('messages/gtube.eml');
const HAM = fixture('messages/ham.eml');
const EIGHT_BIT = fixture('messages/8bit.eml');

/** Hang detectors, far above any real latency. */
const HANG_MS = 60_000;

const bodyOf = (m: Buffer): Buffer => m.subarray(m.indexOf('\n\n') + 2);

async function rejects(p: Promise<unknown>, kind: SpamdErrorKind, message: RegExp): Promise<SpamdError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof SpamdError, `a SpamdError, not ${String(caught)}`);
  assert.equal(caught.kind, kind, caught.message);
  assert.match(caught.message, message);
  assert.match(caught.message, /^[\x20-\x7e]*$/, 'one line of printable ASCII');
  return caught;
}

// ----------------------------------------------------------------- real spamd

test('against a real spamd', async (t) => {
  const started = await Promise.allSettled([startSpamd(t, { allowTell: true }), startSpamd(t)]);
  const running = started.flatMap((s) => (s.status === 'fulfilled' && s.value !== undefined ? [s.value] : []));
  try {
    for (const s of started) if (s.status === 'rejected') throw s.reason;
    const [sd, noTell] = running as [TestSpamd | undefined, TestSpamd | undefined];
    if (sd === undefined || noTell === undefined) return; // skipped: spamd is not installed
    const o: SpamcOptions = { target: { path: sd.socket }, timeoutMs: HANG_MS, connectTimeoutMs: HANG_MS };
    await realSpamd(t, o, { ...o, target: { path: noTell.socket } }, sd);
  } finally {
    await Promise.all(running.map((s) => s.stop()));
  }
});

async function realSpamd(t: TestContext, o: SpamcOptions, noTell: SpamcOptions, sd: TestSpamd): Promise<void> {
  await t.test('PING is answered', async () => {
    await ping(o);
  });

  await t.test('CHECK: GTUBE is spam, with a score of at least 1000', async () => {
    const r = await check(o, GTUBE);
    assert.equal(r.isSpam, true);
    assert.ok(r.score >= 1000, `score ${r.score}`);
    assert.equal(r.required, 5);
  });

  await t.test('CHECK: the ham is not spam, its score under the threshold', async () => {
    const r = await check(o, HAM);
    assert.equal(r.isSpam, false);
    assert.ok(r.score < r.required, `score ${r.score} / ${r.required}`);
  });

  await t.test('CHECK with a User: header is answered for that user', async () => {
    assert.equal((await check({ ...o, user: 'nobody' }, GTUBE)).isSpam, true);
  });

  await t.test('SYMBOLS names GTUBE among the rules that hit', async () => {
    const r = await symbols(o, GTUBE);
    assert.equal(r.isSpam, true);
    assert.ok(r.tests.includes('GTUBE'), r.tests.join(','));
    for (const name of r.tests) assert.match(name, /^[A-Za-z0-9_]+$/);
  });

  await t.test('REPORT explains the verdict; REPORT_IFSPAM says nothing about the ham', async () => {
    const r = await report(o, GTUBE);
    assert.match(r.report, /Content analysis details:\s+\(1000\.\d points, 5\.0 required\)/);
    assert.deepEqual(await reportIfSpam(o, HAM), { ...(await check(o, HAM)), report: '' });
  });

  await t.test('HEADERS returns the rewritten header block only, ending in the empty line', async () => {
    const r = await headers(o, HAM);
    const text = r.headers.toString('latin1');
    assert.match(text, /^X-Spam-Checker-Version: SpamAssassin /m);
    assert.match(text, /^Message-ID: <ham-1@example.test>$/m);
    assert.ok(text.endsWith('\n\n') && text.indexOf('\n\n') === text.length - 2, JSON.stringify(text.slice(-40)));
  });

  await t.test('PROCESS returns the message with X-Spam-Status added and its 8-bit body byte for byte', async () => {
    const r = await processMessage(o, EIGHT_BIT);
    assert.match(r.message.toString('latin1'), /^X-Spam-Status: No, score=/m);
    assert.ok(EIGHT_BIT.includes(Buffer.from([0x63, 0x61, 0x66, 0xe9])), 'the message has latin1 "café"');
    assert.ok(EIGHT_BIT.includes(Buffer.from('café', 'utf8')), 'and UTF-8 "café"');
    assert.ok(bodyOf(r.message).equals(bodyOf(EIGHT_BIT)));
  });

  await t.test('PROCESS keeps every byte from 0x80 to 0xFF', async () => {
    const m = Buffer.concat([
      Buffer.from('From: a@example.test\nTo: b@example.test\nSubject: bytes\nMessage-ID: <bytes@example.test>\n\n'),
      Buffer.from(Array.from({ length: 128 }, (_, i) => 0x80 + i)),
      Buffer.from('\nend\n'),
    ]);
    assert.ok(bodyOf((await processMessage(o, m)).message).equals(bodyOf(m)));
  });

  await t.test('a message without a final newline is checked (the client shuts its write side)', async () => {
    const r = await check(o, Buffer.from('From: a@example.test\nTo: b@example.test\nSubject: x\n\nno final newline'));
    assert.equal(r.isSpam, false);
  });

  await t.test('a 1 MiB message goes through PROCESS: written in many pieces, a reply over the 1 MiB default cap', async () => {
    const head = 'From: a@example.test\nTo: b@example.test\nSubject: big\nMessage-ID: <big@example.test>\n\n';
    const m = Buffer.from(head + 'The quick brown fox jumps over the lazy dog, again and again.\n'.repeat(17_000));
    assert.ok(m.length > 1024 * 1024);
    const r = await processMessage(o, m);
    assert.ok(r.message.length > 1024 * 1024);
    assert.ok(bodyOf(r.message).equals(bodyOf(m)));
  });

  await t.test('a reply over maxReplyBytes is too-large', async () => {
    await rejects(processMessage({ ...o, maxReplyBytes: 500 }, HAM), 'too-large', /^reply to PROCESS announces \d+ bytes of body, more than the limit of 500 bytes/);
  });

  await t.test('TELL learns GTUBE as spam, a second time changes nothing, then forgets it', async () => {
    assert.deepEqual(await tell(o, GTUBE, { messageClass: 'spam', set: ['local'] }), { didSet: ['local'], didRemove: [] });
    assert.deepEqual(await tell(o, GTUBE, { messageClass: 'spam', set: ['local'] }), { didSet: [], didRemove: [] });
    assert.deepEqual(await tell(o, GTUBE, { remove: ['local'] }), { didSet: [], didRemove: ['local'] });
    assert.deepEqual(await tell(o, GTUBE, { remove: ['local'] }), { didSet: [], didRemove: [] });
  });

  await t.test('TELL to a spamd without --allow-tell is refused: a server error 69 with spamd\'s text', async () => {
    const e = await rejects(tell(noTell, GTUBE, { messageClass: 'spam', set: ['local'] }), 'server', /^spamd refused TELL: 69 EX_UNAVAILABLE: Service Unavailable: TELL commands are not enabled/);
    assert.equal(e.exitCode, 69);
  });

  await t.test('spamd ran as nobody, never as root', () => {
    if (process.getuid?.() !== 0) return;
    const status = readFileSync(`/proc/${sd.pid}/status`, 'utf8');
    assert.doesNotMatch(status, /^Uid:\s+0\b/m);
  });
}

// ----------------------------------------------------------- test's own servers

interface TestServer {
  readonly target: SpamdTarget;
  /** Every request received, complete once the client half-closed. */
  readonly requests: Buffer[];
  close(): Promise<void>;
}

type Behaviour = (socket: Socket, request: Promise<Buffer>) => void;

/** A loopback server (TCP on 127.0.0.1, or a unix socket in a temp dir) that does what `behave` says with each connection. */
async function testServer(kind: 'tcp' | 'unix', behave: Behaviour): Promise<TestServer> {
  const sockets = new Set<Socket>();
  const requests: Buffer[] = [];
  // allowHalfOpen: the client's half-close must not close the server's side.
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => { /* the client went away: fine */ });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    behave(socket, new Promise((resolve) => socket.on('end', () => {
      const r = Buffer.concat(chunks);
      requests.push(r);
      resolve(r);
    })));
  });
  const dir = kind === 'unix' ? mkdtempSync(join(tmpdir(), 'mailprocd-spamc-')) : undefined;
  const target: SpamdTarget = await new Promise((resolve, reject) => {
    server.once('error', reject);
    if (dir !== undefined) {
      const path = join(dir, 'spamd.sock');
      server.listen(path, () => resolve({ path }));
    } else {
      server.listen(0, '127.0.0.1', () => resolve({ host: '127.0.0.1', port: (server.address() as AddressInfo).port }));
    }
  });
  return {
    target,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Handles and timers alive now, by type, for "nothing left behind". */
async function resources(): Promise<string[]> {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  return process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap').sort();
}

/** Runs `exchange` against a test server, then checks the client left nothing behind once the server is gone. */
async function withServer(kind: 'tcp' | 'unix', behave: Behaviour, exchange: (o: SpamcOptions, s: TestServer) => Promise<void>): Promise<void> {
  const before = await resources();
  const s = await testServer(kind, behave);
  try {
    await exchange({ target: s.target, timeoutMs: HANG_MS, connectTimeoutMs: HANG_MS }, s);
  } finally {
    await s.close();
  }
  assert.deepEqual(await resources(), before, 'no socket or timer left behind');
}

const replay = (reply: Buffer): Behaviour => (socket, request) => {
  void request.then(() => socket.end(reply));
};

for (const name of ['check-gtube', 'check-ham-with-user', 'symbols-gtube', 'process-8bit']) {
  test(`over TCP, ${name}: the client sends exactly the recorded request and reads spamd's recorded reply`, async () => {
    await withServer('tcp', replay(fixture(`${name}.reply`)), async (o, s) => {
      const m = name === 'process-8bit' ? EIGHT_BIT : name.endsWith('gtube') ? GTUBE : HAM;
      const user = name.endsWith('with-user') ? { user: 'nobody' } : {};
      const r = name.startsWith('symbols') ? await symbols({ ...o, ...user }, m)
        : name.startsWith('process') ? await processMessage({ ...o, ...user }, m)
          : await check({ ...o, ...user }, m);
      assert.equal(r.isSpam, name.endsWith('gtube'));
      assert.equal(s.requests[0]?.toString('latin1'), fixture(`${name}.request`).toString('latin1'));
    });
  });
}

test('a missing socket is a connect error naming the path and ENOENT', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-spamc-'));
  try {
    const before = await resources();
    const path = join(dir, 'no-such.sock');
    await rejects(check({ target: { path } }, GTUBE), 'connect', new RegExp(`^cannot connect to spamd at unix:${path}: ENOENT$`));
    assert.deepEqual(await resources(), before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a TCP port nobody listens on is a connect error (ECONNREFUSED)', async () => {
  const s = await testServer('tcp', () => undefined);
  await s.close();
  const { port } = s.target as { port: number };
  await rejects(ping({ target: { host: '127.0.0.1', port } }), 'connect', new RegExp(`^cannot connect to spamd at 127\\.0\\.0\\.1:${port}: ECONNREFUSED$`));
});

test('a server that accepts and never answers is a timeout, after timeoutMs and not before', async () => {
  const timeoutMs = 1_000;
  await withServer('tcp', () => undefined, async (o) => {
    const t0 = performance.now();
    await rejects(check({ ...o, timeoutMs }, GTUBE), 'timeout', /^no complete reply to CHECK from spamd at 127\.0\.0\.1:\d+ within 1000 ms \(0 bytes received\)$/);
    // Timers fire late on a loaded machine, never early (1 ms of rounding aside).
    assert.ok(performance.now() - t0 >= timeoutMs - 1);
  });
});

test('a server that answers half a reply and then nothing is a timeout that says how much came', async () => {
  const half = fixture('symbols-gtube.reply').subarray(0, 50);
  await withServer('unix', (socket) => { socket.write(half); }, async (o) => {
    await rejects(symbols({ ...o, timeoutMs: 1_000 }, GTUBE), 'timeout', /within 1000 ms \(50 bytes received\)$/);
  });
});

test('a server that answers garbage is a protocol error, without waiting for it to close', async () => {
  await withServer('unix', (socket) => { socket.write('HTTP/1.1 400 Bad Request\r\n\r\n'); }, async (o) => {
    await rejects(check(o, GTUBE), 'protocol', /^not a SPAMD reply: "H/);
  });
});

test('a server that closes in the middle of the body is a protocol error: truncated', async () => {
  const reply = fixture('process-ham.reply');
  await withServer('unix', replay(reply.subarray(0, reply.length - 10)), async (o) => {
    const e = await rejects(processMessage(o, HAM), 'protocol', /^reply to PROCESS truncated: Content-length \d+, only \d+ bytes of body$/);
    const [, announced, got] = /Content-length (\d+), only (\d+)/.exec(e.message) ?? [];
    assert.equal(Number(got), Number(announced) - 10);
  });
});

test('a server that resets the connection after the request is a connect error', async () => {
  await withServer('tcp', (socket, request) => { void request.then(() => socket.resetAndDestroy()); }, async (o) => {
    await rejects(check(o, GTUBE), 'connect', /^connection to spamd at 127\.0\.0\.1:\d+ broken before a complete reply to CHECK \(0 bytes received\): E[A-Z]+$/);
  });
});

test('a reply announcing a huge body is too-large at once, before any body arrives', async () => {
  const head = 'SPAMD/1.1 0 EX_OK\r\nContent-length: 100000000\r\nSpam: False ; 0.0 / 5.0\r\n\r\n';
  await withServer('unix', (socket, request) => { void request.then(() => socket.write(head)); }, async (o) => {
    await rejects(processMessage(o, HAM), 'too-large', /^reply to PROCESS announces 100000000 bytes of body, more than the limit of \d+ bytes/);
  });
});

test('a reply is taken when complete, even if the server keeps the connection open', async () => {
  await withServer('unix', (socket, request) => { void request.then(() => socket.write(fixture('check-gtube.reply'))); }, async (o) => {
    assert.deepEqual(await check(o, GTUBE), { isSpam: true, score: 1000, required: 5 });
  });
});

test('options and requests that cannot work are RangeErrors, before any connection', async () => {
  const o: SpamcOptions = { target: { path: '/nonexistent/spamd.sock' } };
  await assert.rejects(check({ ...o, timeoutMs: 0 }, GTUBE), RangeError);
  await assert.rejects(check({ ...o, connectTimeoutMs: Number.NaN }, GTUBE), RangeError);
  await assert.rejects(check({ ...o, maxReplyBytes: -1 }, GTUBE), RangeError);
  await assert.rejects(check({ ...o, user: 'a b' }, GTUBE), RangeError);
  await assert.rejects(tell(o, GTUBE, { set: ['local'] }), RangeError);
});
