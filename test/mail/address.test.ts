// Recipient address parsing (src/mail/address.ts): how "user+ext@domain" is
// split with one or several delimiter characters, what odd addresses give,
// which case is kept where, and the exact order of the table lookup keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lookupKeys, parseRecipient, type RecipientAddress } from '../../src/mail/address.js';

const parses: { name: string; address: string; delimiter: string; want: Omit<RecipientAddress, 'address'> }[] = [
  { name: 'a plus extension is split off the user', address: 'user+ext@example.test', delimiter: '+', want: { local: 'user+ext', user: 'user', extension: 'ext', domain: 'example.test' } },
  { name: 'a minus extension is split off with delimiter "-"', address: 'user-ext@example.test', delimiter: '-', want: { local: 'user-ext', user: 'user', extension: 'ext', domain: 'example.test' } },
  { name: 'a "+" is not a delimiter when the delimiter is "-"', address: 'user+ext@example.test', delimiter: '-', want: { local: 'user+ext', user: 'user+ext', extension: '', domain: 'example.test' } },
  { name: 'with several delimiter characters "+" splits', address: 'user+ext@d.test', delimiter: '+-', want: { local: 'user+ext', user: 'user', extension: 'ext', domain: 'd.test' } },
  { name: 'with several delimiter characters "-" splits', address: 'user-ext@d.test', delimiter: '+-', want: { local: 'user-ext', user: 'user', extension: 'ext', domain: 'd.test' } },
  { name: 'with several delimiter characters the first one in the address wins ("-" before "+")', address: 'a-b+c@d.test', delimiter: '+-', want: { local: 'a-b+c', user: 'a', extension: 'b+c', domain: 'd.test' } },
  { name: 'with several delimiter characters the first one in the address wins ("+" before "-")', address: 'a+b-c@d.test', delimiter: '+-', want: { local: 'a+b-c', user: 'a', extension: 'b-c', domain: 'd.test' } },
  { name: 'only the first delimiter splits; later ones stay in the extension', address: 'a+b+c@d.test', delimiter: '+', want: { local: 'a+b+c', user: 'a', extension: 'b+c', domain: 'd.test' } },
  { name: 'an address without a domain is a bare local part', address: 'user', delimiter: '+', want: { local: 'user', user: 'user', extension: '', domain: '' } },
  { name: 'an address without a domain still has its extension', address: 'user+ext', delimiter: '+', want: { local: 'user+ext', user: 'user', extension: 'ext', domain: '' } },
  { name: 'an empty extension ("user+@d") gives the user and no extension', address: 'user+@d.test', delimiter: '+', want: { local: 'user+', user: 'user', extension: '', domain: 'd.test' } },
  { name: 'a leading delimiter ("+x@d") is part of the user, not an extension', address: '+x@d.test', delimiter: '+', want: { local: '+x', user: '+x', extension: '', domain: 'd.test' } },
  { name: 'a leading delimiter is not an extension even if another follows', address: '+x+y@d.test', delimiter: '+', want: { local: '+x+y', user: '+x+y', extension: '', domain: 'd.test' } },
  { name: 'a leading delimiter is not an extension with several delimiter characters either (as Postfix)', address: '+x-y@d.test', delimiter: '+-', want: { local: '+x-y', user: '+x-y', extension: '', domain: 'd.test' } },
  { name: 'an empty delimiter never splits', address: 'user+ext@d.test', delimiter: '', want: { local: 'user+ext', user: 'user+ext', extension: '', domain: 'd.test' } },
  { name: 'case is kept in the user and extension but the domain is lower-cased', address: 'Bob.Smith+Lists@Example.COM', delimiter: '+', want: { local: 'Bob.Smith+Lists', user: 'Bob.Smith', extension: 'Lists', domain: 'example.com' } },
  { name: 'the domain is after the last "@"', address: '"a@b"@Example.Test', delimiter: '+', want: { local: '"a@b"', user: '"a@b"', extension: '', domain: 'example.test' } },
  { name: 'a delimiter in the domain does not split the local part', address: 'user@mail+x.test', delimiter: '+', want: { local: 'user', user: 'user', extension: '', domain: 'mail+x.test' } },
  { name: 'an empty address gives empty parts', address: '', delimiter: '+', want: { local: '', user: '', extension: '', domain: '' } },
  { name: 'a domain-only address has an empty local part', address: '@Example.Test', delimiter: '+', want: { local: '', user: '', extension: '', domain: 'example.test' } },
];

for (const c of parses) {
  test(`parseRecipient: ${c.name}`, () => {
    assert.deepEqual(parseRecipient(c.address, c.delimiter), { address: c.address, ...c.want });
  });
}

test('parseRecipient keeps the address exactly as given', () => {
  assert.equal(parseRecipient('Bob+X@Example.COM', '+').address, 'Bob+X@Example.COM');
});

const keys: { name: string; address: string; delimiter: string; want: string[] }[] = [
  {
    name: 'an address with an extension is looked up as user+ext@domain, user@domain, user+ext, user, @domain',
    address: 'user+ext@example.test', delimiter: '+',
    want: ['user+ext@example.test', 'user@example.test', 'user+ext', 'user', '@example.test'],
  },
  {
    name: 'lookup keys are lower-cased even though the parts keep their case',
    address: 'Bob+Lists@Example.COM', delimiter: '+',
    want: ['bob+lists@example.com', 'bob@example.com', 'bob+lists', 'bob', '@example.com'],
  },
  {
    name: 'an address without an extension has no duplicate keys',
    address: 'bob@example.test', delimiter: '+',
    want: ['bob@example.test', 'bob', '@example.test'],
  },
  {
    name: 'a minus extension gives the same order of keys',
    address: 'bob-dev@example.test', delimiter: '-',
    want: ['bob-dev@example.test', 'bob@example.test', 'bob-dev', 'bob', '@example.test'],
  },
  {
    name: 'an address without a domain has no domain keys',
    address: 'bob+x', delimiter: '+',
    want: ['bob+x', 'bob'],
  },
  {
    name: 'a bare user is a single key',
    address: 'bob', delimiter: '+',
    want: ['bob'],
  },
  {
    name: 'an empty extension is looked up like no extension',
    address: 'bob+@example.test', delimiter: '+',
    want: ['bob@example.test', 'bob', '@example.test'],
  },
  {
    name: 'a leading delimiter is looked up as part of the user',
    address: '+x@example.test', delimiter: '+',
    want: ['+x@example.test', '+x', '@example.test'],
  },
  {
    name: 'a domain-only address gives only the domain key',
    address: '@example.test', delimiter: '+',
    want: ['@example.test'],
  },
  {
    name: 'an empty address gives no keys',
    address: '', delimiter: '+',
    want: [],
  },
];

for (const c of keys) {
  test(`lookupKeys: ${c.name}`, () => {
    assert.deepEqual(lookupKeys(parseRecipient(c.address, c.delimiter)), c.want);
  });
}
