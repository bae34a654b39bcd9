// The milter wire format (src/milter/protocol.ts), pure: golden byte
// sequences for every MTA command and every milter reply (parsed and encoded
// both ways), one packet split across many chunks and many packets in one
// chunk, option negotiation, and garbage answered with a clear reason.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  encodeCommand, encodeReply, formatReplyCode, negotiate, PacketDecoder, parseCommand, parseReply, SMFIF, SMFIP,
  type DecodedPacket, type MilterReply, type MtaCommand,
} from '../../src/milter/protocol.js';

/** Hex with spaces, as the golden bytes are written. */
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/**
 * A packet built by hand, independently of the encoder: length, command
 * character, then the parts (strings as latin1 bytes, NULs written out as \0).
 */
function frame(cmd: string, ...parts: (string | Buffer)[]): Buffer {
  const body = Buffer.concat([Buffer.from(cmd, 'latin1'), ...parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p))]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

function onePacket(bytes: Buffer): { command: number; data: Buffer } {
  const got = new PacketDecoder(1 << 20).push(bytes);
  assert.equal(got.length, 1, `one packet from ${bytes.toString('hex')}`);
  const p = got[0] as DecodedPacket;
  assert.equal(p.kind, 'packet');
  return p as { command: number; data: Buffer };
}

/** Records compared with Buffers as hex, so a failure shows which bytes differ. */
function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x: unknown) => (x !== null && typeof x === 'object' && (x as { type?: string }).type === 'Buffer' ? `hex:${Buffer.from((x as { data: number[] }).data).toString('hex')}` : x)));
}

// Postfix 3.x's opening: version 6, every action (0x1ff), every protocol step of v6 (0x1fffff).
const POSTFIX_OPTNEG = hex('0000000d 4f 00000006 000001ff 001fffff');

const COMMANDS: { name: string; bytes: Buffer; want: MtaCommand }[] = [
  { name: 'OPTNEG as Postfix opens', bytes: POSTFIX_OPTNEG, want: { kind: 'optneg', version: 6, actions: 0x1ff, protocol: 0x1fffff } },
  {
    name: 'MACRO before CONNECT, two pairs', bytes: frame('D', 'C', 'j\0mx.example.org\0{daemon_name}\0smtpd\0'),
    want: { kind: 'macro', stage: 'C', macros: [['j', 'mx.example.org'], ['{daemon_name}', 'smtpd']] },
  },
  { name: 'MACRO before RCPT', bytes: frame('D', 'R', '{rcpt_addr}\0bob@example.org\0'), want: { kind: 'macro', stage: 'R', macros: [['{rcpt_addr}', 'bob@example.org']] } },
  { name: 'MACRO with no macros', bytes: frame('D', 'E'), want: { kind: 'macro', stage: 'E', macros: [] } },
  {
    name: 'CONNECT inet: hostname, family 4, port 12345, address',
    bytes: hex('0000001f 43 6d61696c2e6578616d706c652e6f726700 34 3039 3139322e302e322e3100'),
    want: { kind: 'connect', hostname: 'mail.example.org', family: 'inet', port: 12345, address: '192.0.2.1' },
  },
  {
    name: 'CONNECT inet6', bytes: frame('C', '[2001:db8::1]\0', '6', hex('01bb'), '2001:db8::1\0'),
    want: { kind: 'connect', hostname: '[2001:db8::1]', family: 'inet6', port: 443, address: '2001:db8::1' },
  },
  { name: 'CONNECT unix (L), port 0', bytes: frame('C', 'localhost\0', 'L', hex('0000'), '/run/sock\0'), want: { kind: 'connect', hostname: 'localhost', family: 'unix', port: 0, address: '/run/sock' } },
  { name: 'CONNECT unknown family without port or address', bytes: frame('C', 'unknown\0', 'U'), want: { kind: 'connect', hostname: 'unknown', family: 'unknown', port: 0, address: '' } },
  { name: 'HELO', bytes: frame('H', 'client.example\0'), want: { kind: 'helo', name: 'client.example' } },
  {
    name: 'MAIL with ESMTP args, brackets kept', bytes: frame('M', '<alice@example.org>\0SIZE=1234\0BODY=8BITMIME\0'),
    want: { kind: 'mail', sender: '<alice@example.org>', args: ['SIZE=1234', 'BODY=8BITMIME'] },
  },
  { name: 'MAIL with the null sender', bytes: frame('M', '<>\0'), want: { kind: 'mail', sender: '<>', args: [] } },
  { name: 'RCPT with a UTF-8 address', bytes: frame('R', Buffer.from('<jörg@example.org>\0NOTIFY=NEVER\0', 'utf8')), want: { kind: 'rcpt', recipient: '<jörg@example.org>', args: ['NOTIFY=NEVER'] } },
  {
    name: 'HEADER: value bytes kept exactly (leading space, folding, 8-bit)', bytes: frame('L', 'Subject\0', Buffer.from([0x20, 0x68, 0x69, 0x0a, 0x09, 0xff, 0x21, 0x00])),
    want: { kind: 'header', name: 'Subject', value: Buffer.from([0x20, 0x68, 0x69, 0x0a, 0x09, 0xff, 0x21]) },
  },
  { name: 'HEADER with an empty value', bytes: frame('L', 'X-Empty\0\0'), want: { kind: 'header', name: 'X-Empty', value: Buffer.alloc(0) } },
  { name: 'EOH', bytes: hex('00000001 4e'), want: { kind: 'eoh' } },
  { name: 'BODY: bytes as sent, NULs included', bytes: frame('B', Buffer.from('line 1\r\n\0line 2\r\n', 'latin1')), want: { kind: 'body', chunk: Buffer.from('line 1\r\n\0line 2\r\n', 'latin1') } },
  { name: 'BODYEOB empty', bytes: hex('00000001 45'), want: { kind: 'eob', chunk: Buffer.alloc(0) } },
  { name: 'BODYEOB with a last chunk (Sendmail)', bytes: frame('E', 'end\r\n'), want: { kind: 'eob', chunk: Buffer.from('end\r\n') } },
  { name: 'ABORT', bytes: hex('00000001 41'), want: { kind: 'abort' } },
  { name: 'QUIT', bytes: hex('00000001 51'), want: { kind: 'quit' } },
  { name: 'QUIT_NC', bytes: hex('00000001 4b'), want: { kind: 'quit_nc' } },
  { name: 'DATA', bytes: hex('00000001 54'), want: { kind: 'data' } },
  { name: 'UNKNOWN command', bytes: frame('U', 'XFOO bar\0'), want: { kind: 'unknown', command: 'XFOO bar' } },
];

for (const c of COMMANDS) {
  test(`MTA command: ${c.name} — parsed to its record and encoded back to the same bytes`, () => {
    assert.deepEqual(plain(parseCommand(onePacket(c.bytes))), plain(c.want));
    assert.equal(encodeCommand(c.want).toString('hex'), c.bytes.toString('hex'));
  });
}

const REPLIES: { name: string; bytes: Buffer; want: MilterReply }[] = [
  { name: 'continue', bytes: hex('00000001 63'), want: { kind: 'continue' } },
  { name: 'accept', bytes: hex('00000001 61'), want: { kind: 'accept' } },
  { name: 'reject', bytes: hex('00000001 72'), want: { kind: 'reject' } },
  { name: 'tempfail', bytes: hex('00000001 74'), want: { kind: 'tempfail' } },
  { name: 'discard', bytes: hex('00000001 64'), want: { kind: 'discard' } },
  { name: 'skip', bytes: hex('00000001 73'), want: { kind: 'skip' } },
  { name: 'progress', bytes: hex('00000001 70'), want: { kind: 'progress' } },
  { name: 'shutdown', bytes: hex('00000001 34'), want: { kind: 'shutdown' } },
  { name: 'conn_fail', bytes: hex('00000001 66'), want: { kind: 'conn_fail' } },
  { name: 'replycode', bytes: frame('y', '550 5.7.1 Not here, 100%% sure\0'), want: { kind: 'replycode', text: '550 5.7.1 Not here, 100%% sure' } },
  { name: 'addheader', bytes: frame('h', 'X-Spam-Flag\0', ' YES\0'), want: { kind: 'addheader', name: 'X-Spam-Flag', value: Buffer.from(' YES') } },
  { name: 'insheader at index 0', bytes: frame('i', hex('00000000'), 'X-First\0', ' 1\0'), want: { kind: 'insheader', index: 0, name: 'X-First', value: Buffer.from(' 1') } },
  { name: 'chgheader: second Received, new folded value', bytes: frame('m', hex('00000002'), 'Received\0', ' a\r\n\tb\0'), want: { kind: 'chgheader', index: 2, name: 'Received', value: Buffer.from(' a\r\n\tb') } },
  { name: 'chgheader with an empty value deletes', bytes: frame('m', hex('00000001'), 'X-Old\0', '\0'), want: { kind: 'chgheader', index: 1, name: 'X-Old', value: Buffer.alloc(0) } },
  { name: 'addrcpt', bytes: frame('+', '<carol@example.org>\0'), want: { kind: 'addrcpt', recipient: '<carol@example.org>' } },
  { name: 'addrcpt_par', bytes: frame('2', '<carol@example.org>\0', 'NOTIFY=NEVER\0'), want: { kind: 'addrcpt_par', recipient: '<carol@example.org>', args: 'NOTIFY=NEVER' } },
  { name: 'delrcpt', bytes: frame('-', '<bob@example.org>\0'), want: { kind: 'delrcpt', recipient: '<bob@example.org>' } },
  { name: 'chgfrom without args', bytes: frame('e', '<bounce@example.org>\0'), want: { kind: 'chgfrom', sender: '<bounce@example.org>' } },
  { name: 'chgfrom with args', bytes: frame('e', '<>\0', 'SIZE=10\0'), want: { kind: 'chgfrom', sender: '<>', args: 'SIZE=10' } },
  { name: 'replbody', bytes: frame('b', 'new body\r\n'), want: { kind: 'replbody', chunk: Buffer.from('new body\r\n') } },
  { name: 'quarantine', bytes: frame('q', 'held for review\0'), want: { kind: 'quarantine', reason: 'held for review' } },
  { name: 'optneg', bytes: hex('0000000d 4f 00000006 00000011 00100180'), want: { kind: 'optneg', version: 6, actions: 0x11, protocol: 0x100180 } },
  {
    name: 'optneg with macro lists (SMFIR_SETSYMLIST tail)', bytes: frame('O', hex('00000006 00000100 00000000 00000003'), '{rcpt_addr}\0', hex('00000005'), 'i\0'),
    want: { kind: 'optneg', version: 6, actions: 0x100, protocol: 0, macros: [['envrcpt', '{rcpt_addr}'], ['eom', 'i']] },
  },
];

for (const r of REPLIES) {
  test(`milter reply: ${r.name} — encoded to its golden bytes and parsed back`, () => {
    assert.equal(encodeReply(r.want).toString('hex'), r.bytes.toString('hex'));
    assert.deepEqual(plain(parseReply(onePacket(r.bytes))), plain(r.want));
  });
}

test('every command byte the MTA sends has a golden case (none forgotten)', () => {
  const seen = new Set(COMMANDS.map((c) => c.want.kind));
  for (const k of ['optneg', 'macro', 'connect', 'helo', 'mail', 'rcpt', 'header', 'eoh', 'body', 'eob', 'abort', 'quit', 'quit_nc', 'data', 'unknown']) assert.ok(seen.has(k as MtaCommand['kind']), k);
});

const STREAM = Buffer.concat([POSTFIX_OPTNEG, ...COMMANDS.slice(1).map((c) => c.bytes), frame('B', Buffer.alloc(65535, 0x61))]);
const STREAM_WANT = [POSTFIX_OPTNEG, ...COMMANDS.slice(1).map((c) => c.bytes), frame('B', Buffer.alloc(65535, 0x61))].map((b) => b.subarray(4).toString('hex'));

function feed(chunks: Buffer[]): string[] {
  const d = new PacketDecoder(1 << 20);
  const out: string[] = [];
  for (const c of chunks) {
    for (const p of d.push(c)) {
      assert.equal(p.kind, 'packet');
      if (p.kind === 'packet') out.push(Buffer.concat([Buffer.from([p.command]), p.data]).toString('hex'));
    }
  }
  assert.equal(d.buffered, 0, 'nothing left over');
  return out;
}

test('many packets in one chunk come out as the same packets, in order', () => {
  assert.deepEqual(feed([STREAM]), STREAM_WANT);
});

test('packets split one byte at a time come out whole', () => {
  const chunks: Buffer[] = [];
  for (let i = 0; i < STREAM.length; i++) chunks.push(STREAM.subarray(i, i + 1));
  assert.deepEqual(feed(chunks), STREAM_WANT);
});

test('packets split at every length-field boundary and at seeded random points come out whole', () => {
  // Split inside the 4-byte length of the second packet at each offset.
  for (let cut = POSTFIX_OPTNEG.length; cut <= POSTFIX_OPTNEG.length + 5; cut++) assert.deepEqual(feed([STREAM.subarray(0, cut), STREAM.subarray(cut)]), STREAM_WANT, `cut ${cut}`);
  let seed = 42;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let round = 0; round < 50; round++) {
    const chunks: Buffer[] = [];
    for (let at = 0; at < STREAM.length;) {
      const n = 1 + rand(round % 2 === 0 ? 40 : 70000);
      chunks.push(STREAM.subarray(at, at + n));
      at += n;
    }
    assert.deepEqual(feed(chunks), STREAM_WANT, `round ${round}`);
  }
});

test('a length of 0 is a protocol error, and the decoder stays stopped', () => {
  const d = new PacketDecoder(1024);
  const got = d.push(Buffer.concat([hex('00000001 63'), hex('00000000'), hex('00000001 63')]));
  assert.deepEqual(got.map((p) => p.kind), ['packet', 'error']);
  assert.match((got[1] as { reason: string }).reason, /packet length 0/);
  assert.deepEqual(d.push(hex('00000001 63')), []);
});

test('a packet over the limit is a protocol error as soon as its length is read', () => {
  const d = new PacketDecoder(1024);
  const got = d.push(hex('00000401 42'));
  assert.deepEqual(got, [{ kind: 'error', reason: 'packet length 1025 is over the limit of 1024 bytes' }]);
  // Exactly at the limit is fine.
  const ok = new PacketDecoder(1024).push(frame('B', Buffer.alloc(1023)));
  assert.equal(ok[0]?.kind, 'packet');
});

const GARBAGE: { name: string; bytes: Buffer; reason: RegExp }[] = [
  { name: 'unknown command byte', bytes: frame('Z', 'x\0'), reason: /unknown command 'Z' \(0x5a\) from the MTA/ },
  { name: 'unprintable command byte', bytes: Buffer.concat([hex('00000001'), Buffer.from([0x01])]), reason: /unknown command 0x01/ },
  { name: 'OPTNEG cut short', bytes: frame('O', hex('00000006 000001ff')), reason: /SMFIC_OPTNEG: protocol needs 4 bytes, 0 left/ },
  { name: 'HELO without its NUL', bytes: frame('H', 'client'), reason: /SMFIC_HELO: HELO name is not NUL-terminated/ },
  { name: 'HELO with bytes after the NUL', bytes: frame('H', 'a\0b'), reason: /SMFIC_HELO: 1 unexpected bytes/ },
  { name: 'MAIL whose second argument lacks its NUL', bytes: frame('M', '<a@b>\0SIZE=1'), reason: /SMFIC_MAIL: ESMTP argument is not NUL-terminated/ },
  { name: 'MAIL with no data at all', bytes: frame('M'), reason: /SMFIC_MAIL: sender is not NUL-terminated/ },
  { name: 'HEADER value without its NUL', bytes: frame('L', 'Subject\0hi'), reason: /SMFIC_HEADER: header value is not NUL-terminated/ },
  { name: 'CONNECT with an unknown family', bytes: frame('C', 'h\0', 'X', hex('0000'), 'a\0'), reason: /SMFIC_CONNECT: unknown address family 'X'/ },
  { name: 'CONNECT with the port cut short', bytes: frame('C', 'h\0', '4', hex('01')), reason: /SMFIC_CONNECT: port needs 2 bytes, 1 left/ },
  { name: 'MACRO with no stage', bytes: frame('D'), reason: /SMFIC_MACRO: stage missing/ },
  { name: 'MACRO with a name but no value', bytes: frame('D', 'C', 'j\0mx\0i\0'), reason: /SMFIC_MACRO: macro "i" has no value/ },
  { name: 'EOH with data', bytes: frame('N', 'x'), reason: /SMFIC_EOH: 1 unexpected bytes/ },
];

for (const g of GARBAGE) {
  test(`garbage from the MTA: ${g.name} → a protocol error naming the command and field`, () => {
    const got = parseCommand(onePacket(g.bytes));
    assert.equal(got.kind, 'error');
    assert.match((got as { reason: string }).reason, g.reason);
  });
}

test('garbage from the milter: an unknown reply and a cut-short chgheader are errors', () => {
  assert.match((parseReply(onePacket(frame('Q'))) as { reason: string }).reason, /unknown reply 'Q'/);
  assert.match((parseReply(onePacket(frame('m', hex('0000'))))as { reason: string }).reason, /SMFIR_CHGHEADER: index needs 4 bytes/);
});

test('encoders refuse a NUL inside a string field and an oversized replacement body chunk', () => {
  assert.throws(() => encodeReply({ kind: 'addrcpt', recipient: 'a\0b' }), /recipient contains a NUL/);
  assert.throws(() => encodeReply({ kind: 'replbody', chunk: Buffer.alloc(65536) }), /over 65535/);
  assert.throws(() => encodeCommand({ kind: 'macro', stage: 'CC', macros: [] }), /one command character/);
});

test('formatReplyCode: code, enhanced code and text; % doubled; a default enhanced code; mismatches refused', () => {
  assert.equal(formatReplyCode('550', '5.7.1', 'No thanks'), '550 5.7.1 No thanks');
  assert.equal(formatReplyCode('451', undefined, '50% full'), '451 4.7.1 50%% full');
  assert.throws(() => formatReplyCode('250', undefined, 'x'), /expected 4xx or 5xx/);
  assert.throws(() => formatReplyCode('550', '4.7.1', 'x'), /does not go with 550/);
  assert.throws(() => formatReplyCode('550', '5.7.1', 'a\r\nb'), /CR, LF or NUL/);
});

const ALL_EVENTS = ['connect', 'helo', 'envfrom', 'envrcpt', 'data', 'header', 'eoh', 'body', 'unknown'];
const POSTFIX = { version: 6, actions: 0x1ff, protocol: 0x1fffff };
const NO_ALL = SMFIP.NOCONNECT | SMFIP.NOHELO | SMFIP.NOMAIL | SMFIP.NORCPT | SMFIP.NODATA | SMFIP.NOHDRS | SMFIP.NOEOH | SMFIP.NOBODY | SMFIP.NOUNKNOWN;
const MODIFY = SMFIF.ADDHDRS | SMFIF.CHGBODY | SMFIF.ADDRCPT | SMFIF.DELRCPT | SMFIF.CHGHDRS | SMFIF.QUARANTINE | SMFIF.CHGFROM | SMFIF.ADDRCPT_PAR;

const NEGOTIATIONS: { name: string; offer: typeof POSTFIX; events: string[]; envelope?: boolean; modify?: boolean; want: { version: number; actions: number; protocol: number } | RegExp }[] = [
  {
    name: 'Postfix, a filter with every event: nothing switched off; SKIP and HDR_LEADSPC asked; every modification but SETSYMLIST',
    offer: POSTFIX, events: ALL_EVENTS, envelope: true, modify: true, want: { version: 6, actions: MODIFY, protocol: SMFIP.SKIP | SMFIP.HDR_LEADSPC },
  },
  {
    name: 'Postfix, only envrcpt handled: every other event off; no actions',
    offer: POSTFIX, events: ['envrcpt'], want: { version: 6, actions: 0, protocol: (NO_ALL & ~SMFIP.NORCPT) | SMFIP.HDR_LEADSPC },
  },
  {
    name: 'Postfix, only eom handled: MAIL and RCPT still sent for the session, without replies',
    offer: POSTFIX, events: [], envelope: true, modify: true,
    want: { version: 6, actions: MODIFY, protocol: (NO_ALL & ~SMFIP.NOMAIL & ~SMFIP.NORCPT) | SMFIP.NR_MAIL | SMFIP.NR_RCPT | SMFIP.HDR_LEADSPC },
  },
  {
    name: 'an MTA that cannot switch DATA off but allows no reply to it: NR_DATA',
    offer: { version: 6, actions: 0x1ff, protocol: 0x1fffff & ~SMFIP.NODATA }, events: ALL_EVENTS.filter((e) => e !== 'data'),
    want: { version: 6, actions: 0, protocol: SMFIP.NR_DATA | SMFIP.SKIP | SMFIP.HDR_LEADSPC },
  },
  {
    name: 'a version 2 MTA (no v6 steps offered): version 2, only what it offers',
    offer: { version: 2, actions: 0x1f, protocol: 0x7f }, events: ['header', 'body'], modify: true,
    want: { version: 2, actions: 0x1f, protocol: SMFIP.NOCONNECT | SMFIP.NOHELO | SMFIP.NOMAIL | SMFIP.NORCPT | SMFIP.NOEOH },
  },
  { name: 'a version above 6 is answered with 6', offer: { version: 7, actions: 0, protocol: 0 }, events: [], want: { version: 6, actions: 0, protocol: 0 } },
  { name: 'version 1 is refused', offer: { version: 1, actions: 0, protocol: 0 }, events: [], want: /version 1; 2 to 6 are supported/ },
];

for (const n of NEGOTIATIONS) {
  test(`negotiate: ${n.name}`, () => {
    const got = negotiate(n.offer, { events: new Set(n.events), envelope: n.envelope ?? false, modify: n.modify ?? false });
    if (n.want instanceof RegExp) {
      assert.equal(got.kind, 'error');
      assert.match((got as { reason: string }).reason, n.want);
      return;
    }
    assert.equal(got.kind, 'optneg');
    const o = got as { version: number; actions: number; protocol: number };
    assert.deepEqual({ version: o.version, actions: `0x${o.actions.toString(16)}`, protocol: `0x${o.protocol.toString(16)}` },
      { version: n.want.version, actions: `0x${n.want.actions.toString(16)}`, protocol: `0x${n.want.protocol.toString(16)}` });
    // Never more than offered.
    assert.equal(o.protocol & ~n.offer.protocol, 0);
    assert.equal(o.actions & ~n.offer.actions, 0);
  });
}
