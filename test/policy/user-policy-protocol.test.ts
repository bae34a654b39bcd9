// The per-user control protocol's parser and the pure policy rules
// (src/control/user-protocol.ts), and the decision a stored policy gives
// (judgeUserPolicy): tables of got/want.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyPolicyChange, parseUserRequest, type PolicyChange, type PolicySettings } from '../../src/control/user-protocol.js';
import { judgeUserPolicy, type UserPolicyRecord } from '../../src/policy/index.js';

const PARSE: { name: string; line: string; want: unknown }[] = [
  { name: 'list takes nothing else', line: '{"cmd":"policy.list"}', want: { cmd: 'policy.list' } },
  { name: 'show lower-cases the address', line: '{"cmd":"policy.show","address":"Alice@Users.Test"}', want: { cmd: 'policy.show', address: 'alice@users.test' } },
  { name: 'angle brackets around an address are dropped', line: '{"cmd":"policy.clear","address":"<alice@users.test>"}', want: { cmd: 'policy.clear', address: 'alice@users.test' } },
  {
    name: 'set carries the keys given, patterns lower case, duplicates once',
    line: '{"cmd":"policy.set","address":"alice@users.test","policy":{"deny":["*@Spam.test","*@spam.test"],"onlyAllowed":false,"greylist":null,"maxSize":1024}}',
    want: { cmd: 'policy.set', address: 'alice@users.test', change: { deny: ['*@spam.test'], onlyAllowed: false, greylist: null, maxSize: 1024 } },
  },
  { name: 'the null sender pattern', line: '{"cmd":"policy.set","address":"a@b","policy":{"deny":["<>"]}}', want: { cmd: 'policy.set', address: 'a@b', change: { deny: ['<>'] } } },
  { name: 'not JSON', line: 'policy.list', want: 'not JSON' },
  { name: 'not an object', line: '["policy.list"]', want: 'not an object' },
  { name: 'an unknown command', line: '{"cmd":"policy.get"}', want: 'unknown command "policy.get" (known: policy.list, policy.show, policy.set, policy.clear, spam.checker, rules.list, rules.add, rules.remove, rules.move, rules.clear, rules.test, rules.log)' },
  { name: 'an unknown rules command', line: '{"cmd":"rules.set"}', want: 'unknown command "rules.set" (known: rules.list, rules.add, rules.remove, rules.move, rules.clear, rules.test, rules.log)' },
  { name: 'an address without a domain', line: '{"cmd":"policy.show","address":"alice"}', want: 'address: expected user@domain, got "alice"' },
  { name: 'an address with a space', line: '{"cmd":"policy.show","address":"al ice@x.test"}', want: 'address: expected user@domain, got "al ice@x.test"' },
  { name: 'a catch-all is no address', line: '{"cmd":"policy.show","address":"@users.test"}', want: 'address: expected user@domain, got "@users.test"' },
  { name: 'no address', line: '{"cmd":"policy.clear"}', want: 'address: expected a string' },
  { name: 'set without a policy', line: '{"cmd":"policy.set","address":"a@b"}', want: 'policy: expected an object' },
  { name: 'a misspelt key is refused, not ignored', line: '{"cmd":"policy.set","address":"a@b","policy":{"only_allowed":true}}', want: 'policy: unknown key "only_allowed" (known: allow, deny, onlyAllowed, greylist, maxSize)' },
  { name: 'a pattern that is not a string', line: '{"cmd":"policy.set","address":"a@b","policy":{"allow":["x@y",3]}}', want: 'policy.allow[1]: expected a string' },
  { name: 'a pattern in angle brackets', line: '{"cmd":"policy.set","address":"a@b","policy":{"deny":["<x@spam.test>"]}}', want: 'policy.deny[0]: "<x@spam.test>": write the address without angle brackets ("<>" alone is the null sender)' },
  { name: 'an empty pattern', line: '{"cmd":"policy.set","address":"a@b","policy":{"deny":[" "]}}', want: 'policy.deny[0]: empty pattern' },
  { name: 'a pattern with a space', line: '{"cmd":"policy.set","address":"a@b","policy":{"deny":["a b"]}}', want: 'policy.deny[0]: "a b": no spaces or control characters' },
  { name: 'too many patterns', line: JSON.stringify({ cmd: 'policy.set', address: 'a@b', policy: { deny: Array.from({ length: 101 }, (_, i) => `${i}@x`) } }), want: 'policy.deny: at most 100 patterns' },
  { name: 'patterns not in a list', line: '{"cmd":"policy.set","address":"a@b","policy":{"allow":"x@y"}}', want: 'policy.allow: expected a list of patterns' },
  { name: 'only-allowed not a boolean', line: '{"cmd":"policy.set","address":"a@b","policy":{"onlyAllowed":"on"}}', want: 'policy.onlyAllowed: expected true or false' },
  { name: 'greylist not a boolean', line: '{"cmd":"policy.set","address":"a@b","policy":{"greylist":"default"}}', want: 'policy.greylist: expected true, false or null (the site\'s setting)' },
  { name: 'a size of 0', line: '{"cmd":"policy.set","address":"a@b","policy":{"maxSize":0}}', want: 'policy.maxSize: expected a number of bytes from 1 to 1099511627776, or null (no limit)' },
  { name: 'a fractional size', line: '{"cmd":"policy.set","address":"a@b","policy":{"maxSize":1.5}}', want: 'policy.maxSize: expected a number of bytes from 1 to 1099511627776, or null (no limit)' },
];

for (const c of PARSE) {
  test(`parseUserRequest: ${c.name}`, () => {
    assert.deepEqual(parseUserRequest(c.line), c.want);
  });
}

const BASE: PolicySettings = { allow: ['*@friends.test'], deny: ['*@spam.test'], onlyAllowed: false, greylist: true, maxSize: 1000 };

const CHANGES: { name: string; current: PolicySettings | undefined; change: PolicyChange; want: unknown }[] = [
  { name: 'a first policy starts from nothing', current: undefined, change: { deny: ['*@spam.test'] }, want: { allow: [], deny: ['*@spam.test'], onlyAllowed: false } },
  { name: 'keys not given are kept', current: BASE, change: { deny: ['*@junk.test'] }, want: { ...BASE, deny: ['*@junk.test'] } },
  { name: 'a list given replaces the old one, an empty list empties it', current: BASE, change: { allow: [] }, want: { ...BASE, allow: [] } },
  { name: 'null puts greylisting back to the site\'s setting', current: BASE, change: { greylist: null }, want: { allow: BASE.allow, deny: BASE.deny, onlyAllowed: false, maxSize: 1000 } },
  { name: 'null removes the size limit', current: BASE, change: { maxSize: null }, want: { allow: BASE.allow, deny: BASE.deny, onlyAllowed: false, greylist: true } },
  { name: 'only-allowed with allow patterns', current: BASE, change: { onlyAllowed: true }, want: { ...BASE, onlyAllowed: true } },
  { name: 'only-allowed without any allow pattern would refuse everyone', current: undefined, change: { onlyAllowed: true }, want: 'only-allowed needs at least one allow pattern (otherwise every sender but the null sender is refused)' },
  { name: 'emptying allow under only-allowed is refused too', current: { ...BASE, onlyAllowed: true }, change: { allow: [] }, want: 'only-allowed needs at least one allow pattern (otherwise every sender but the null sender is refused)' },
];

for (const c of CHANGES) {
  test(`applyPolicyChange: ${c.name}`, () => {
    assert.deepEqual(applyPolicyChange(c.current, c.change), c.want);
  });
}

const record = (p: Partial<UserPolicyRecord>): UserPolicyRecord => ({ allow: [], deny: [], onlyAllowed: false, owner: 'mpt-alice', uid: 1000, updatedAt: '', ...p });
const DENY = "REJECT 5.7.1 Sender refused by the recipient's policy";
const ONLY = 'REJECT 5.7.1 The recipient accepts mail only from senders they allow';

const JUDGE: { name: string; policy: UserPolicyRecord; sender: string; size?: number; state?: 'RCPT' | 'END-OF-MESSAGE'; want: string | undefined }[] = [
  { name: 'a denied domain is refused', policy: record({ deny: ['*@spam.test'] }), sender: 'x@spam.test', want: DENY },
  { name: 'another domain is not', policy: record({ deny: ['*@spam.test'] }), sender: 'x@ok.test', want: undefined },
  { name: 'a glob does not match a subdomain it does not name', policy: record({ deny: ['*@spam.test'] }), sender: 'x@mail.spam.test', want: undefined },
  { name: '? is one character', policy: record({ deny: ['?@spam.test'] }), sender: 'xy@spam.test', want: undefined },
  { name: 'allow wins over deny', policy: record({ allow: ['boss@spam.test'], deny: ['*@spam.test'] }), sender: 'boss@spam.test', want: undefined },
  { name: 'the null sender is matched as <>', policy: record({ deny: ['<>'] }), sender: '', want: DENY },
  { name: 'a domain glob does not match the null sender', policy: record({ deny: ['*@spam.test'] }), sender: '', want: undefined },
  { name: 'only-allowed refuses a sender not allowed', policy: record({ allow: ['*@friends.test'], onlyAllowed: true }), sender: 'x@other.test', want: ONLY },
  { name: 'only-allowed takes an allowed sender', policy: record({ allow: ['*@friends.test'], onlyAllowed: true }), sender: 'x@friends.test', want: undefined },
  { name: 'only-allowed lets the null sender through (bounces of one\'s own mail)', policy: record({ allow: ['*@friends.test'], onlyAllowed: true }), sender: '', want: undefined },
  { name: 'a size over the limit', policy: record({ maxSize: 1000 }), sender: 'x@ok.test', size: 1001, want: '552 5.2.3 Message too large for the recipient (limit 1000 bytes)' },
  { name: 'a size at the limit', policy: record({ maxSize: 1000 }), sender: 'x@ok.test', size: 1000, want: undefined },
  { name: 'an unknown size (0) passes', policy: record({ maxSize: 1000 }), sender: 'x@ok.test', size: 0, want: undefined },
  { name: 'an allowed sender is still held to the size', policy: record({ allow: ['*@friends.test'], maxSize: 10 }), sender: 'x@friends.test', size: 11, want: '552 5.2.3 Message too large for the recipient (limit 10 bytes)' },
  { name: 'at end of message only the size counts', policy: record({ deny: ['*@spam.test'], maxSize: 10 }), sender: 'x@spam.test', size: 5, state: 'END-OF-MESSAGE', want: undefined },
  { name: 'at end of message the real size is checked', policy: record({ maxSize: 10 }), sender: 'x@ok.test', size: 11, state: 'END-OF-MESSAGE', want: '552 5.2.3 Message too large for the recipient (limit 10 bytes)' },
];

for (const c of JUDGE) {
  test(`judgeUserPolicy: ${c.name}`, () => {
    assert.equal(judgeUserPolicy(c.policy, { state: c.state ?? 'RCPT', sender: c.sender, size: c.size ?? 0 }), c.want);
  });
}
