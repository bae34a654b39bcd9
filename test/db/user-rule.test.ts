// A mailbox owner's own rule (src/db/user-rule.ts): the table language plus
// folder:NAME and ~/, minus what only the administrator may say, with paths
// kept inside what the owner may write to. Each refusal names the rule and,
// where one word is to blame, its column.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Rule } from '../../src/classify/rules.js';
import { checkUserRuleSet, parseUserRule, type UserRulePolicy } from '../../src/db/index.js';

const POLICY: UserRulePolicy = {
  home: '/home/alice',
  roots: ['/home/alice', '/var/mail/alice'],
  defaultMaildir: '/var/mail/${user}/Maildir/',
  pipes: false,
  address: 'alice@example.test',
};

const good: { name: string; text: string; policy?: Partial<UserRulePolicy>; want: Omit<Rule, 'origin' | 'stop'> & { stop?: boolean } }[] = [
  {
    name: 'folder:NAME is a folder of the default Maildir',
    text: 'folder:Invoices header:Subject=Invoice* stop',
    want: {
      destination: { kind: 'maildir', path: '/var/mail/${user}/Maildir/', folder: 'Invoices' },
      conditions: [{ kind: 'header', name: 'Subject', pattern: { kind: 'glob', glob: 'Invoice*' }, negate: false }], stop: true,
    },
  },
  { name: '~/ is the owner\'s home', text: 'maildir:~/Mail/lists', want: { destination: { kind: 'maildir', path: '${home}/Mail/lists' }, conditions: [] } },
  { name: 'an mbox in the home', text: 'mbox:~/mbox sender=*@example.org', want: { destination: { kind: 'mbox', path: '${home}/mbox' }, conditions: [{ kind: 'sender', pattern: { kind: 'glob', glob: '*@example.org' }, negate: false }] } },
  { name: 'an absolute path inside the mail directory', text: 'maildir:/var/mail/alice/Other/', want: { destination: { kind: 'maildir', path: '/var/mail/alice/Other/' }, conditions: [] } },
  { name: 'a variable stands for one segment inside a root', text: 'maildir:~/Mail/${extension} spam', want: { destination: { kind: 'maildir', path: '${home}/Mail/${extension}' }, conditions: [{ kind: 'spam', is: true }] } },
  { name: 'discard and reject are the owner\'s to use', text: 'reject:"5.7.1 Not from you" sender=boss@*', want: { destination: { kind: 'reject', code: '5.7.1', text: 'Not from you' }, conditions: [{ kind: 'sender', pattern: { kind: 'glob', glob: 'boss@*' }, negate: false }] } },
  { name: 'a pipe the administrator allows', text: 'pipe:"/usr/bin/filter -v"', policy: { pipes: ['/usr/bin/filter'] }, want: { destination: { kind: 'pipe', argv: ['/usr/bin/filter', '-v'] }, conditions: [] } },
  { name: 'a forward', text: 'forward:me@elsewhere.example', want: { destination: { kind: 'forward', address: 'me@elsewhere.example' }, conditions: [] } },
  { name: 'a vacation with its text', text: 'vacation text="Away.\\nBack Monday." !header:List-Id=*', want: { destination: { kind: 'vacation', text: 'Away.\nBack Monday.', days: 7 }, conditions: [{ kind: 'header', name: 'List-Id', pattern: { kind: 'glob', glob: '*' }, negate: true }] } },
  { name: 'a vacation from the address itself, any case', text: 'vacation text=Away from=Alice@Example.test days=3', want: { destination: { kind: 'vacation', text: 'Away', days: 3, from: 'Alice@Example.test' }, conditions: [] } },
];

for (const c of good) {
  test(`a user rule is accepted: ${c.name}`, () => {
    const got = parseUserRule(c.text, 3, { ...POLICY, ...c.policy });
    assert.deepEqual(got, { stop: false, ...c.want, origin: 'yours:3' });
  });
}

const bad: { name: string; text: string; policy?: Partial<UserRulePolicy>; want: string }[] = [
  { name: 'an unknown condition, at its column', text: 'folder:X subjct', want: 'rule 1, column 10: unknown condition or option "subjct"' },
  { name: 'a path outside the roots', text: 'maildir:/root/x', want: 'rule 1, column 1: maildir:/root/x is outside what your rules may write to (/home/alice, /var/mail/alice)' },
  { name: 'an mbox on a system file', text: 'mbox:/etc/passwd', want: 'rule 1, column 1: mbox:/etc/passwd is outside what your rules may write to (/home/alice, /var/mail/alice)' },
  { name: 'a path that climbs out with ..', text: 'maildir:~/../bob/Maildir', want: 'rule 1, column 1: maildir:/home/bob/Maildir is outside what your rules may write to (/home/alice, /var/mail/alice)' },
  { name: 'a root that is only a prefix of the path', text: 'mbox:/var/mail/alice2/mbox', want: 'rule 1, column 1: mbox:/var/mail/alice2/mbox is outside what your rules may write to (/home/alice, /var/mail/alice)' },
  { name: 'a relative path', text: 'maildir:Maildir/', want: 'rule 1, column 1: maildir path "Maildir/" must start with ~/ (your home) or /' },
  { name: 'a pipe when pipes are off', text: 'pipe:/bin/cat', want: 'rule 1, column 1: pipe: is not allowed for your rules on this server (rules.user_pipes)' },
  { name: 'a pipe not on the allowed list', text: 'pipe:/bin/sh', policy: { pipes: ['/usr/bin/filter'] }, want: 'rule 1, column 1: pipe: may run only /usr/bin/filter here, not "/bin/sh" (rules.user_pipes)' },
  { name: 'uid=', text: 'folder:X uid=0', want: 'rule 1, column 10: uid= is not allowed in your rules: your rules always deliver as you' },
  { name: 'gid=', text: 'folder:X gid=root', want: 'rule 1, column 10: gid= is not allowed in your rules: your rules always deliver as you' },
  { name: 'maxsize=', text: 'folder:X maxsize=1k', want: 'rule 1, column 10: maxsize= is not allowed in your rules: size limits are set by the administrator (a size condition does what you want: size>10M)' },
  { name: 'concurrency=', text: 'folder:X concurrency=9', want: 'rule 1, column 10: concurrency= is not allowed in your rules: delivery slots are set by the administrator' },
  { name: 'locked', text: 'folder:X locked', want: 'rule 1, column 10: locked is not allowed in your rules: locked rules are the administrator\'s' },
  { name: 'a list destination', text: 'list:dev@example.test', want: 'rule 1, column 1: list: destinations are set by the administrator' },
  { name: 'a probe destination', text: 'probe', want: 'rule 1, column 1: probe addresses are set by the administrator (mailmond)' },
  { name: 'a folder with a slash', text: 'folder:a/b', want: 'rule 1, column 8: bad folder "a/b" (want a name without "/" that does not start with ".")' },
  { name: 'a folder starting with a dot', text: 'folder:..', want: 'rule 1, column 8: bad folder ".." (want a name without "/" that does not start with ".")' },
  { name: 'folder: without a default Maildir', text: 'folder:X', policy: { defaultMaildir: undefined }, want: 'rule 1, column 1: folder: needs a Maildir, and this address\'s default destination is not one: use maildir:~/PATH' },
  { name: 'a line break', text: 'folder:X\nfolder:Y', want: 'rule 1, column 9: a rule is one line of text (no line breaks or control characters)' },
  { name: 'too long', text: `folder:X header:Subject=${'a'.repeat(2000)}`, want: 'rule 1: 2024 characters long, more than the 2000 a rule may have' },
  { name: 'an unterminated quote, at its column', text: 'folder:X "header:Subject=a b', want: 'rule 1, column 10: unterminated double quote' },
  { name: 'a vacation text_file', text: 'vacation text_file=/etc/shadow', want: 'rule 1, column 10: text_file= is not allowed in your rules: the server would read that file with its own privileges, not yours; write the reply as text="…" (a line break is \\n)' },
  { name: 'a vacation from someone else', text: 'vacation text=x from=boss@example.test', want: 'rule 1, column 17: from= may only be this address itself (alice@example.test): a reply must not claim to come from someone else' },
  { name: 'a vacation from= when the server did not say whose the rules are', text: 'vacation text=x from=alice@example.test', policy: { address: undefined }, want: 'rule 1, column 17: from= may only be this address itself: a reply must not claim to come from someone else' },
  { name: 'a vacation days out of range, at its column', text: 'vacation text=x days=400', want: 'rule 1, column 22: days must be a whole number from 1 to 365, not "400"' },
  { name: 'nothing', text: '   ', want: 'rule 1: empty rule (a rule starts with its destination, e.g. folder:NAME)' },
];

for (const c of bad) {
  test(`a user rule is refused with its column: ${c.name}`, () => {
    const policy = { ...POLICY, ...c.policy };
    if (c.policy && 'defaultMaildir' in c.policy && c.policy.defaultMaildir === undefined) delete (policy as { defaultMaildir?: string }).defaultMaildir;
    assert.equal(parseUserRule(c.text, 1, policy), c.want);
  });
}

test('a list of user rules is held to the rule and forward limits', () => {
  const fwd = parseUserRule('forward:a@b.example', 1, POLICY) as Rule;
  const folder = parseUserRule('folder:X', 1, POLICY) as Rule;
  assert.equal(checkUserRuleSet([fwd, fwd, folder], { maxRules: 3, maxForwards: 2 }), undefined);
  assert.equal(checkUserRuleSet([fwd, fwd, fwd], { maxRules: 3, maxForwards: 2 }), 'at most 2 forward: rules per address (rules.user_max_forwards)');
  assert.equal(checkUserRuleSet([folder, folder, folder, folder], { maxRules: 3, maxForwards: 2 }), 'at most 3 rules per address (rules.user_max_rules)');
});
