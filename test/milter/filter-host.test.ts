// The filter host (src/milter/filter-host.ts) with real worker threads and the
// fixture filters beside this file: every event and every verdict form across
// the thread boundary, every modification recorded in the worker and replayed
// in order on the daemon's EomSession, macros asked for on demand, console
// output logged under the filter's name; a filter in an endless loop stopped
// at milter.filter_timeout while the daemon's event loop goes on answering,
// and its worker started again; a filter's own failures; a crashing worker;
// and load errors that name the config key and the path (and keep the daemon
// from starting).
//
// The EomSession here records what the replay does to it: the host's contract
// is the calls it makes on the session it is given (the server owns the one
// that speaks to the MTA; test/milter/miltertest.test.ts drives that one).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { eventsOf, type ConnectInfo, type EomSession, type MilterFilter } from '../../src/milter/api.js';
import { loadMilterFilters, MilterFilterLoadError, type LoadedMilterFilters } from '../../src/milter/filter-host.js';
import { createLogger } from '../../src/log.js';
import { makeTestDir, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** What the replay did to the session, in order; macros from a table. */
class RecordingSession implements EomSession {
  readonly done: string[] = [];
  sender: string | undefined = undefined;
  recipients: string[] = [];
  constructor(private readonly macros: Record<string, string> = {}) {}
  macro(name: string): string | undefined {
    return this.macros[name];
  }
  addHeader(name: string, value: string | Buffer): void {
    this.done.push(`addHeader ${name}: ${show(value)}`);
  }
  insertHeader(index: number, name: string, value: string | Buffer): void {
    this.done.push(`insertHeader ${index} ${name}: ${show(value)}`);
  }
  changeHeader(name: string, index: number, value: string | Buffer | null): void {
    this.done.push(`changeHeader ${name}[${index}]: ${value === null ? 'deleted' : show(value)}`);
  }
  addRecipient(address: string, esmtpArgs?: string): void {
    this.done.push(`addRecipient ${address} ${esmtpArgs ?? '-'}`);
  }
  deleteRecipient(address: string): void {
    this.done.push(`deleteRecipient ${address}`);
  }
  changeSender(address: string, esmtpArgs?: string): void {
    this.done.push(`changeSender ${address} ${esmtpArgs ?? '-'}`);
  }
  replaceBody(chunk: string | Buffer): void {
    this.done.push(`replaceBody ${show(chunk)}`);
  }
  quarantine(reason: string): void {
    this.done.push(`quarantine ${reason}`);
  }
  progress(): void {
    this.done.push('progress');
  }
}

/** Strings as JSON, Buffers as "Buffer<hex>": a Buffer that arrived as a string (or the reverse) shows. */
function show(v: string | Buffer): string {
  return Buffer.isBuffer(v) ? `Buffer<${v.toString('hex')}>` : JSON.stringify(v);
}

async function load(names: string[], timeoutMs = 10_000): Promise<{ host: LoadedMilterFilters; lines: string[] }> {
  const lines: string[] = [];
  const log = createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) });
  const host = await loadMilterFilters({ paths: names.map((n) => `${n}.js`), baseDir: FIXTURES, timeoutMs, log });
  return { host, lines };
}

function call(f: MilterFilter, event: keyof MilterFilter, ...args: unknown[]): Promise<unknown> {
  const m = f[event] as ((...a: unknown[]) => unknown) | undefined;
  assert.ok(m, `the proxy has no ${event}`);
  return Promise.resolve(m.call(f, ...args));
}

const INFO: ConnectInfo = { hostname: 'client.example', family: 'inet', address: '192.0.2.1', port: 40000 };

test('a proxy has exactly the event methods its module defines, plus close, which the MTA sends anyway', async (t) => {
  const { host } = await load(['recorder', 'loop']);
  t.after(() => host.close());
  assert.deepEqual(host.factories.map((f) => f.name), ['recorder.js', 'loop.js'], 'factories are named after their files, for the server\'s log');
  const [recorder, loop] = host.factories.map((f) => f());
  assert.deepEqual([...eventsOf(recorder!)].sort(), ['abort', 'close', 'connect', 'data', 'envfrom', 'envrcpt', 'eoh', 'eom', 'header', 'helo', 'body', 'unknown'].sort());
  assert.deepEqual([...eventsOf(loop!)].sort(), ['close', 'eom', 'header']);
});

test('every event reaches the filter and every verdict form comes back; eom\'s modifications are replayed in order, Buffers as Buffers', async (t) => {
  const { host, lines } = await load(['recorder']);
  t.after(() => host.close());
  const f = host.factories[0]!();
  const s = new RecordingSession({ i: '4F2A1B', j: 'mx.example.test' });
  assert.deepEqual(await call(f, 'connect', s, INFO), { result: 'continue' });
  assert.deepEqual(await call(f, 'helo', s, 'client.example'), { result: 'continue' });
  s.sender = 'alice@example.org';
  assert.deepEqual(await call(f, 'envfrom', s, 'alice@example.org', ['SIZE=123', 'BODY=8BITMIME']), { result: 'continue' });
  assert.deepEqual(await call(f, 'envrcpt', s, 'bob@example.test', []), { result: 'continue' });
  s.recipients.push('bob@example.test');
  assert.deepEqual(await call(f, 'envrcpt', s, 'reject@example.test', []), { result: 'reject', code: '550', xcode: '5.7.1', text: 'Not this one' });
  assert.deepEqual(await call(f, 'envrcpt', s, 'temp@example.test', ['NOTIFY=NEVER']), { result: 'tempfail' });
  assert.deepEqual(await call(f, 'unknown', s, 'XYZZY'), { result: 'reject' });
  assert.deepEqual(await call(f, 'data', s), { result: 'continue' });
  assert.deepEqual(await call(f, 'header', s, 'Subject', ' caf\xe9', Buffer.from(' caf\xe9', 'latin1')), { result: 'continue' });
  assert.deepEqual(await call(f, 'header', s, 'X-Verdict', ' discard', Buffer.from(' discard')), { result: 'discard' });
  assert.deepEqual(await call(f, 'eoh', s), { result: 'continue' });
  assert.deepEqual(await call(f, 'body', s, Buffer.from('line 1\r\n')), { result: 'continue' });
  assert.deepEqual(await call(f, 'body', s, Buffer.from([0x00, 0xff, 0x0d, 0x0a])), { result: 'continue' });
  assert.deepEqual(await call(f, 'eom', s), { result: 'accept' });
  assert.equal(await call(f, 'abort', s), undefined);
  assert.deepEqual(s.done, [
    'progress',
    `addHeader X-Seen: ${JSON.stringify([
      'connect client.example inet 192.0.2.1 40000', 'helo client.example', 'envfrom <alice@example.org> SIZE=123 BODY=8BITMIME',
      'envrcpt <bob@example.test>  (0 before, sender alice@example.org)', 'envrcpt <reject@example.test>  (1 before, sender alice@example.org)',
      'envrcpt <temp@example.test> NOTIFY=NEVER (1 before, sender alice@example.org)', 'unknown XYZZY', 'data',
      'header Subject', 'header X-Verdict', 'eoh', 'body 8', 'body 4', 'eom',
    ].join('; '))}`,
    'addHeader X-Macro: "i=4F2A1B j=mx.example.test missing=none"',
    'addHeader X-Buffers: "yes"',
    'insertHeader 0 X-First: Buffer<636166e9>',
    'changeHeader Subject[1]: "[seen] 12 bytes"',
    'changeHeader X-Remove[1]: deleted',
    'addRecipient archive@example.test NOTIFY=NEVER',
    'deleteRecipient old@example.test',
    'changeSender bounces@example.test -',
    'replaceBody "new body\\r\\n"',
    'replaceBody Buffer<6c696e6520310d0a00ff0d0a>',
    'quarantine held for review',
  ]);
  await call(f, 'close', s);
  await waitFor('the filter\'s console output in the log', () => (lines.some((l) => l.includes('closed after')) ? true : undefined));
  assert.ok(lines.some((l) => l.includes('milter filter recorder.js: connection from 192.0.2.1')), lines.join(''));
  assert.ok(lines.some((l) => l.includes('milter filter recorder.js: closed after 15 events')), lines.join(''));
});

test('each connection gets its own filter instance in the one worker', async (t) => {
  const { host } = await load(['loop']);
  t.after(() => host.close());
  const [a, b] = [host.factories[0]!(), host.factories[0]!()];
  const [sa, sb] = [new RecordingSession(), new RecordingSession()];
  await call(a, 'header', sa, 'Subject', 'x', Buffer.from('x'));
  await call(b, 'header', sb, 'Subject', 'y', Buffer.from('y'));
  await call(a, 'header', sa, 'To', 'z', Buffer.from('z'));
  await call(a, 'eom', sa);
  await call(b, 'eom', sb);
  assert.deepEqual(sa.done, ['addHeader X-Headers: "2"']);
  assert.deepEqual(sb.done, ['addHeader X-Headers: "1"']);
});

/** A round trip through a TCP server on this thread: it completes only while this event loop runs. */
async function mainLoopAnswers(): Promise<void> {
  const server = createServer((c) => c.end('pong'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const got = await new Promise<string>((res, rej) => {
      const c = connect((server.address() as AddressInfo).port, '127.0.0.1');
      let data = '';
      c.on('data', (d) => (data += String(d)));
      c.on('end', () => res(data));
      c.on('error', rej);
    });
    assert.equal(got, 'pong');
  } finally {
    await new Promise((r) => server.close(r));
  }
}

test('a filter in an endless loop: the call fails at milter.filter_timeout naming filter and event, the daemon\'s loop goes on meanwhile, the worker is started again', async (t) => {
  // Far above what a call takes on a loaded machine, so no working call meets it.
  const limit = 3000;
  const { host, lines } = await load(['loop'], limit);
  t.after(() => host.close());
  const stuck = host.factories[0]!();
  const other = host.factories[0]!();
  const s = new RecordingSession();
  const so = new RecordingSession();
  await call(stuck, 'header', s, 'Subject', 'fine', Buffer.from('fine'));
  await call(other, 'header', so, 'Subject', 'fine', Buffer.from('fine'));
  const started = Date.now();
  let settled = false;
  const looping = call(stuck, 'header', s, 'X-Loop', 'loop', Buffer.from('loop')).finally(() => (settled = true));
  // Queued behind the loop in the same worker: fails with it.
  const queued = call(other, 'header', so, 'To', 'x', Buffer.from('x'));
  await mainLoopAnswers();
  assert.equal(settled, false, 'the looping call settled before the main event loop answered');
  await assert.rejects(looping, /^Error: milter filter loop\.js: header failed: it took longer than milter\.filter_timeout \(3000 ms\); its worker is stopped and started again$/);
  assert.ok(Date.now() - started >= limit - 50, 'failed before the limit');
  await assert.rejects(queued, /milter filter loop\.js: header failed: its worker was stopped: header took longer than milter\.filter_timeout \(3000 ms\)/);
  // Connections whose instances lived in the stopped worker lost their state.
  await assert.rejects(call(stuck, 'eom', s), /milter filter loop\.js: eom failed: its state on this connection was lost when its worker was stopped/);
  await call(stuck, 'close', s);
  // A new connection is served by the new worker.
  const fresh = host.factories[0]!();
  const sf = new RecordingSession();
  await call(fresh, 'header', sf, 'Subject', 'again', Buffer.from('again'));
  await call(fresh, 'eom', sf);
  assert.deepEqual(sf.done, ['addHeader X-Headers: "1"']);
  assert.ok(lines.some((l) => /milter filter loop\.js: its worker was stopped: header took longer than milter\.filter_timeout \(3000 ms\); starting it again/.test(l)), lines.join(''));
});

test('a filter\'s own failures reject the call with the filter, the event and the reason; a failed eom applies none of its modifications; the worker lives on', async (t) => {
  const { host } = await load(['failing']);
  t.after(() => host.close());
  const f = host.factories[0]!();
  const s = new RecordingSession();
  await assert.rejects(call(f, 'helo', s, 'x'), /^Error: milter filter failing\.js: helo failed: helo is not welcome$/);
  await assert.rejects(call(f, 'envfrom', s, 'a@example.test', []), /^Error: milter filter failing\.js: envfrom failed: RangeError: sender out of range$/);
  await assert.rejects(call(f, 'envrcpt', s, 'b@example.test', []), /milter filter failing\.js: envrcpt failed: TypeError: milter filter returned "maybe"/);
  await assert.rejects(call(f, 'envrcpt', s, 'code@example.test', []), /milter filter failing\.js: envrcpt failed: TypeError: milter filter set code 451 with result reject: expected 5xx/);
  await assert.rejects(call(f, 'header', s, 'Subject', 'x', Buffer.from('x')), /milter filter failing\.js: header failed: TypeError: .*addHeader is not a function/);
  await assert.rejects(call(f, 'eom', s), /milter filter failing\.js: eom failed: TypeError: changeHeader index: expected an integer ≥ 0, got -1/);
  assert.deepEqual(s.done, []);
  // Same connection, same worker: still answering.
  await assert.rejects(call(f, 'helo', s, 'y'), /helo is not welcome/);
});

test('a worker that crashes (process.exit, an uncaught exception) fails its calls, its connections stay failed, new ones get a new worker', async (t) => {
  const { host, lines } = await load(['crash']);
  t.after(() => host.close());
  const a = host.factories[0]!();
  const sa = new RecordingSession();
  assert.deepEqual(await call(a, 'envfrom', sa, 'ok@example.test', []), { result: 'continue' });
  await assert.rejects(call(a, 'envfrom', sa, 'exit@example.test', []), /^Error: milter filter crash\.js: envfrom failed: its worker exited \(code 3\); the filter is started again$/);
  await assert.rejects(call(a, 'envrcpt', sa, 'r@example.test', []), /milter filter crash\.js: envrcpt failed: its state on this connection was lost when its worker exited \(code 3\)/);
  const b = host.factories[0]!();
  const sb = new RecordingSession();
  assert.deepEqual(await call(b, 'envrcpt', sb, 'r@example.test', []), { result: 'continue' }, 'a fresh instance (its first recipient)');
  await assert.rejects(call(b, 'envfrom', sb, 'throw@example.test', []), /^Error: milter filter crash\.js: envfrom failed: its worker crashed \(Error: late boom\); the filter is started again$/);
  const c = host.factories[0]!();
  assert.deepEqual(await call(c, 'envrcpt', new RecordingSession(), 'r@example.test', []), { result: 'continue' });
  assert.ok(lines.some((l) => l.includes('milter filter crash.js: its worker crashed (Error: late boom); starting it again')), lines.join(''));
});

test('a filter past its heap limit loses only its own worker, which is started again', async (t) => {
  const lines: string[] = [];
  const log = createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) });
  const host = await loadMilterFilters({ paths: ['hog.js'], baseDir: FIXTURES, timeoutMs: 60_000, log, memoryMb: 32 });
  t.after(() => host.close());
  const s = new RecordingSession();
  const f = host.factories[0]!();
  assert.deepEqual(await call(f, 'helo', s, 'x'), { result: 'continue' });
  await assert.rejects(call(f, 'envfrom', s, 'a@example.test', []), /^Error: milter filter hog\.js: envfrom failed: its worker crashed \(.*memory limit.*\); the filter is started again$/);
  assert.deepEqual(await call(host.factories[0]!(), 'helo', new RecordingSession(), 'y'), { result: 'continue' });
});

test('a reply a filter forges on parentPort is refused, and the call it names fails at once', async (t) => {
  const { host, lines } = await load(['forger'], 60_000);
  t.after(() => host.close());
  await assert.rejects(call(host.factories[0]!(), 'helo', new RecordingSession(), 'x'), /^Error: milter filter forger\.js: helo failed: its worker sent a reply that was refused: result: verdict: .*CR, LF or NUL/);
  assert.ok(lines.some((l) => l.includes('milter filter forger.js: its worker sent a message that was refused')), lines.join(''));
});

test('a module that cannot be loaded is a start error naming milter.filters[i] and the path, one line per module', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'milter-filters-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'syntax.mjs'), 'export default () => ({\n  helo(s {\n});\n');
  const paths = [
    join(FIXTURES, 'recorder.js'), join(dir, 'missing.js'), join(dir, 'syntax.mjs'), join(FIXTURES, 'no-default.js'),
    join(FIXTURES, 'not-function.js'), join(FIXTURES, 'factory-throws.js'), join(FIXTURES, 'no-events.js'), dir,
  ];
  const lines: string[] = [];
  const log = createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) });
  const err = await loadMilterFilters({ paths, baseDir: '/', timeoutMs: 10_000, log }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof MilterFilterLoadError, String(err));
  const want = [
    `milter.filters[1]: ${paths[1]}: no such file`,
    `milter.filters[2]: ${paths[2]}: syntax error at line 2: Unexpected token '{'`,
    `milter.filters[3]: ${paths[3]}: its default export is missing, not a function`,
    `milter.filters[4]: ${paths[4]}: its default export is an object, not a function`,
    `milter.filters[5]: ${paths[5]}: its factory threw: no blocklist file /etc/mailprocd/blocklist`,
    `milter.filters[6]: ${paths[6]}: its filter defines none of the methods connect,`,
    `milter.filters[7]: ${paths[7]}: not a regular file`,
  ];
  assert.equal(err.problems.length, want.length, err.message);
  want.forEach((w, i) => assert.ok(err.problems[i]?.startsWith(w), `${err.problems[i]}\n  should start with\n${w}`));
  // Relative paths are resolved against baseDir and reported as written.
  const rel = await loadMilterFilters({ paths: ['nothere.js'], baseDir: FIXTURES, timeoutMs: 10_000, log }).then(() => undefined, (e: unknown) => e);
  assert.match(String(rel), /milter\.filters\[0\]: nothere\.js: no such file/);
});

test('mailprocd does not start with a filter it cannot load: it exits 1 naming the key and the path, before anything listens', async (t) => {
  const dir = makeTestDir();
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bad = join(dir, 'bad.mjs');
  await writeFile(bad, 'export default 42;\n');
  const started = await startDaemon({ dir, config: { milter: { filters: [bad] } } }).then(
    async (d) => {
      await d.stop();
      return 'started';
    },
    (e: unknown) => String(e),
  );
  assert.match(started, /daemon exited \(1\)/);
  assert.ok(started.includes(`cannot start: milter.filters[0]: ${bad}: its default export is a number, not a function`), started);
  assert.equal(existsSync(join(dir, 'lmtp.sock')), false, 'the LMTP socket was bound');
});

test('close() fails the calls in progress and every later call', async (t) => {
  const { host } = await load(['loop'], 60_000);
  t.after(() => host.close());
  const f = host.factories[0]!();
  const s = new RecordingSession();
  await call(f, 'header', s, 'Subject', 'x', Buffer.from('x'));
  const looping = assert.rejects(call(f, 'header', s, 'X', 'loop', Buffer.from('loop')), /^Error: milter filter loop\.js: header failed: its worker was stopped with the daemon$/);
  await host.close();
  await looping;
  await assert.rejects(call(f, 'eom', s), /milter filter loop\.js: eom failed: the milter filters are stopped/);
});
