// Redelivery tokens (src/mail/redelivery.ts): the same on every attempt of a
// copy, different for every other copy, and safe inside a Maildir file name.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isRedeliveryToken, redeliveryKey, redeliveryTokens } from '../../src/mail/redelivery.js';

const INBOX = 'maildir:/var/mail/bob/Maildir/';
const FOLDER = 'maildir:/var/mail/bob/Maildir/ folder=lists';

test('a token is 16 characters of lower-case base32, and the same on every attempt', () => {
  const key = redeliveryKey('18F2A3B4C5D6E7F8', 'Bob@Example.test');
  const [a] = redeliveryTokens(key, [INBOX]);
  assert.ok(isRedeliveryToken(a), String(a));
  assert.match(a as string, /^[a-z2-7]{16}$/);
  assert.deepEqual(redeliveryTokens(redeliveryKey('18F2A3B4C5D6E7F8', 'bob@example.test'), [INBOX]), [a], 'the address is compared in lower case, as the spool records it');
});

test('every other copy gets another token: queue id, recipient, destination, and a second copy to the same place', () => {
  const key = redeliveryKey('18F2A3B4C5D6E7F8', 'bob@example.test');
  const tokens = [
    ...redeliveryTokens(key, [INBOX, FOLDER, INBOX]),
    ...redeliveryTokens(redeliveryKey('18F2A3B4C5D6E7F9', 'bob@example.test'), [INBOX]),
    ...redeliveryTokens(redeliveryKey('18F2A3B4C5D6E7F8', 'alice@example.test'), [INBOX]),
  ];
  assert.equal(new Set(tokens).size, tokens.length, tokens.join(' '));
});

test('a token follows its destination, not its place in the plan', () => {
  const key = redeliveryKey('18F2A3B4C5D6E7F8', 'bob@example.test');
  const [inbox, folder] = redeliveryTokens(key, [INBOX, FOLDER]);
  assert.deepEqual(redeliveryTokens(key, ['pipe:/usr/bin/true', FOLDER, INBOX]).slice(1), [folder, inbox]);
});

test('isRedeliveryToken refuses what could add a path, an info part or a size field to a name', () => {
  for (const bad of ['', 'abc', 'ABCDEFGHIJKLMNOP', 'abcdefghijklmno/', 'abcdefghijklmno:', 'abcdefghijklmno,', 'abcdefghijklmno.', 'abcdefghijklmnop1', 42, undefined]) {
    assert.equal(isRedeliveryToken(bad), false, String(bad));
  }
});
