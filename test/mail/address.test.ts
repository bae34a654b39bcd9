// Recipient address parsing (src/mail/address.ts): how "user+ext@domain" is
// split with one or several delimiter characters, what odd addresses give,
// which case is kept where, quoted local parts, which MAIL/RCPT addresses
// are refused, and the exact order of the table lookup keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addressProblem, lookupKeys, parseRecipient, unquoteLocalPart, type RecipientAddress } from '../../src/mail/address.js';

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
  { name: 'a quoted local part that is a plain dot-atom is unquoted: "bob" is bob', address: '"bob"@Example.Test', delimiter: '+', want: { local: 'bob', user: 'bob', extension: '', domain: 'example.test' } },
  { name: 'an unquoted local part keeps its extension', address: '"bob+lists"@example.test', delimiter: '+', want: { local: 'bob+lists', user: 'bob', extension: 'lists', domain: 'example.test' } },
  { name: 'quoted pairs are unescaped', address: '"b\\ob.s"@example.test', delimiter: '+', want: { local: 'bob.s', user: 'bob.s', extension: '', domain: 'example.test' } },
  { name: 'a quoted local part with a space keeps its quotes (no user has that key)', address: '"bob smith"@example.test', delimiter: '+', want: { local: '"bob smith"', user: '"bob smith"', extension: '', domain: 'example.test' } },
  { name: 'a quoted local part with two periods in a row keeps its quotes', address: '"bob..x"@example.test', delimiter: '+', want: { local: '"bob..x"', user: '"bob..x"', extension: '', domain: 'example.test' } },
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
  assert.equal(parseRecipient('"bob"@example.test', '+').address, '"bob"@example.test');
});

const unquotes: { input: string; want: string }[] = [
  { input: 'bob', want: 'bob' },
  { input: '"bob"', want: 'bob' },
  { input: '"bob.smith"', want: 'bob.smith' },
  { input: '"\\b\\o\\b"', want: 'bob' },
  { input: '""', want: '""' },
  { input: '"a b"', want: '"a b"' },
  { input: '"a@b"', want: '"a@b"' },
  { input: '"a\\"b"', want: '"a\\"b"' },
  { input: '".bob"', want: '".bob"' },
  { input: '"bob"x', want: '"bob"x' },
  { input: '"jörg"', want: 'jörg' },
];
for (const c of unquotes) {
  test(`unquoteLocalPart: ${c.input} → ${c.want}`, () => {
    assert.equal(unquoteLocalPart(c.input), c.want);
  });
}

const problems: { name: string; address: string; smtpUtf8: boolean; want: ReturnType<typeof addressProblem> }[] = [
  { name: 'an ASCII address is fine', address: 'bob@example.test', smtpUtf8: false, want: undefined },
  { name: 'the null sender is fine', address: '', smtpUtf8: false, want: undefined },
  { name: 'a byte that was not UTF-8 (decoded as U+FFFD) is invalid', address: 'b\uFFFDb@example.test', smtpUtf8: false, want: 'invalid-utf8' },
  { name: 'also with SMTPUTF8', address: 'b\uFFFDb@example.test', smtpUtf8: true, want: 'invalid-utf8' },
  { name: 'also in the domain', address: 'bob@exa\uFFFDmple.test', smtpUtf8: true, want: 'invalid-utf8' },
  { name: 'a UTF-8 local part needs SMTPUTF8', address: 'jörg@example.test', smtpUtf8: false, want: 'needs-smtputf8' },
  { name: 'a UTF-8 local part with SMTPUTF8 is fine', address: 'jörg@example.test', smtpUtf8: true, want: undefined },
  { name: 'a Unicode domain is not checked for SMTPUTF8 (smtp-server decodes xn-- labels)', address: 'bob@café.test', smtpUtf8: false, want: undefined },
];
for (const c of problems) {
  test(`addressProblem: ${c.name}`, () => {
    assert.equal(addressProblem(c.address, c.smtpUtf8), c.want);
  });
}

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
