// The table source parser (src/db/source.ts): every destination, condition
// and option a rule line may hold, uid/gid/lists values, continuation and
// comment lines, and the exact file:line message for each kind of mistake.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Destination, Rule, TableName } from '../../src/classify/rules.js';
import { formatSourceError, parseTableSource } from '../../src/db/index.js';

const FILE = 'db/rules';
const MAILDIR = { kind: 'maildir', path: '/m' } as const satisfies Destination;

/** The rule a one-line source "k LINE" should give. */
function rule(destination: Destination, extra: Partial<Rule> = {}): Rule {
  return { destination, conditions: [], stop: false, origin: `${FILE}:1`, ...extra };
}

const goodRules: { name: string; line: string; want: Rule }[] = [
  { name: 'maildir', line: 'maildir:./var/mail/${user}/Maildir/', want: rule({ kind: 'maildir', path: './var/mail/${user}/Maildir/' }) },
  { name: 'maildir with folder', line: 'maildir:/m folder=dev', want: rule({ kind: 'maildir', path: '/m', folder: 'dev' }) },
  { name: 'folder from the extension', line: 'maildir:/m folder=${extension}', want: rule({ kind: 'maildir', path: '/m', folder: '${extension}' }) },
  { name: 'quoted folder with a space', line: 'maildir:/m folder="Old Mail"', want: rule({ kind: 'maildir', path: '/m', folder: 'Old Mail' }) },
  { name: 'mbox', line: 'mbox:${home}/mbox', want: rule({ kind: 'mbox', path: '${home}/mbox' }) },
  { name: 'pipe split into argv', line: 'pipe:"/usr/bin/filter -u ${user}"', want: rule({ kind: 'pipe', argv: ['/usr/bin/filter', '-u', '${user}'] }) },
  { name: 'pipe with a single-quoted word', line: `pipe:"/bin/x 'two words' a'b c'd"`, want: rule({ kind: 'pipe', argv: ['/bin/x', 'two words', 'ab cd'] }) },
  { name: 'pipe without quotes', line: 'pipe:/bin/true', want: rule({ kind: 'pipe', argv: ['/bin/true'] }) },
  { name: 'forward', line: 'forward:carol@elsewhere.example', want: rule({ kind: 'forward', address: 'carol@elsewhere.example' }) },
  { name: 'list, lower-cased', line: 'list:Dev@Example.Test', want: rule({ kind: 'list', name: 'dev@example.test' }) },
  { name: 'discard', line: 'discard', want: rule({ kind: 'discard' }) },
  { name: 'reject with code and text', line: 'reject:"5.7.1 Not  here"', want: rule({ kind: 'reject', code: '5.7.1', text: 'Not  here' }) },
  { name: 'temporary reject without text', line: 'reject:4.2.1', want: rule({ kind: 'reject', code: '4.2.1', text: '' }) },
  {
    name: 'header glob',
    line: 'maildir:/m header:List-Id=*dev.example.test*',
    want: rule(MAILDIR, { conditions: [{ kind: 'header', name: 'List-Id', pattern: { kind: 'glob', glob: '*dev.example.test*' }, negate: false }] }),
  },
  {
    name: 'negated header regex, quoted for a space',
    line: 'maildir:/m !header:Subject~"/big invoice\\s/i"',
    want: rule(MAILDIR, { conditions: [{ kind: 'header', name: 'Subject', pattern: { kind: 'regex', source: 'big invoice\\s', flags: 'i' }, negate: true }] }),
  },
  {
    name: 'regex keeps backslashes and slashes',
    line: 'maildir:/m header:X-Path~/^a\\/b\\.c$/',
    want: rule(MAILDIR, { conditions: [{ kind: 'header', name: 'X-Path', pattern: { kind: 'regex', source: '^a\\/b\\.c$', flags: '' }, negate: false }] }),
  },
  {
    name: 'sender glob and the null sender',
    line: 'maildir:/m sender=*@example.org !sender=""',
    want: rule(MAILDIR, {
      conditions: [
        { kind: 'sender', pattern: { kind: 'glob', glob: '*@example.org' }, negate: false },
        { kind: 'sender', pattern: { kind: 'glob', glob: '' }, negate: true },
      ],
    }),
  },
  {
    name: 'extension glob and regex',
    line: 'maildir:/m extension=?* extension~/^lists$/',
    want: rule(MAILDIR, {
      conditions: [
        { kind: 'extension', pattern: { kind: 'glob', glob: '?*' }, negate: false },
        { kind: 'extension', pattern: { kind: 'regex', source: '^lists$', flags: '' }, negate: false },
      ],
    }),
  },
  {
    name: 'sizes with every comparison and unit',
    line: 'maildir:/m size>1M size>=512k size<1G size<=100 size=2K',
    want: rule(MAILDIR, {
      conditions: [
        { kind: 'size', op: '>', bytes: 1048576 },
        { kind: 'size', op: '>=', bytes: 524288 },
        { kind: 'size', op: '<', bytes: 1073741824 },
        { kind: 'size', op: '<=', bytes: 100 },
        { kind: 'size', op: '=', bytes: 2048 },
      ],
    }),
  },
  {
    name: 'spam verdict and score',
    line: 'discard spam !spam score>=5 score<-0.5',
    want: rule({ kind: 'discard' }, {
      conditions: [
        { kind: 'spam', is: true },
        { kind: 'spam', is: false },
        { kind: 'score', op: '>=', value: 5 },
        { kind: 'score', op: '<', value: -0.5 },
      ],
    }),
  },
  {
    name: 'every option, mixed with conditions',
    line: 'maildir:/m stop uid=alice spam gid=100 maxsize=10M concurrency=4',
    want: rule(MAILDIR, { conditions: [{ kind: 'spam', is: true }], uid: 'alice', gid: '100', maxsize: 10485760, concurrency: 4, stop: true }),
  },
];

for (const c of goodRules) {
  void test(`a rule line parses: ${c.name}`, () => {
    const got = parseTableSource('rules', `alice@example.test ${c.line}\n`, FILE);
    assert.deepEqual(got.errors, []);
    assert.deepEqual(got.entries.get('alice@example.test'), [c.want]);
  });
}

const bad: { name: string; table: TableName; text: string; want: string[] }[] = [
  { name: 'unknown destination', table: 'rules', text: 'a maildri:/m', want: ['db/rules:1: unknown destination kind "maildri" (a rule starts with its destination: maildir, mbox, pipe, forward, list, discard or reject)'] },
  { name: 'a condition where the destination goes', table: 'rules', text: 'a spam discard', want: ['db/rules:1: unknown destination kind "spam" (a rule starts with its destination: maildir, mbox, pipe, forward, list, discard or reject)', 'db/rules:1: second destination "discard": a rule has one destination, so give each its own line'] },
  { name: 'two destinations', table: 'rules', text: 'a mbox:/m\n  maildir:/m', want: ['db/rules:2: second destination "maildir:/m": a rule has one destination, so give each its own line'] },
  { name: 'no destination', table: 'rules', text: 'a', want: ['db/rules:1: rule has no destination (want maildir, mbox, pipe, forward, list, discard or reject)'] },
  { name: 'maildir without a path', table: 'rules', text: 'a maildir:', want: ['db/rules:1: maildir needs a path: maildir:PATH'] },
  { name: 'mbox path ending in /', table: 'rules', text: 'a mbox:/var/mail/', want: ['db/rules:1: mbox path "/var/mail/" ends in "/": an mbox is a file'] },
  { name: 'empty pipe', table: 'rules', text: 'a pipe:""', want: ['db/rules:1: pipe needs a command: pipe:"/path/to/program ARG…"'] },
  { name: 'unterminated single quote in pipe', table: 'rules', text: `a pipe:"/bin/x 'oops"`, want: [`db/rules:1: unterminated single quote in pipe command "/bin/x 'oops"`] },
  { name: 'forward without a domain', table: 'rules', text: 'a forward:carol', want: ['db/rules:1: bad forward address "carol" (want user@domain)'] },
  { name: 'forward with a variable', table: 'rules', text: 'a forward:${user}@x.test', want: ['db/rules:1: forward address "${user}@x.test" cannot use variables'] },
  { name: 'discard with an argument', table: 'rules', text: 'a discard:now', want: ['db/rules:1: discard takes no argument'] },
  { name: 'reject with a 2xx code', table: 'rules', text: 'a reject:"2.0.0 ok"', want: ['db/rules:1: reject code "2.0.0" must be an enhanced status code 4.x.x or 5.x.x (quote it with the text: reject:"5.7.1 text")'] },
  { name: 'reject text not quoted', table: 'rules', text: 'a reject:5.7.1 Go', want: ['db/rules:1: unknown condition or option "Go"'] },
  { name: 'unknown variable', table: 'rules', text: 'a maildir:/m/${usr}/', want: ['db/rules:1: unknown variable ${usr} in "/m/${usr}/" (known: user, local, extension, domain, address, home)'] },
  { name: 'unterminated variable', table: 'rules', text: 'a mbox:/m/${user', want: ['db/rules:1: unterminated "${" in "/m/${user"'] },
  { name: 'folder on mbox', table: 'rules', text: 'a mbox:/m folder=x', want: ['db/rules:1: folder= applies only to a maildir destination'] },
  { name: 'folder with a slash', table: 'rules', text: 'a maildir:/m folder=a/b', want: ['db/rules:1: bad folder "a/b" (want a name without "/")'] },
  { name: 'bad regex', table: 'rules', text: 'a discard header:X~/a(/', want: ['db/rules:1: bad regex in "header:X~/a(/": Invalid regular expression: /a(/: Unterminated group'] },
  { name: 'regex g flag', table: 'rules', text: 'a discard sender~/x/g', want: ['db/rules:1: regex flag "g" not allowed in "sender~/x/g" (use i, m, s, u)'] },
  { name: 'regex without slashes', table: 'rules', text: 'a discard sender~x', want: ['db/rules:1: bad regex "x" in "sender~x" (want /REGEX/FLAGS)'] },
  { name: 'malformed header condition', table: 'rules', text: 'a discard header:=x', want: ['db/rules:1: unknown condition or option "header:=x" (want header:NAME=GLOB or header:NAME~/REGEX/FLAGS)'] },
  { name: 'bad size', table: 'rules', text: 'a discard size>10X', want: ['db/rules:1: bad size "10X" (want bytes or a number with k, M or G, e.g. 512k, 10M)'] },
  { name: 'bad maxsize', table: 'rules', text: 'a discard maxsize=lots', want: ['db/rules:1: bad size "lots" (want bytes or a number with k, M or G, e.g. 512k, 10M)'] },
  { name: 'zero maxsize', table: 'rules', text: 'a discard maxsize=0', want: ['db/rules:1: maxsize must be more than 0'] },
  { name: 'concurrency not a whole number', table: 'rules', text: 'a discard concurrency=2.5', want: ['db/rules:1: concurrency must be a whole number from 1 to 1000, not "2.5"'] },
  { name: 'concurrency zero', table: 'rules', text: 'a discard concurrency=0', want: ['db/rules:1: concurrency must be a whole number from 1 to 1000, not "0"'] },
  { name: 'bad score', table: 'rules', text: 'a discard score>high', want: ['db/rules:1: bad score "high" (want a number, e.g. 5 or -0.5)'] },
  { name: 'negated size', table: 'rules', text: 'a discard !size>1M', want: ['db/rules:1: "!size>1M" cannot be negated: use the opposite comparison'] },
  { name: 'option twice', table: 'rules', text: 'a discard stop uid=x uid=y stop', want: ['db/rules:1: option uid given twice', 'db/rules:1: option stop given twice'] },
  { name: 'bad uid option', table: 'rules', text: 'a discard uid=-x', want: ['db/rules:1: bad uid "-x" (want a user name or a number up to 4294967294)'] },
  { name: 'unknown option', table: 'rules', text: 'a discard foo=bar', want: ['db/rules:1: unknown condition or option "foo=bar"'] },
  { name: 'bad key', table: 'rules', text: 'a@ discard\n@ discard\na@b@c discard', want: ['db/rules:1: bad key "a@" (want user@domain, user+ext@domain, user or @domain)', 'db/rules:2: bad key "@" (want user@domain, user+ext@domain, user or @domain)', 'db/rules:3: bad key "a@b@c" (want user@domain, user+ext@domain, user or @domain)'] },
  { name: 'unterminated double quote', table: 'rules', text: 'a reject:"5.7.1 oops', want: ['db/rules:1: unterminated double quote'] },
  { name: 'continuation with nothing before it', table: 'rules', text: '# header\n  discard', want: ['db/rules:2: continuation line (it starts with white space) but no entry before it'] },
  { name: 'uid with no value', table: 'uid', text: 'a@x', want: ['db/rules:1: want exactly one user name or number after the key'] },
  { name: 'gid with two values', table: 'gid', text: 'a@x mail\n  staff', want: ['db/rules:2: want exactly one group name or number after the key'] },
  { name: 'uid out of range', table: 'uid', text: 'a@x 4294967295', want: ['db/rules:1: bad uid "4294967295" (want a user name or a number up to 4294967294)'] },
  { name: 'duplicate uid key, any case', table: 'uid', text: 'a@x alice\nA@X bob', want: ['db/rules:2: duplicate key "a@x" (first given at line 1)'] },
  { name: 'list without a mode', table: 'lists', text: 'dev@x', want: ['db/rules:1: list mode must be open, closed or moderated, found none'] },
  { name: 'unknown list mode', table: 'lists', text: 'dev@x private', want: ['db/rules:1: list mode must be open, closed or moderated, found "private"'] },
  { name: 'bad manager', table: 'lists', text: 'dev@x open manager=mailman', want: ['db/rules:1: bad manager "mailman" (want lmtp:unix:/PATH, lmtp:inet:HOST:PORT, pipe:COMMAND or "")'] },
  { name: 'unknown list option', table: 'lists', text: 'dev@x open owner=a@x', want: ['db/rules:1: unknown list option "owner=a@x" (want manager=… or subscribers=…)'] },
  {
    name: 'bad, empty and repeated subscribers, each on its own line',
    table: 'lists',
    text: 'dev@x open subscribers=a@x,\n  bob,\n  ,A@X',
    want: ['db/rules:2: bad subscriber "bob" (want user@domain)', 'db/rules:3: empty subscriber (two commas in a row, or a trailing comma at the end of the entry)', 'db/rules:3: subscriber "a@x" listed twice'],
  },
  { name: 'duplicate list', table: 'lists', text: 'dev@x open\ndev@x closed', want: ['db/rules:2: duplicate key "dev@x" (first given at line 1)'] },
];

for (const c of bad) {
  void test(`a bad ${c.table} source is reported with file:line: ${c.name}`, () => {
    const got = parseTableSource(c.table, c.text, FILE);
    assert.deepEqual(got.errors.map(formatSourceError), c.want);
  });
}

test('every bad line is reported, in file order, and good lines still parse', () => {
  const text = ['a maildri:/m', 'a discard', 'b  "unclosed', 'c discard size>1Q', 'c discard'].join('\n');
  const got = parseTableSource('rules', text, 'src/rules');
  assert.deepEqual(got.errors.map((e) => [e.line, e.file]), [[1, 'src/rules'], [3, 'src/rules'], [4, 'src/rules']]);
  assert.deepEqual([...got.entries.keys()], ['a', 'c']);
});

test('continuation lines, comments and blank lines join one entry', () => {
  const text = [
    '# a comment',
    '',
    'Alice@Example.TEST  maildir:/m',
    '    # a comment between continuation lines',
    '',
    '\tfolder=dev',
    '    header:List-Id=*dev*  stop   ',
    'alice@example.test  mbox:/m#1',
  ].join('\r\n');
  const got = parseTableSource('rules', text, FILE);
  assert.deepEqual(got.errors, []);
  assert.deepEqual(got.entries.get('alice@example.test'), [
    rule({ kind: 'maildir', path: '/m', folder: 'dev' }, {
      conditions: [{ kind: 'header', name: 'List-Id', pattern: { kind: 'glob', glob: '*dev*' }, negate: false }],
      stop: true,
      origin: 'db/rules:3',
    }),
    // A "#" inside a line is part of the word, not a comment.
    rule({ kind: 'mbox', path: '/m#1' }, { origin: 'db/rules:8' }),
  ]);
});

const goodValues: { name: string; table: TableName; text: string; want: [string, unknown][] }[] = [
  { name: 'uid names and numbers, keys lower-cased', table: 'uid', text: 'Alice@Example.Test alice\n@example.test 1003\nbob+x samba$', want: [['alice@example.test', 'alice'], ['@example.test', '1003'], ['bob+x', 'samba$']] },
  { name: 'gid', table: 'gid', text: 'alice mail', want: [['alice', 'mail']] },
  { name: 'an empty source', table: 'lists', text: '# nothing yet\n', want: [] },
  {
    name: 'a list with subscribers over continuation lines',
    table: 'lists',
    text: 'Dev@Example.Test closed manager=""\n  subscribers=Alice@Example.Test,\n              bob@example.test, carol@example.test',
    want: [['dev@example.test', { mode: 'closed', manager: '', subscribers: ['alice@example.test', 'bob@example.test', 'carol@example.test'], origin: 'db/lists:1' }]],
  },
  {
    name: 'every manager form, subscribers= given twice',
    table: 'lists',
    text: [
      'a@x open manager=lmtp:unix:/run/mailman/lmtp subscribers=p@x subscribers=q@x',
      'b@x moderated manager=lmtp:inet:[::1]:8024',
      'c@x open manager=lmtp:inet:localhost:8024',
      'd@x closed manager="pipe:/usr/lib/mailman/mail/mailman post d"',
    ].join('\n'),
    want: [
      ['a@x', { mode: 'open', manager: 'lmtp:unix:/run/mailman/lmtp', subscribers: ['p@x', 'q@x'], origin: 'db/lists:1' }],
      ['b@x', { mode: 'moderated', manager: 'lmtp:inet:[::1]:8024', subscribers: [], origin: 'db/lists:2' }],
      ['c@x', { mode: 'open', manager: 'lmtp:inet:localhost:8024', subscribers: [], origin: 'db/lists:3' }],
      ['d@x', { mode: 'closed', manager: 'pipe:/usr/lib/mailman/mail/mailman post d', subscribers: [], origin: 'db/lists:4' }],
    ],
  },
];

for (const c of goodValues) {
  void test(`a ${c.table} source parses: ${c.name}`, () => {
    const got = parseTableSource(c.table, c.text, `db/${c.table}`);
    assert.deepEqual(got.errors, []);
    assert.deepEqual([...got.entries], c.want);
  });
}

test('rules of one key are kept in file order, across other keys', () => {
  const got = parseTableSource('rules', 'a mbox:/1\nb discard\nA mbox:/2', FILE);
  assert.deepEqual(got.entries.get('a')?.map((r) => [r.destination, r.origin]), [
    [{ kind: 'mbox', path: '/1' }, 'db/rules:1'],
    [{ kind: 'mbox', path: '/2' }, 'db/rules:3'],
  ]);
});

test('an error about the whole file formats without a line number', () => {
  assert.equal(formatSourceError({ file: 'db/rules', line: 0, message: 'missing' }), 'db/rules: missing');
});
