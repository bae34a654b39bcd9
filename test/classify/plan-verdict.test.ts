// The planner with what the recipient layer now gives it (issue "the recipient
// layer"): the owner's spam verdict in the facts, so `spam` / `score>=N`
// rules written in the tables' own syntax choose the copies; templates
// expanded once, ${home} included, so a sender-chosen extension "${home}"
// stays that text; candidateUsers/ownerOf name who to look up first.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { candidateUsers, ownerOf, planDelivery, type MessageFacts, type PlanDefaults, type PlanStep } from '../../src/classify/plan.js';
import type { Rule } from '../../src/classify/rules.js';
import { parseTableSource } from '../../src/db/index.js';
import { parseRecipient } from '../../src/mail/address.js';

function rulesOf(source: string): readonly Rule[] {
  const parsed = parseTableSource('rules', source, 'db/rules');
  assert.deepEqual(parsed.errors, [], 'the source parses');
  return [...parsed.entries.values()][0] ?? [];
}

const DEFAULTS: PlanDefaults = { destination: { kind: 'maildir', path: '/var/mail/${user}/Maildir/' }, user: 'nobody' };
const facts = (spam?: MessageFacts['spam']): MessageFacts => ({
  sender: 's@remote.test', size: 100, headers: new Map(), ...(spam !== undefined ? { spam } : {}),
});
const folders = (steps: readonly PlanStep[]): (string | undefined)[] => steps.map((s) => (s.destination.kind === 'maildir' ? s.destination.folder ?? 'INBOX' : s.destination.kind));

const SPAM_RULES = `
bob@example.test  maildir:/var/mail/bob/Maildir/  folder=Junk  spam  stop
bob@example.test  maildir:/var/mail/bob/Maildir/  folder=Maybe  score>=3  stop
bob@example.test  maildir:/var/mail/bob/Maildir/
`;

const verdicts: { name: string; spam?: MessageFacts['spam']; want: (string | undefined)[] }[] = [
  { name: 'a spam verdict makes the "spam" rule take the message', spam: { isSpam: true, score: 9.1 }, want: ['Junk'] },
  { name: 'a score of 4 below the threshold is not spam but makes "score>=3" hold', spam: { isSpam: false, score: 4 }, want: ['Maybe'] },
  { name: 'a low score goes to the inbox', spam: { isSpam: false, score: -1.2 }, want: ['INBOX'] },
  { name: 'without a verdict (checking off, or failing open) neither holds', want: ['INBOX'] },
];

for (const c of verdicts) {
  test(`planDelivery with the owner's verdict: ${c.name}`, () => {
    const plan = planDelivery({ recipient: parseRecipient('bob@example.test', '+'), rules: rulesOf(SPAM_RULES), facts: facts(c.spam), defaults: DEFAULTS });
    assert.equal(plan.kind, 'deliver');
    assert.deepEqual(folders(plan.kind === 'deliver' ? plan.steps : []), c.want);
  });
}

test('score>=5 and spam hold together for a score of 5 with a spam verdict; the rule needs both', () => {
  const rules = rulesOf('bob@example.test  discard  spam  score>=5\n');
  const hit = planDelivery({ recipient: parseRecipient('bob@example.test', '+'), rules, facts: facts({ isSpam: true, score: 5 }), defaults: DEFAULTS });
  assert.deepEqual(hit.kind === 'deliver' ? hit.steps.map((s) => s.destination.kind) : [], ['discard']);
  const miss = planDelivery({ recipient: parseRecipient('bob@example.test', '+'), rules, facts: facts({ isSpam: true, score: 4.9 }), defaults: DEFAULTS });
  assert.deepEqual(miss.kind === 'deliver' ? miss.steps.map((s) => s.origin) : [], ['default']);
});

const FOLDER_RULES = 'bob@example.test  maildir:${home}/Maildir/  folder=${extension}\n';

test('templates are expanded once: an extension "${home}" stays that text, while ${home} in the path is the home', () => {
  const plan = planDelivery({
    recipient: parseRecipient('bob+${home}@example.test', '+'), rules: rulesOf(FOLDER_RULES), facts: facts(), defaults: DEFAULTS,
    homeOf: (user) => (user === 'nobody' ? '/home/bob' : undefined),
  });
  assert.deepEqual(plan.kind === 'deliver' ? plan.steps.map((s) => s.destination) : [], [{ kind: 'maildir', path: '/home/bob/Maildir/', folder: '${home}' }]);
});

test('an extension with a slash becomes a folder name with "_", never a path', () => {
  const plan = planDelivery({
    recipient: parseRecipient('bob+../../etc@example.test', '+'), rules: rulesOf(FOLDER_RULES), facts: facts(), defaults: DEFAULTS,
    homeOf: () => '/home/bob',
  });
  assert.deepEqual(plan.kind === 'deliver' ? plan.steps.map((s) => s.destination) : [], [{ kind: 'maildir', path: '/home/bob/Maildir/', folder: '_.._.._etc' }]);
});

test('without a known home ${home} stays as written (what `rules test` shows before a lookup)', () => {
  const plan = planDelivery({ recipient: parseRecipient('bob@example.test', '+'), rules: rulesOf(FOLDER_RULES), facts: facts(), defaults: DEFAULTS });
  assert.deepEqual(plan.kind === 'deliver' ? plan.steps.map((s) => s.destination) : [], [{ kind: 'maildir', path: '${home}/Maildir/' }]);
});

test('a rule whose uid= names another user expands ${home} with that user\'s home', () => {
  const rules = rulesOf('bob@example.test  mbox:${home}/archive  uid=archive\nbob@example.test  maildir:${home}/Maildir/\n');
  const homes: Record<string, string> = { bob: '/home/bob', archive: '/srv/archive' };
  const plan = planDelivery({ recipient: parseRecipient('bob@example.test', '+'), rules, uid: 'bob', facts: facts(), defaults: DEFAULTS, homeOf: (u) => homes[u] });
  assert.deepEqual(plan.kind === 'deliver' ? plan.steps.map((s) => [s.user, s.destination.kind === 'reject' ? '' : JSON.stringify(s.destination)]) : [], [
    ['archive', JSON.stringify({ kind: 'mbox', path: '/srv/archive/archive' })],
    ['bob', JSON.stringify({ kind: 'maildir', path: '/home/bob/Maildir/' })],
  ]);
});

test('candidateUsers names every identity the rules could deliver as, the owner last; ownerOf is the uid table\'s user', () => {
  const rules = rulesOf('bob@example.test  mbox:/a  uid=archive gid=mail\nbob@example.test  "reject:5.7.1 no"  uid=never\nbob@example.test  maildir:/m/\n');
  assert.deepEqual(candidateUsers({ rules, uid: 'bob', defaults: DEFAULTS }), [{ user: 'archive', group: 'mail' }, { user: 'bob' }]);
  assert.deepEqual(ownerOf({ uid: 'bob', defaults: DEFAULTS }), { user: 'bob' });
  assert.deepEqual(ownerOf({ defaults: { ...DEFAULTS, group: 'mail' } }), { user: 'nobody', group: 'mail' });
});
