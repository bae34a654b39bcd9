// The host ↔ filter worker messages (src/milter/filter-ipc.ts): what the host
// accepts from a worker (which runs an administrator's module that can post on
// parentPort itself) and what a worker accepts from the host, as tables.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bytesOf, checkHostRequest, checkWorkerReply, copyBytes, FILTER_IPC_VERSION as v } from '../../src/milter/filter-ipc.js';

const REPLIES: { name: string; raw: unknown; want: unknown }[] = [
  { name: 'loaded with events', raw: { v, type: 'loaded', events: ['header', 'eom'] }, want: { v, type: 'loaded', events: ['header', 'eom'] } },
  { name: 'a result with a bare verdict, without absent fields', raw: { v, type: 'result', id: 3, verdict: 'reject', mods: [] }, want: { v, type: 'result', id: 3, verdict: { result: 'reject' }, mods: [] } },
  {
    name: 'a result with a reply code and every modification',
    raw: {
      v, type: 'result', id: 4, verdict: { result: 'tempfail', code: '451', xcode: '4.7.1', text: 'later' },
      mods: [
        { op: 'addHeader', name: 'X-A', value: 'a' }, { op: 'insertHeader', index: 0, name: 'X-B', value: new Uint8Array([0xe9]) },
        { op: 'changeHeader', name: 'Subject', index: 1, value: null }, { op: 'addRecipient', address: 'a@b', esmtpArgs: 'NOTIFY=NEVER' },
        { op: 'deleteRecipient', address: 'c@d' }, { op: 'changeSender', address: 'e@f' }, { op: 'replaceBody', chunk: 'x' }, { op: 'quarantine', reason: 'r' },
      ],
    },
    want: 'ok',
  },
  { name: 'failed with a reason', raw: { v, type: 'failed', id: 1, why: 'boom' }, want: { v, type: 'failed', id: 1, why: 'boom' } },
  { name: 'progress', raw: { v, type: 'progress', id: 2 }, want: { v, type: 'progress', id: 2 } },
  { name: 'a macro lookup', raw: { v, type: 'macro', id: 2, q: 7, name: 'i' }, want: { v, type: 'macro', id: 2, q: 7, name: 'i' } },
  { name: 'another version', raw: { v: v + 1, type: 'loaded', events: [] }, want: /^version 2, expected 1$/ },
  { name: 'not an object', raw: 'loaded', want: /not an object/ },
  { name: 'an unknown type', raw: { v, type: 'hello' }, want: /unknown message type "hello"/ },
  { name: 'an event that is not a milter event', raw: { v, type: 'loaded', events: ['header', 'evil'] }, want: /not a list of milter events/ },
  { name: 'a verdict the API does not know', raw: { v, type: 'result', id: 1, verdict: 'maybe', mods: [] }, want: /result: verdict: milter filter returned "maybe"/ },
  { name: 'a code that disagrees with the result', raw: { v, type: 'result', id: 1, verdict: { result: 'reject', code: '451' }, mods: [] }, want: /expected 5xx/ },
  { name: 'reply text with CRLF (a second SMTP reply smuggled in)', raw: { v, type: 'result', id: 1, verdict: { result: 'reject', text: 'no\r\n250 ok' }, mods: [] }, want: /CR, LF or NUL/ },
  { name: 'an unknown modification', raw: { v, type: 'result', id: 1, verdict: 'continue', mods: [{ op: 'chmod' }] }, want: /mods\[0\]: unknown op "chmod"/ },
  { name: 'a header value that is a number', raw: { v, type: 'result', id: 1, verdict: 'continue', mods: [{ op: 'addHeader', name: 'X', value: 1 }] }, want: /mods\[0\]: addHeader: name\/value/ },
  { name: 'a negative header index', raw: { v, type: 'result', id: 1, verdict: 'continue', mods: [{ op: 'insertHeader', index: -1, name: 'X', value: 'y' }] }, want: /insertHeader: index/ },
  { name: 'an id that is not a count', raw: { v, type: 'failed', id: 1.5, why: 'x' }, want: /failed: id\/why/ },
  { name: 'a macro lookup without its sequence number', raw: { v, type: 'macro', id: 1, name: 'i' }, want: /macro: id\/q\/name/ },
];

for (const c of REPLIES) {
  test(`worker reply: ${c.name}`, () => {
    const got = checkWorkerReply(c.raw);
    if (c.want instanceof RegExp) assert.match(String(got), c.want);
    else if (c.want === 'ok') assert.equal(typeof got, 'object', String(got));
    else assert.deepEqual(got, c.want);
  });
}

const REQUESTS: { name: string; raw: unknown; want: RegExp | 'ok' }[] = [
  { name: 'a call', raw: { v, type: 'call', id: 1, sid: 2, event: 'header', args: ['Subject', 'x', new Uint8Array([120])], session: { sender: 'a@b', recipients: ['c@d'] } }, want: 'ok' },
  { name: 'a call before MAIL (no sender yet)', raw: { v, type: 'call', id: 1, sid: 2, event: 'connect', args: [], session: { recipients: [] } }, want: 'ok' },
  { name: 'a drop', raw: { v, type: 'drop', sid: 2 }, want: 'ok' },
  { name: 'an event that is not a milter event', raw: { v, type: 'call', id: 1, sid: 2, event: 'constructor', args: [], session: { recipients: [] } }, want: /not a milter event/ },
  { name: 'recipients that are not strings', raw: { v, type: 'call', id: 1, sid: 2, event: 'eom', args: [], session: { recipients: [1] } }, want: /session: bad fields/ },
  { name: 'another version', raw: { v: 0, type: 'drop', sid: 1 }, want: /version 0/ },
];

for (const c of REQUESTS) {
  test(`host request: ${c.name}`, () => {
    const got = checkHostRequest(c.raw);
    if (c.want === 'ok') assert.equal(typeof got, 'object', String(got));
    else assert.match(String(got), c.want);
  });
}

test('bytes cross as an exact-length copy, and come back as a Buffer over the same memory', () => {
  const packet = Buffer.from('Subject: hello\r\n');
  const value = packet.subarray(9, 14);
  const copy = copyBytes(value);
  assert.equal(copy.buffer.byteLength, 5, 'the copy drags the whole packet along');
  const back = bytesOf(copy);
  assert.ok(Buffer.isBuffer(back));
  assert.equal(back.toString(), 'hello');
  back[0] = 0x48;
  assert.equal(copy[0], 0x48);
});
