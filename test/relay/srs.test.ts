// The Sender Rewriting Scheme (src/relay/srs.ts) against vectors computed
// independently, with Python's hmac (test/fixtures/srs/make-vectors.py →
// vectors.json): forward rewriting (SRS0, SRS1 from another forwarder's SRS0
// or SRS1, what is left alone), and reversal (age, the 10-bit day wrap,
// secret rotation, case folding, tampering, malformed addresses).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { isSrsAddress, srsForward, srsReverse } from '../../src/relay/srs.js';

interface Vectors {
  forward: { name: string; secret: string; domain: string; sender: string; time: number; want: string }[];
  reverse: { name: string; secrets: string[]; maxAgeDays: number; address: string; time: number; want: { address: string } | { error: string } }[];
}

const VECTORS = JSON.parse(readFileSync(fileURLToPath(new URL('../../../test/fixtures/srs/vectors.json', import.meta.url)), 'utf8')) as Vectors;
const at = (seconds: number): Date => new Date(seconds * 1000);

test('the vector file is there and holds cases of both kinds', () => {
  assert.ok(VECTORS.forward.length >= 8 && VECTORS.reverse.length >= 12);
});

for (const c of VECTORS.forward) {
  test(`srsForward: ${c.name}`, () => {
    assert.equal(srsForward(c.sender, { secret: c.secret, domain: c.domain }, at(c.time)), c.want);
  });
}

for (const c of VECTORS.reverse) {
  test(`srsReverse: ${c.name}`, () => {
    const got = srsReverse(c.address, { secrets: c.secrets, maxAgeDays: c.maxAgeDays }, at(c.time));
    if ('address' in c.want) assert.deepEqual(got, c.want);
    else assert.ok('error' in got && got.error.includes(c.want.error), `want an error about "${c.want.error}", got ${JSON.stringify(got)}`);
  });
}

test('every sender we rewrite reverses to itself, through one forwarder and through two', () => {
  const now = new Date(Date.UTC(2026, 5, 15, 12));
  const us = { secret: 's1', domain: 'fwd.example.test' };
  const them = { secret: 's2', domain: 'other.example.net' };
  for (const sender of ['alice@example.org', 'Alice+tag=x@Example.ORG', 'bounce-1=2=3@example.org', '"a b"@example.org', 'jürgen@example.org']) {
    const once = srsForward(sender, us, now);
    assert.ok(isSrsAddress(once), once);
    assert.deepEqual(srsReverse(once, { secrets: ['s1'], maxAgeDays: 21 }, now), { address: sender });
    // Re-forwarded by someone else, then by us again: SRS1 at us, which reverses to their SRS0, which they reverse.
    const theirs = srsForward(sender, them, now);
    const twice = srsForward(theirs, us, now);
    assert.match(twice, /^SRS1=/);
    assert.deepEqual(srsReverse(twice, { secrets: ['s1'], maxAgeDays: 21 }, now), { address: theirs });
    assert.deepEqual(srsReverse(theirs, { secrets: ['s2'], maxAgeDays: 21 }, now), { address: sender });
    // And once more through a third forwarder: the SRS1 keeps pointing at the first one.
    const thrice = srsForward(twice, { secret: 's3', domain: 'third.example.com' }, now);
    assert.deepEqual(srsReverse(thrice, { secrets: ['s3'], maxAgeDays: 21 }, now), { address: theirs });
  }
});

test('addresses that cannot be rewritten come back as they are, and an empty secret list reverses nothing', () => {
  const now = new Date(Date.UTC(2026, 5, 15));
  for (const sender of ['', 'postmaster', 'bob@fwd.example.test']) assert.equal(srsForward(sender, { secret: 's', domain: 'bob@fwd.example.test' }, now), sender);
  const made = srsForward('alice@example.org', { secret: 's', domain: 'fwd.example.test' }, now);
  assert.deepEqual(srsReverse(made, { secrets: [], maxAgeDays: 21 }, now), { error: 'no SRS secret configured' });
});

test('a malformed SRS1 sender is rewritten as a plain one, which reverses to exactly it', () => {
  const now = new Date(Date.UTC(2026, 5, 15));
  const odd = 'SRS1=xyz@example.org';
  const made = srsForward(odd, { secret: 's', domain: 'fwd.example.test' }, now);
  assert.match(made, /^SRS0=/);
  assert.deepEqual(srsReverse(made, { secrets: ['s'], maxAgeDays: 21 }, now), { address: odd });
});

test('other separators are read: SRS0+ and SRS0- as libsrs2 allows', () => {
  const now = new Date(Date.UTC(2026, 5, 15));
  const made = srsForward('alice@example.org', { secret: 's', domain: 'fwd.example.test' }, now);
  for (const sep of ['+', '-']) {
    assert.deepEqual(srsReverse(made.replace(/^SRS0=/, `SRS0${sep}`), { secrets: ['s'], maxAgeDays: 21 }, now), { address: 'alice@example.org' });
  }
});
