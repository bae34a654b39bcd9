// The administrator's control protocol (src/control/server.ts): the one parser
// of its JSON lines. Every command is recognised with exactly its fields; a
// malformed line gets a reason, never an exception.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseControlRequest } from '../../src/control/server.js';

const cases: { line: string; want: unknown; why: string }[] = [
  { line: '{"cmd":"status"}', want: { cmd: 'status' }, why: 'status' },
  { line: '{"cmd":"queue.list"}', want: { cmd: 'queue.list' }, why: 'queue list' },
  { line: '{"cmd":"queue.flush"}', want: { cmd: 'queue.flush' }, why: 'queue flush' },
  { line: '{"cmd":"queue.show","id":"4F2A0B9C1D"}', want: { cmd: 'queue.show', id: '4F2A0B9C1D' }, why: 'queue show with an id' },
  { line: '{"cmd":"queue.delete","id":"4F2A0B9C1D"}', want: { cmd: 'queue.delete', id: '4F2A0B9C1D' }, why: 'queue delete with an id' },
  { line: '{"cmd":"status","extra":1}', want: { cmd: 'status' }, why: 'unknown fields are dropped, not passed on' },
  { line: 'status', want: 'not JSON', why: 'a bare word' },
  { line: '', want: 'not JSON', why: 'an empty line' },
  { line: '[]', want: 'not an object', why: 'a list is not a request' },
  { line: 'null', want: 'not an object', why: 'null' },
  { line: '"status"', want: 'not an object', why: 'a JSON string' },
  { line: '{"cmd":"queue.purge"}', want: 'unknown command "queue.purge"', why: 'an unknown command is named' },
  { line: '{"cmd":"queue.show"}', want: 'id: expected a queue id', why: 'show without an id' },
  { line: '{"cmd":"queue.delete","id":"../../etc/passwd"}', want: 'id: expected a queue id', why: 'an id is never a path' },
  { line: '{"cmd":"queue.delete","id":"4f2a0b9c1d"}', want: 'id: expected a queue id', why: 'ids are upper-case hex' },
  { line: '{"cmd":"queue.show","id":42}', want: 'id: expected a queue id', why: 'an id is a string' },
];

for (const c of cases) {
  test(`parseControlRequest(${JSON.stringify(c.line)}): ${c.why}`, () => {
    assert.deepEqual(parseControlRequest(c.line), c.want);
  });
}
