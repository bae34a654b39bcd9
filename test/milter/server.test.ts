// The milter server over real sockets (unix and TCP), driven by an MTA-side
// client built from the protocol encoders (test/helpers/milter-client.ts),
// with in-process test filters: a full conversation with every modification
// and every verdict, accept and skip across two filters, chunked packets,
// macros, garbage, clients that vanish mid-message, failing filters under
// both on_filter_error settings, the connection limit, and shutdown.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { milterConfigSchema, type MilterConfigInput } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import {
  encodeCommand, SMFIP, startMilterService,
  type EomSession, type MilterFilter, type MilterFilterFactory, type MilterReply, type MilterService, type MilterSession,
} from '../../src/milter/index.js';
import { MilterClient, POSTFIX_OFFER } from '../helpers/milter-client.js';

interface TestMilter {
  readonly service: MilterService;
  readonly port: number;
  readonly socketPath: string;
  readonly logLines: string[];
  client(via?: 'tcp' | 'unix'): Promise<MilterClient>;
  /** Resolves when a log line matching re is written (30 s hang detector). */
  waitForLog(re: RegExp): Promise<string>;
}

async function startMilter(t: TestContext, filters: MilterFilterFactory[], config: MilterConfigInput = {}): Promise<TestMilter> {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-milter-'));
  const socketPath = join(dir, 'run', 'milter.sock');
  const logLines: string[] = [];
  const watchers: { re: RegExp; resolve: (l: string) => void }[] = [];
  const log = createLogger({
    format: 'text', level: 'debug',
    write: (line) => {
      logLines.push(line);
      for (const w of [...watchers]) if (w.re.test(line)) { watchers.splice(watchers.indexOf(w), 1); w.resolve(line); }
    },
  });
  const service = await startMilterService({
    config: milterConfigSchema.parse({ listen: ['127.0.0.1:0', `unix:${socketPath}`], ...config }), log, baseDir: dir, filters,
  });
  const clients: MilterClient[] = [];
  t.after(async () => {
    for (const c of clients) c.destroy();
    await service.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const port = service.listening.find((l) => l.kind === 'tcp')?.port ?? 0;
  return {
    service, port, socketPath, logLines,
    async client(via = 'tcp') {
      const c = await MilterClient.connect(via === 'tcp' ? { port } : { path: socketPath });
      clients.push(c);
      return c;
    },
    waitForLog(re) {
      const seen = logLines.find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no log line ${re}:\n${logLines.join('')}`)), 30_000);
        watchers.push({ re, resolve: (l) => { clearTimeout(timer); resolve(l); } });
      });
    },
  };
}

/** Replies as comparable plain values (Buffers as text). */
function show(replies: readonly MilterReply[]): unknown[] {
  return replies.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Buffer.isBuffer(v) ? `bytes:${v.toString('latin1')}` : v])));
}

const CONNECT = { kind: 'connect', hostname: 'client.example', family: 'inet', port: 40000, address: '192.0.2.7' } as const;

/** Sends MAIL, and RCPT for each recipient, expecting continue for each. */
async function envelope(c: MilterClient, sender: string, rcpts: readonly string[]): Promise<void> {
  assert.deepEqual(show([await c.decision({ kind: 'mail', sender: `<${sender}>`, args: [] })]), [{ kind: 'continue' }]);
  for (const r of rcpts) assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: `<${r}>`, args: [] })]), [{ kind: 'continue' }], r);
}

test('a full conversation over the unix socket: every event reaches the filter as sent, every modification comes back before the decision', async (t) => {
  const seen: unknown[] = [];
  let instances = 0;
  const filter: MilterFilterFactory = () => {
    instances++;
    return {
      connect: (s, info) => void seen.push(['connect', info, s.macro('j'), s.macro('{daemon_name}')]),
      helo: (_s, name) => void seen.push(['helo', name]),
      envfrom: (s, sender, args) => void seen.push(['envfrom', sender, args, s.macro('{mail_addr}')]),
      envrcpt: (s, rcpt, args) => void seen.push(['envrcpt', rcpt, args, s.macro('{rcpt_addr}'), [...s.recipients]]),
      data: () => void seen.push(['data']),
      header: (_s, name, value, raw) => void seen.push(['header', name, value, raw.toString('hex')]),
      eoh: () => void seen.push(['eoh']),
      body: (_s, chunk) => void seen.push(['body', chunk.toString('latin1')]),
      eom: (s: EomSession) => {
        seen.push(['eom', s.sender, [...s.recipients], s.macro('i'), s.macro('{i}'), s.macro('j')]);
        s.progress();
        s.addHeader('X-Spam-Status', 'No, score=0.1');
        s.insertHeader(0, 'X-First', Buffer.from([0x61, 0xff]));
        s.changeHeader('X-Old', 1, null);
        s.changeHeader('Subject', 2, 'new\r\n\tfolded');
        s.addRecipient('carol@example.org');
        s.addRecipient('dave@example.org', 'NOTIFY=NEVER');
        s.deleteRecipient('bob@example.org');
        s.changeSender('bounce@example.org', 'SIZE=100');
        s.replaceBody(Buffer.alloc(70000, 0x78));
        s.quarantine('held for review');
        return 'continue';
      },
      abort: () => void seen.push(['abort']),
      close: () => void seen.push(['close']),
    };
  };
  const m = await startMilter(t, [filter]);
  const c = await m.client('unix');
  const neg = await c.negotiate();
  assert.deepEqual({ version: neg.version, actions: neg.actions, protocol: neg.protocol }, { version: 6, actions: 0xff, protocol: SMFIP.NOUNKNOWN | SMFIP.SKIP | SMFIP.HDR_LEADSPC }, 'every event it handles asked for, every modification but SETSYMLIST');

  c.send({ kind: 'macro', stage: 'C', macros: [['j', 'mx.example.org'], ['{daemon_name}', 'smtpd']] });
  assert.deepEqual(show([await c.decision(CONNECT)]), [{ kind: 'continue' }]);
  assert.deepEqual(show([await c.decision({ kind: 'helo', name: 'client.example' })]), [{ kind: 'continue' }]);
  c.send({ kind: 'macro', stage: 'M', macros: [['{mail_addr}', 'alice@example.org']] });
  assert.deepEqual(show([await c.decision({ kind: 'mail', sender: '<alice@example.org>', args: ['SIZE=1234', 'BODY=8BITMIME'] })]), [{ kind: 'continue' }]);
  for (const r of ['bob@example.org', 'eve@example.org']) {
    c.send({ kind: 'macro', stage: 'R', macros: [['{rcpt_addr}', r]] });
    assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: `<${r}>`, args: [] })]), [{ kind: 'continue' }]);
  }
  assert.deepEqual(show([await c.decision({ kind: 'data' })]), [{ kind: 'continue' }]);
  c.send({ kind: 'macro', stage: 'N', macros: [['i', '4Q1abc']] });
  const headers: [string, Buffer][] = [
    ['Subject', Buffer.from(' caf\xe9\n\tsecond line', 'latin1')],
    ['X-No-Space', Buffer.from('tight')],
    ['X-Tab', Buffer.from('\tvalue')],
  ];
  for (const [name, value] of headers) assert.deepEqual(show([await c.decision({ kind: 'header', name, value })]), [{ kind: 'continue' }], name);
  assert.deepEqual(show([await c.decision({ kind: 'eoh' })]), [{ kind: 'continue' }]);
  for (const chunk of ['Hello,\r\n', 'world.\r\n']) assert.deepEqual(show([await c.decision({ kind: 'body', chunk: Buffer.from(chunk) })]), [{ kind: 'continue' }]);
  const eom = await c.ask({ kind: 'eob', chunk: Buffer.alloc(0) });

  assert.deepEqual(show(eom), [
    { kind: 'progress' },
    { kind: 'addheader', name: 'X-Spam-Status', value: 'bytes: No, score=0.1' },
    { kind: 'insheader', index: 0, name: 'X-First', value: 'bytes: a\xff' },
    { kind: 'chgheader', index: 1, name: 'X-Old', value: 'bytes:' },
    { kind: 'chgheader', index: 2, name: 'Subject', value: 'bytes: new\r\n\tfolded' },
    { kind: 'addrcpt', recipient: '<carol@example.org>' },
    { kind: 'addrcpt_par', recipient: '<dave@example.org>', args: 'NOTIFY=NEVER' },
    { kind: 'delrcpt', recipient: '<bob@example.org>' },
    { kind: 'chgfrom', sender: '<bounce@example.org>', args: 'SIZE=100' },
    { kind: 'replbody', chunk: `bytes:${'x'.repeat(65535)}` },
    { kind: 'replbody', chunk: `bytes:${'x'.repeat(70000 - 65535)}` },
    { kind: 'quarantine', reason: 'held for review' },
    { kind: 'accept' },
  ]);
  c.send({ kind: 'quit' });
  await c.closed();
  await m.waitForLog(/milter .*: QUIT/);

  assert.deepEqual(seen, [
    ['connect', { hostname: 'client.example', family: 'inet', address: '192.0.2.7', port: 40000 }, 'mx.example.org', 'smtpd'],
    ['helo', 'client.example'],
    ['envfrom', 'alice@example.org', ['SIZE=1234', 'BODY=8BITMIME'], 'alice@example.org'],
    ['envrcpt', 'bob@example.org', [], 'bob@example.org', []],
    ['envrcpt', 'eve@example.org', [], 'eve@example.org', ['bob@example.org']],
    ['data'],
    // With HDR_LEADSPC the MTA sends the bytes after the colon; one leading space is taken off, nothing else.
    ['header', 'Subject', 'caf\xe9\n\tsecond line', Buffer.from('caf\xe9\n\tsecond line', 'latin1').toString('hex')],
    ['header', 'X-No-Space', 'tight', Buffer.from('tight').toString('hex')],
    ['header', 'X-Tab', '\tvalue', Buffer.from('\tvalue').toString('hex')],
    ['eoh'],
    ['body', 'Hello,\r\n'],
    ['body', 'world.\r\n'],
    ['eom', 'alice@example.org', ['bob@example.org', 'eve@example.org'], '4Q1abc', '4Q1abc', 'mx.example.org'],
    ['close'],
  ]);
  assert.equal(instances, 1);
});

test('over TCP: a short conversation, and the unix socket has mode 0660', async (t) => {
  const m = await startMilter(t, [() => ({ envrcpt: (_s, r) => (r.startsWith('no') ? 'reject' : undefined) })]);
  assert.equal(statSync(m.socketPath).mode & 0o777, 0o660);
  const c = await m.client('tcp');
  const neg = await c.negotiate();
  // Only envrcpt is handled: every other event is switched off, no modifications asked.
  assert.equal(neg.actions, 0);
  assert.equal(neg.protocol & SMFIP.NORCPT, 0);
  assert.equal(neg.protocol & SMFIP.NOBODY, SMFIP.NOBODY);
  assert.equal(neg.protocol & SMFIP.NOHDRS, SMFIP.NOHDRS);
  assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<nobody@example.org>', args: [] })]), [{ kind: 'reject' }]);
  assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<yes@example.org>', args: [] })]), [{ kind: 'continue' }]);
  assert.deepEqual(show([await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) })]), [{ kind: 'accept' }]);
});

test('verdicts: custom codes, a refused recipient is refused alone, bare reject/tempfail/discard', async (t) => {
  let eomRecipients: string[] = [];
  const m = await startMilter(t, [() => ({
    helo: (_s, name) => (name === 'bad.example' ? 'tempfail' : undefined),
    envfrom: (_s, sender) => (sender === 'spammer@example.net' ? 'reject' : sender === 'busy@example.net' ? { result: 'tempfail', text: 'Try 100% later' } : undefined),
    envrcpt: (_s, rcpt) => (rcpt === 'gone@example.org' ? { result: 'reject', code: '550', xcode: '5.1.1', text: 'No such user here' } : rcpt === 'full@example.org' ? { result: 'tempfail', code: '452', xcode: '4.2.2' } : undefined),
    eom: (s) => {
      eomRecipients = [...s.recipients];
      return s.sender === 'trash@example.net' ? 'discard' : s.sender === 'worse@example.net' ? { result: 'reject', xcode: '5.7.0' } : 'continue';
    },
  })]);
  const c = await m.client();
  await c.negotiate();
  assert.deepEqual(show([await c.decision({ kind: 'helo', name: 'good.example' })]), [{ kind: 'continue' }]);
  assert.deepEqual(show([await c.decision({ kind: 'mail', sender: '<spammer@example.net>', args: [] })]), [{ kind: 'reject' }]);
  assert.deepEqual(show([await c.decision({ kind: 'mail', sender: '<busy@example.net>', args: [] })]), [{ kind: 'replycode', text: '451 4.7.1 Try 100%% later' }]);
  assert.deepEqual(show([await c.decision({ kind: 'mail', sender: '<alice@example.org>', args: [] })]), [{ kind: 'continue' }]);
  assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<gone@example.org>', args: [] })]), [{ kind: 'replycode', text: '550 5.1.1 No such user here' }]);
  assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<full@example.org>', args: [] })]), [{ kind: 'replycode', text: '452 4.2.2 Service unavailable - try again later' }]);
  assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<bob@example.org>', args: [] })]), [{ kind: 'continue' }], 'the next recipient is not refused');
  assert.deepEqual(show([await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) })]), [{ kind: 'accept' }]);
  assert.deepEqual(eomRecipients, ['bob@example.org'], 'refused recipients are not in the message');
  await envelope(c, 'trash@example.net', ['bob@example.org']);
  assert.deepEqual(show([await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) })]), [{ kind: 'discard' }]);
  await envelope(c, 'worse@example.net', ['bob@example.org']);
  assert.deepEqual(show([await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) })]), [{ kind: 'replycode', text: '550 5.7.0 Command rejected' }]);
  // A tempfail at HELO refuses the SMTP session: what follows gets the same answer.
  assert.deepEqual(show([await c.decision({ kind: 'helo', name: 'bad.example' })]), [{ kind: 'tempfail' }]);
  assert.deepEqual(show([await c.decision({ kind: 'mail', sender: '<alice@example.org>', args: [] })]), [{ kind: 'tempfail' }]);
});

test('accept and skip with two filters: an accepting filter is asked no more this message; the MTA hears accept only when both have', async (t) => {
  const asked: string[] = [];
  const first: MilterFilterFactory = () => ({
    envfrom: () => { asked.push('A envfrom'); return 'accept'; },
    envrcpt: () => void asked.push('A envrcpt'),
    body: () => { asked.push('A body'); return 'skip'; },
    eom: () => void asked.push('A eom'),
  });
  const second: MilterFilterFactory = () => ({
    envrcpt: (_s, r) => { asked.push(`B envrcpt ${r}`); return r === 'last@example.org' ? 'accept' : 'continue'; },
    body: (_s, chunk) => { asked.push(`B body ${chunk.toString()}`); return chunk.toString() === 'enough' ? 'skip' : undefined; },
    eom: () => void asked.push('B eom'),
  });
  const m = await startMilter(t, [first, second]);
  const c = await m.client();
  await c.negotiate();
  assert.deepEqual(show([await c.decision({ kind: 'mail', sender: '<a@example.org>', args: [] })]), [{ kind: 'continue' }], 'A accepted, B has not');
  assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<one@example.org>', args: [] })]), [{ kind: 'continue' }]);
  assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<last@example.org>', args: [] })]), [{ kind: 'accept' }], 'now both have');
  assert.deepEqual(asked, ['A envfrom', 'B envrcpt one@example.org', 'B envrcpt last@example.org']);

  // The next message asks both again: A accepts at envfrom again and is out; B reads the body until it skips.
  asked.length = 0;
  assert.deepEqual(show([await c.decision({ kind: 'mail', sender: '<b@example.org>', args: [] })]), [{ kind: 'continue' }]);
  assert.deepEqual(asked, ['A envfrom']);
  asked.length = 0;
  assert.deepEqual(show([await c.decision({ kind: 'body', chunk: Buffer.from('one') })]), [{ kind: 'continue' }]);
  assert.deepEqual(show([await c.decision({ kind: 'body', chunk: Buffer.from('enough') })]), [{ kind: 'skip' }], 'every body reader still in has skipped');
  assert.deepEqual(show([await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) })]), [{ kind: 'accept' }]);
  assert.deepEqual(asked, ['B body one', 'B body enough', 'B eom']);
});

test('skip: one filter skips the body, the other still gets every chunk; SMFIR_SKIP only when the MTA offered it', async (t) => {
  const asked: string[] = [];
  const skipper: MilterFilterFactory = () => ({ body: (_s, chunk) => { asked.push(`A ${chunk.toString()}`); return 'skip'; } });
  const reader: MilterFilterFactory = () => ({ body: (_s, chunk) => { asked.push(`B ${chunk.toString()}`); return chunk.toString() === '3' ? 'skip' : 'continue'; } });
  const m = await startMilter(t, [skipper, reader]);
  for (const offer of [POSTFIX_OFFER, { ...POSTFIX_OFFER, protocol: POSTFIX_OFFER.protocol & ~SMFIP.SKIP }]) {
    asked.length = 0;
    const c = await m.client();
    await c.negotiate(offer);
    // Only the body is handled: MAIL and RCPT come without replies (NR_MAIL, NR_RCPT).
    c.send({ kind: 'mail', sender: '<a@example.org>', args: [] });
    c.send({ kind: 'rcpt', recipient: '<b@example.org>', args: [] });
    const got: MilterReply[] = [];
    for (const chunk of ['1', '2', '3']) got.push(await c.decision({ kind: 'body', chunk: Buffer.from(chunk) }));
    const skip = (offer.protocol & SMFIP.SKIP) !== 0;
    assert.deepEqual(show(got), [{ kind: 'continue' }, { kind: 'continue' }, { kind: skip ? 'skip' : 'continue' }]);
    if (!skip) assert.deepEqual(show([await c.decision({ kind: 'body', chunk: Buffer.from('4') })]), [{ kind: 'continue' }], 'past SKIP the MTA keeps sending; nobody reads it');
    assert.deepEqual(show([await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) })]), [{ kind: 'accept' }]);
    assert.deepEqual(asked, ['A 1', 'B 1', 'B 2', 'B 3']);
    c.destroy();
  }
});

test('packets cut into single bytes and many packets in one write are answered the same', async (t) => {
  const bodies: string[] = [];
  const m = await startMilter(t, [() => ({ body: (_s, chunk) => void bodies.push(chunk.toString('latin1')), eom: () => 'accept' })]);
  const c = await m.client();
  await c.negotiate();
  const big = Buffer.alloc(65535, 0x62);
  // One write: MAIL, RCPT and three body chunks (MAIL/RCPT are sent without replies: only eom and body are handled).
  c.sendRaw(Buffer.concat([
    encodeCommand({ kind: 'mail', sender: '<a@example.org>', args: [] }),
    encodeCommand({ kind: 'rcpt', recipient: '<b@example.org>', args: [] }),
    encodeCommand({ kind: 'body', chunk: Buffer.from('first\r\n') }),
    encodeCommand({ kind: 'body', chunk: big }),
  ]));
  assert.deepEqual(show([await c.reply(), await c.reply()]), [{ kind: 'continue' }, { kind: 'continue' }]);
  // One packet a byte at a time.
  const last = encodeCommand({ kind: 'body', chunk: Buffer.from('last\r\n') });
  for (const b of last) c.sendRaw(Buffer.from([b]));
  assert.deepEqual(show([await c.reply()]), [{ kind: 'continue' }]);
  assert.deepEqual(show([await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) })]), [{ kind: 'accept' }]);
  assert.deepEqual(bodies, ['first\r\n', big.toString('latin1'), 'last\r\n']);
  assert.equal(c.pending, 0, 'no reply for MAIL and RCPT (negotiated NR_MAIL, NR_RCPT)');
});

test('macros: later stages overwrite, a new message forgets the previous one\'s, connection macros stay', async (t) => {
  const got: unknown[] = [];
  const m = await startMilter(t, [() => ({
    envrcpt: (s: MilterSession) => void got.push([s.macro('i'), s.macro('{rcpt_addr}'), s.macro('rcpt_addr'), s.macro('j')]),
  })]);
  const c = await m.client();
  await c.negotiate();
  c.send({ kind: 'macro', stage: 'C', macros: [['j', 'mx']] });
  c.send({ kind: 'macro', stage: 'M', macros: [['{i}', 'Q1']] });
  c.send({ kind: 'mail', sender: '<a@x>', args: [] });
  c.send({ kind: 'macro', stage: 'R', macros: [['{rcpt_addr}', 'b@x']] });
  await c.decision({ kind: 'rcpt', recipient: '<b@x>', args: [] });
  c.send({ kind: 'macro', stage: 'R', macros: [['{rcpt_addr}', 'c@x']] });
  await c.decision({ kind: 'rcpt', recipient: '<c@x>', args: [] });
  c.send({ kind: 'abort' });
  c.send({ kind: 'macro', stage: 'M', macros: [] });
  c.send({ kind: 'mail', sender: '<a@x>', args: [] });
  await c.decision({ kind: 'rcpt', recipient: '<d@x>', args: [] });
  assert.deepEqual(got, [['Q1', 'b@x', 'b@x', 'mx'], ['Q1', 'c@x', 'c@x', 'mx'], [undefined, undefined, undefined, 'mx']]);
});

test('garbage closes that connection, logged once; the server goes on serving the others', async (t) => {
  const m = await startMilter(t, [() => ({ envrcpt: () => 'continue' })]);
  const good = await m.client();
  await good.negotiate();
  const cases: { bytes: Buffer; log: RegExp }[] = [
    { bytes: Buffer.from('GET / HTTP/1.0\r\n\r\n'), log: /protocol error: packet length 1195725856 is over the limit of 1048576 bytes; connection closed/ },
    { bytes: Buffer.from([0, 0, 0, 0]), log: /protocol error: packet length 0/ },
    { bytes: Buffer.from([0, 0, 0, 2, 0x5a, 0]), log: /protocol error: unknown command 'Z'/ },
    { bytes: encodeCommand({ kind: 'helo', name: 'x' }), log: /protocol error: HELO before option negotiation/ },
  ];
  for (const g of cases) {
    const bad = await m.client();
    bad.sendRaw(g.bytes);
    await bad.closed();
    await m.waitForLog(g.log);
    assert.deepEqual(show([await good.decision({ kind: 'rcpt', recipient: '<a@b>', args: [] })]), [{ kind: 'continue' }], 'the other connection is served');
  }
  // A field cut short inside a well-framed packet, after negotiation.
  const cut = await m.client();
  await cut.negotiate();
  cut.sendRaw(Buffer.from([0, 0, 0, 4, 0x52, 0x3c, 0x61, 0x3e]));
  await cut.closed();
  await m.waitForLog(/protocol error: SMFIC_RCPT: recipient is not NUL-terminated/);
  assert.equal(m.logLines.filter((l) => /protocol error: SMFIC_RCPT/.test(l)).length, 1, 'logged once');
});

test('a client that disconnects mid-message: the filter gets abort and close, once each', async (t) => {
  const calls: string[] = [];
  let closed!: () => void;
  const done = new Promise<void>((resolve) => { closed = resolve; });
  const m = await startMilter(t, [() => ({
    body: () => void calls.push('body'),
    abort: () => void calls.push('abort'),
    close: () => { calls.push('close'); closed(); },
  })]);
  const c = await m.client();
  await c.negotiate();
  c.send({ kind: 'mail', sender: '<a@x>', args: [] });
  c.send({ kind: 'rcpt', recipient: '<b@x>', args: [] });
  assert.deepEqual(show([await c.decision({ kind: 'body', chunk: Buffer.from('part') })]), [{ kind: 'continue' }]);
  // Half a packet, then gone.
  c.sendRaw(encodeCommand({ kind: 'body', chunk: Buffer.from('more') }).subarray(0, 6));
  c.destroy();
  await done;
  assert.deepEqual(calls, ['body', 'abort', 'close']);
  // A connection closed between messages gets close only.
  calls.length = 0;
  const again = new Promise<void>((resolve) => { closed = resolve; });
  const d = await m.client();
  await d.negotiate();
  d.end();
  await again;
  assert.deepEqual(calls, ['close']);
});

for (const onError of ['tempfail', 'continue'] as const) {
  test(`a filter that throws, rejects, times out or returns nonsense: on_filter_error ${onError}`, async (t) => {
    const failing: MilterFilterFactory = function brokenFilter(): MilterFilter {
      return {
        envfrom: () => { throw new Error('boom'); },
        envrcpt: (_s, r) => (r === 'slow@x' ? new Promise(() => { /* never answers */ }) : Promise.reject(new Error('async boom'))),
        header: () => 'maybe' as never,
        eom: (s) => {
          s.addHeader('X-Half', 'made');
          throw new Error('late boom');
        },
      };
    };
    const after: string[] = [];
    const next: MilterFilterFactory = () => ({ envfrom: () => void after.push('next envfrom'), eom: (s) => { s.addHeader('X-Next', 'ok'); } });
    const m = await startMilter(t, [failing, next], { on_filter_error: onError, filter_timeout: '300ms' });
    const c = await m.client();
    await c.negotiate();
    const want = onError === 'tempfail' ? 'tempfail' : 'continue';
    assert.deepEqual(show([await c.decision({ kind: 'mail', sender: '<a@x>', args: [] })]), [{ kind: want }]);
    assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<b@x>', args: [] })]), [{ kind: want }]);
    assert.deepEqual(show([await c.decision({ kind: 'rcpt', recipient: '<slow@x>', args: [] })]), [{ kind: want }]);
    assert.deepEqual(show([await c.decision({ kind: 'header', name: 'Subject', value: Buffer.from(' hi') })]), [{ kind: want }]);
    const eom = await c.ask({ kind: 'eob', chunk: Buffer.alloc(0) });
    // A failed filter's half-made changes are dropped; continue lets the next filter have its say.
    assert.deepEqual(show(eom), onError === 'tempfail' ? [{ kind: 'tempfail' }] : [{ kind: 'addheader', name: 'X-Next', value: 'bytes: ok' }, { kind: 'accept' }]);
    assert.deepEqual(after, onError === 'tempfail' ? [] : ['next envfrom']);
    await m.waitForLog(/error: milter .*: filter brokenFilter envfrom failed: boom; milter\.on_filter_error is/);
    await m.waitForLog(/filter brokenFilter envrcpt failed: async boom/);
    await m.waitForLog(/filter brokenFilter envrcpt failed: no answer within 300 ms \(milter\.filter_timeout\)/);
    await m.waitForLog(/filter brokenFilter header failed: milter filter returned "maybe"/);
    await m.waitForLog(/filter brokenFilter eom failed: late boom/);
  });
}

test('a header value that would start a new header is refused as the filter\'s failure; a folded one goes through', async (t) => {
  const m = await startMilter(t, [() => ({
    eom: (s) => {
      s.addHeader('X-Folded', 'one\r\n\ttwo');
      if (s.sender === 'evil@x') s.addHeader('X-Report', 'ok\r\nBcc: victim@example.org');
    },
  })]);
  const c = await m.client();
  await c.negotiate();
  c.send({ kind: 'mail', sender: '<good@x>', args: [] });
  assert.deepEqual(show(await c.ask({ kind: 'eob', chunk: Buffer.alloc(0) })), [{ kind: 'addheader', name: 'X-Folded', value: 'bytes: one\r\n\ttwo' }, { kind: 'accept' }]);
  c.send({ kind: 'mail', sender: '<evil@x>', args: [] });
  assert.deepEqual(show(await c.ask({ kind: 'eob', chunk: Buffer.alloc(0) })), [{ kind: 'tempfail' }]);
  await m.waitForLog(/eom failed: filter filter 1: header value has a line break that is not folding/);
});

test('a filter factory that throws: the connection is refused at connect under tempfail', async (t) => {
  const m = await startMilter(t, [() => { throw new Error('cannot start'); }]);
  const c = await m.client();
  const neg = await c.negotiate();
  assert.equal(neg.protocol & SMFIP.NOCONNECT, 0, 'connect is asked for, to answer it');
  assert.deepEqual(show([await c.decision(CONNECT)]), [{ kind: 'tempfail' }]);
  await m.waitForLog(/filter filter 1 could not be created: cannot start/);
});

test('limits.connections: one over the limit is closed at once and logged; room again once one leaves', async (t) => {
  const m = await startMilter(t, [() => ({ envrcpt: () => 'continue' })], { limits: { connections: 2 } });
  const a = await m.client();
  const b = await m.client();
  await a.negotiate();
  await b.negotiate();
  const c = await m.client();
  await c.closed();
  await m.waitForLog(/milter 127\.0\.0\.1:0: 2 connections \(milter\.limits\.connections\); new connection from 127\.0\.0\.1 closed/);
  a.send({ kind: 'quit' });
  await a.closed();
  // The server has let it go when its filters are closed; a new client may then need a retry while the count drops.
  await m.waitForLog(/QUIT/);
  let d: MilterClient | undefined;
  for (let i = 0; i < 100 && d === undefined; i++) {
    const tryIt = await m.client();
    try {
      await tryIt.negotiate();
      d = tryIt;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  assert.ok(d, 'a new connection is served once one has left');
  assert.deepEqual(show([await d.decision({ kind: 'rcpt', recipient: '<a@b>', args: [] })]), [{ kind: 'continue' }]);
});

test('QUIT_NC starts a new SMTP session on the same connection with new filter instances', async (t) => {
  let made = 0;
  const closes: number[] = [];
  const m = await startMilter(t, [() => {
    const n = ++made;
    return { helo: () => (n === 1 ? 'reject' : 'continue'), close: () => void closes.push(n) };
  }]);
  const c = await m.client();
  await c.negotiate();
  assert.deepEqual(show([await c.decision({ kind: 'helo', name: 'x' })]), [{ kind: 'reject' }]);
  c.send({ kind: 'quit_nc' });
  assert.deepEqual(show([await c.decision({ kind: 'helo', name: 'x' })]), [{ kind: 'continue' }], 'the refusal was the old session\'s');
  assert.deepEqual([made, closes], [2, [1]]);
});

test('close(): connections end, filters get close, the unix socket stops answering', async (t) => {
  let closed = 0;
  const m = await startMilter(t, [() => ({ envrcpt: () => 'continue', close: () => { closed++; } })]);
  const c = await m.client('unix');
  await c.negotiate();
  await m.service.close();
  await c.closed();
  assert.equal(closed, 1);
  await assert.rejects(MilterClient.connect({ path: m.socketPath }));
});

test('limits.packet_size: a body chunk over it closes that connection, logged; one at the limit is read', async (t) => {
  const m = await startMilter(t, [() => ({ body: () => 'continue' })], { limits: { packet_size: '2k' } });
  const ok = await m.client();
  await ok.negotiate();
  // command byte + 2047 bytes = 2048, the limit.
  assert.deepEqual(show([await ok.decision({ kind: 'body', chunk: Buffer.alloc(2047, 0x61) })]), [{ kind: 'continue' }]);
  const big = await m.client();
  await big.negotiate();
  big.send({ kind: 'body', chunk: Buffer.alloc(4096, 0x61) });
  await big.closed();
  await m.waitForLog(/protocol error: packet length 4097 is over the limit of 2048 bytes; connection closed/);
  assert.deepEqual(show([await ok.decision({ kind: 'body', chunk: Buffer.from('still here') })]), [{ kind: 'continue' }]);
});

test('limits.idle_timeout: a connection the MTA leaves silent is closed, its filters closed', async (t) => {
  let closed!: () => void;
  const done = new Promise<void>((resolve) => { closed = resolve; });
  const m = await startMilter(t, [() => ({ envrcpt: () => 'continue', close: () => closed() })], { limits: { idle_timeout: '200ms' } });
  const c = await m.client();
  await c.negotiate();
  await c.closed();
  await done;
  await m.waitForLog(/nothing from the MTA for 200 ms \(milter\.limits\.idle_timeout\); closing/);
});

test('progress reaches the MTA while a slow eom is still working; the decision follows when it is done', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => { release = resolve; });
  const m = await startMilter(t, [() => ({
    eom: async (s) => {
      s.progress();
      await gate;
      s.progress();
      s.addHeader('X-Checked', 'late');
      return 'accept' as const;
    },
  })]);
  const c = await m.client();
  await c.negotiate();
  c.send({ kind: 'eob', chunk: Buffer.alloc(0) });
  assert.deepEqual(show([await c.reply()]), [{ kind: 'progress' }], 'sent while the filter waits');
  assert.equal(c.pending, 0, 'nothing else yet');
  release();
  assert.deepEqual(show(await c.untilDecision()), [{ kind: 'progress' }, { kind: 'addheader', name: 'X-Checked', value: 'bytes: late' }, { kind: 'accept' }]);
});
