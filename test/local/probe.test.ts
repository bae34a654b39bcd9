// A probe address: signed probes are recorded with stage delays that sum to
// at most the total; unsigned, forged, replayed and unkeyed ones are
// ignored, logged and counted, and nothing of them is recorded. The store
// is a Map standing in for the state store's `probes` database; the clock is
// the real one, and no assertion depends on how fast anything ran.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createProbeLedger } from '../../src/local/probe.js';
import { createLogger } from '../../src/log.js';
import { newQueueId, type Envelope } from '../../src/mail/envelope.js';
import { parseMessage } from '../../src/mail/message.js';
import { earliestReceived, formatProbeHeader, parseProbeHeader, verifyProbe } from '../../src/mail/probe-token.js';
import type { ProbeRecord } from '../../src/state/index.js';

const KEY = 'a-test-key-of-enough-length';

function setup(key: string | undefined): { ledger: ReturnType<typeof createProbeLedger>; records: Map<string, ProbeRecord>; lines: string[] } {
  const records = new Map<string, ProbeRecord>();
  const lines: string[] = [];
  const store = {
    probes: {
      get: (id: string) => records.get(id),
      put: async (id: string, r: ProbeRecord) => { records.set(id, r); return true; },
    },
  } as unknown as Parameters<typeof createProbeLedger>[0]['store'];
  const ledger = createProbeLedger({ store, key: () => key, log: createLogger({ format: 'text', level: 'info', write: (l) => lines.push(l) }) });
  return { ledger, records, lines };
}

function envelope(arrival: Date): Envelope {
  return { queueId: newQueueId(), sender: '', helo: 'client.test', clientAddress: '127.0.0.1', protocol: 'LMTP', arrival };
}

function message(headers: string[]): ReturnType<typeof parseMessage> {
  return parseMessage(Buffer.from(`${[...headers, 'Subject: probe'].join('\r\n')}\r\n\r\nbody\r\n`));
}

const inSlot = (work: () => Promise<number>): Promise<number> => work();

void test('a signed probe is recorded, answered 250 with nothing written, and its stages sum to at most the total', async () => {
  const { ledger, records } = setup(KEY);
  const sent = Date.now() - 5000;
  // Postfix's Received line: whole seconds, a moment after the send.
  const received = new Date(sent + 1000).toUTCString().replace('GMT', '+0000 (UTC)');
  const m = message([
    `Received: from client.test (localhost [127.0.0.1])\r\n\tby mx.postfix.test (Postfix) with ESMTP id 4ABC; ${received}`,
    `X-Mailmond-Probe: ${formatProbeHeader(KEY, 'p1', sent)}`,
  ]);
  const env = envelope(new Date(sent + 3000));
  const out = await ledger.receive(env, m, 'probe@example.test', inSlot);
  assert.equal(out.status.code, '2.0.0');
  assert.equal(out.status.text, 'Probe recorded');
  assert.equal(out.relay, 'probe');
  const r = records.get('p1');
  assert.ok(r !== undefined);
  assert.equal(r.sentMs, sent);
  assert.equal(r.queueId, env.queueId);
  for (const [k, v] of Object.entries(r)) if (typeof v === 'number') assert.ok(v >= 0, `${k} = ${v}`);
  // mta: from the Received date (truncated to the second, so at most 1 s before sent + 1000) to the arrival.
  assert.ok(r.mtaMs <= 3000 && r.mtaMs >= 1000, `mtaMs ${r.mtaMs}`);
  assert.ok(r.mtaMs + r.beforeMs + r.slotMs + r.transferMs + r.workMs <= r.doneMs - r.sentMs);
  assert.deepEqual(ledger.counts(), { recorded: 1, forged: 0, replayed: 0, unkeyed: 0 });
  assert.deepEqual(ledger.find('p1'), r);
});

void test('a Received date before the send (whole seconds) never makes the stages exceed the total', async () => {
  const { ledger, records } = setup(KEY);
  const sent = Date.now() - 10;
  const m = message([`Received: by mx; ${new Date(sent - 5000).toUTCString()}`, `X-Mailmond-Probe: ${formatProbeHeader(KEY, 'p2', sent)}`]);
  await ledger.receive(envelope(new Date(sent + 5)), m, 'probe@example.test', inSlot);
  const r = records.get('p2') as ProbeRecord;
  assert.ok(r.mtaMs <= 5);
  assert.ok(r.mtaMs + r.beforeMs + r.slotMs <= r.doneMs - r.sentMs);
});

const ignored: { name: string; headers: (sent: number) => string[]; key?: string | null; reason: string }[] = [
  { name: 'no probe header', headers: () => [], reason: 'forged' },
  { name: 'a malformed header', headers: () => ['X-Mailmond-Probe: hello'], reason: 'forged' },
  { name: 'signed with another key', headers: (sent) => [`X-Mailmond-Probe: ${formatProbeHeader('another-key-of-enough-length', 'p3', sent)}`], reason: 'forged' },
  { name: 'a changed send time', headers: (sent) => [`X-Mailmond-Probe: ${formatProbeHeader(KEY, 'p3', sent).replace(/sent=\d+/, `sent=${sent - 1}`)}`], reason: 'forged' },
  { name: 'two probe headers', headers: (sent) => [`X-Mailmond-Probe: ${formatProbeHeader(KEY, 'p3', sent)}`, `X-Mailmond-Probe: ${formatProbeHeader(KEY, 'p4', sent)}`], reason: 'forged' },
  { name: 'a valid probe while probe.key is not set', headers: (sent) => [`X-Mailmond-Probe: ${formatProbeHeader(KEY, 'p3', sent)}`], key: null, reason: 'unkeyed' },
];

for (const c of ignored) {
  void test(`a message to a probe address is ignored, logged and counted: ${c.name}`, async () => {
    const { ledger, records, lines } = setup(c.key === null ? undefined : KEY);
    const out = await ledger.receive(envelope(new Date()), message(c.headers(Date.now())), 'probe@example.test', inSlot);
    assert.equal(out.status.code, '2.0.0');
    assert.equal(out.status.text, 'Probe ignored');
    assert.equal(records.size, 0);
    assert.equal(ledger.counts()[c.reason as 'forged'], 1);
    assert.equal(ledger.counts().recorded, 0);
    assert.ok(lines.some((l) => l.includes('probe to probe@example.test ignored') && l.includes(`reason=${c.reason}`)), lines.join('\n'));
  });
}

void test('a probe sent again with the same id is a replay: the first record stays', async () => {
  const { ledger, records } = setup(KEY);
  const sent = Date.now();
  const m = message([`X-Mailmond-Probe: ${formatProbeHeader(KEY, 'p5', sent)}`]);
  await ledger.receive(envelope(new Date()), m, 'probe@example.test', inSlot);
  const first = records.get('p5');
  const out = await ledger.receive(envelope(new Date()), m, 'probe@example.test', inSlot);
  assert.equal(out.status.text, 'Probe ignored');
  assert.equal(records.get('p5'), first);
  assert.deepEqual(ledger.counts(), { recorded: 1, forged: 0, replayed: 1, unkeyed: 0 });
});

void test('the probe header round-trips and earliestReceived picks the first hop', () => {
  const t = parseProbeHeader([formatProbeHeader(KEY, 'abc.DEF-1_2', 1700000000123)]);
  assert.ok(typeof t !== 'string');
  assert.deepEqual({ id: t.id, sentMs: t.sentMs }, { id: 'abc.DEF-1_2', sentMs: 1700000000123 });
  assert.ok(verifyProbe(KEY, t));
  assert.ok(!verifyProbe(`${KEY}x`, t));
  assert.equal(typeof parseProbeHeader(['id=a/b; sent=1; mac=x']), 'string');
  assert.equal(earliestReceived([
    'by b; Sat, 5 Dec 2026 07:40:05 +0000',
    'from x by a; Sat, 5 Dec 2026 07:40:01 +0000 (UTC)',
    'no date here',
  ]), Date.parse('2026-12-05T07:40:01Z'));
  assert.equal(earliestReceived(undefined), undefined);
});
