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
  { name: 'vacation with a text, seven days by default', line: 'vacation text="Away until Monday."', want: rule({ kind: 'vacation', text: 'Away until Monday.', days: 7 }) },
  { name: 'vacation text: \\n is a line break, other backslashes stay', line: String.raw`vacation "text=Away.\nBack on the 5th. C:\\dir \d"`, want: rule({ kind: 'vacation', text: 'Away.\nBack on the 5th. C:\\dir \\d', days: 7 }) },
  {
    name: 'vacation with every option, addresses lower-cased',
    line: 'vacation text_file=/etc/vacation/${user}.txt subject="Out of office" days=14 from=alice@example.test until=2026-08-31 addresses=Alice@Example.TEST,a.smith@example.test spam stop',
    want: rule({ kind: 'vacation', textFile: '/etc/vacation/${user}.txt', subject: 'Out of office', days: 14, from: 'alice@example.test', until: '2026-08-31', addresses: ['alice@example.test', 'a.smith@example.test'] }, { conditions: [{ kind: 'spam', is: true }], stop: true }),
  },
  { name: 'vacation days at the bounds', line: 'vacation text=x days=1', want: rule({ kind: 'vacation', text: 'x', days: 1 }) },
  { name: 'vacation days at the upper bound', line: 'vacation text=x days=365', want: rule({ kind: 'vacation', text: 'x', days: 365 }) },
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
  { name: 'a locked rule (before the owner\'s own)', line: 'maildir:/archive locked', want: rule({ kind: 'maildir', path: '/archive' }, { locked: true }) },
  { name: 'mailmond\'s probe address', line: 'probe', want: rule({ kind: 'probe' }) },
];

for (const c of goodRules) {
  void test(`a rule line parses: ${c.name}`, () => {
    const got = parseTableSource('rules', `alice@example.test ${c.line}\n`, FILE);
    assert.deepEqual(got.errors, []);
    assert.deepEqual(got.entries.get('alice@example.test'), [c.want]);
  });
}

const bad: { name: string; table: TableName; text: string; want: string[] }[] = [
  { name: 'unknown destination', table: 'rules', text: 'a maildri:/m', want: ['db/rules:1: unknown destination kind "maildri" (a rule starts with its destination: maildir, mbox, pipe, forward, list, vacation, discard, probe or reject)'] },
  { name: 'a condition where the destination goes', table: 'rules', text: 'a spam discard', want: ['db/rules:1: unknown destination kind "spam" (a rule starts with its destination: maildir, mbox, pipe, forward, list, vacation, discard, probe or reject)', 'db/rules:1: second destination "discard": a rule has one destination, so give each its own line'] },
  { name: 'two destinations', table: 'rules', text: 'a mbox:/m\n  maildir:/m', want: ['db/rules:2: second destination "maildir:/m": a rule has one destination, so give each its own line'] },
  { name: 'no destination', table: 'rules', text: 'a', want: ['db/rules:1: rule has no destination (want maildir, mbox, pipe, forward, list, vacation, discard, probe or reject)'] },
  { name: 'probe with an argument', table: 'rules', text: 'a probe:secret', want: ['db/rules:1: probe takes no argument (the key is probe.key in the config file)'] },
  { name: 'maildir without a path', table: 'rules', text: 'a maildir:', want: ['db/rules:1: maildir needs a path: maildir:PATH'] },
  { name: 'mbox path ending in /', table: 'rules', text: 'a mbox:/var/mail/', want: ['db/rules:1: mbox path "/var/mail/" ends in "/": an mbox is a file'] },
  { name: 'empty pipe', table: 'rules', text: 'a pipe:""', want: ['db/rules:1: pipe needs a command: pipe:"/path/to/program ARG…"'] },
  { name: 'unterminated single quote in pipe', table: 'rules', text: `a pipe:"/bin/x 'oops"`, want: [`db/rules:1: unterminated single quote in pipe command "/bin/x 'oops"`] },
  { name: 'forward without a domain', table: 'rules', text: 'a forward:carol', want: ['db/rules:1: bad forward address "carol" (want user@domain)'] },
  { name: 'forward with a variable', table: 'rules', text: 'a forward:${user}@x.test', want: ['db/rules:1: forward address "${user}@x.test" cannot use variables'] },
  { name: 'discard with an argument', table: 'rules', text: 'a discard:now', want: ['db/rules:1: discard takes no argument'] },
  { name: 'reject with a 2xx code', table: 'rules', text: 'a reject:"2.0.0 ok"', want: ['db/rules:1: reject code "2.0.0" must be an enhanced status code 4.x.x or 5.x.x (quote it with the text: reject:"5.7.1 text")'] },
  { name: 'reject text not quoted', table: 'rules', text: 'a reject:5.7.1 Go', want: ['db/rules:1:16: unknown condition or option "Go"'] },
  { name: 'unknown variable', table: 'rules', text: 'a maildir:/m/${usr}/', want: ['db/rules:1: unknown variable ${usr} in "/m/${usr}/" (known: user, local, extension, domain, address, home)'] },
  { name: 'unterminated variable', table: 'rules', text: 'a mbox:/m/${user', want: ['db/rules:1: unterminated "${" in "/m/${user"'] },
  { name: 'folder on mbox', table: 'rules', text: 'a mbox:/m folder=x', want: ['db/rules:1: folder= applies only to a maildir destination'] },
  { name: 'folder with a slash', table: 'rules', text: 'a maildir:/m folder=a/b', want: ['db/rules:1: bad folder "a/b" (want a name without "/")'] },
  { name: 'bad regex', table: 'rules', text: 'a discard header:X~/a(/', want: ['db/rules:1:22: bad regex in "header:X~/a(/": missing closing ")"'] },
  { name: 'regex g flag', table: 'rules', text: 'a discard sender~/x/g', want: ['db/rules:1:21: bad regex in "sender~/x/g": regex flag "g" not allowed (use i, m, s, u)'] },
  { name: 'regex without slashes', table: 'rules', text: 'a discard sender~x', want: ['db/rules:1:18: bad regex "x" in "sender~x" (want /REGEX/FLAGS)'] },
  { name: 'malformed header condition', table: 'rules', text: 'a discard header:=x', want: ['db/rules:1:11: unknown condition or option "header:=x" (want header:NAME=GLOB or header:NAME~/REGEX/FLAGS)'] },
  { name: 'bad size', table: 'rules', text: 'a discard size>10X', want: ['db/rules:1: bad size "10X" (want bytes or a number with k, M or G, e.g. 512k, 10M)'] },
  { name: 'bad maxsize', table: 'rules', text: 'a discard maxsize=lots', want: ['db/rules:1: bad size "lots" (want bytes or a number with k, M or G, e.g. 512k, 10M)'] },
  { name: 'zero maxsize', table: 'rules', text: 'a discard maxsize=0', want: ['db/rules:1: maxsize must be more than 0'] },
  { name: 'concurrency not a whole number', table: 'rules', text: 'a discard concurrency=2.5', want: ['db/rules:1: concurrency must be a whole number from 1 to 1000, not "2.5"'] },
  { name: 'concurrency zero', table: 'rules', text: 'a discard concurrency=0', want: ['db/rules:1: concurrency must be a whole number from 1 to 1000, not "0"'] },
  { name: 'bad score', table: 'rules', text: 'a discard score>high', want: ['db/rules:1: bad score "high" (want a number, e.g. 5 or -0.5)'] },
  { name: 'negated size', table: 'rules', text: 'a discard !size>1M', want: ['db/rules:1: "!size>1M" cannot be negated: use the opposite comparison'] },
  { name: 'option twice', table: 'rules', text: 'a discard stop uid=x uid=y stop', want: ['db/rules:1: option uid given twice', 'db/rules:1: option stop given twice'] },
  { name: 'bad uid option', table: 'rules', text: 'a discard uid=-x', want: ['db/rules:1: bad uid "-x" (want a user name or a number up to 4294967294)'] },
  { name: 'unknown option', table: 'rules', text: 'a discard foo=bar', want: ['db/rules:1:11: unknown condition or option "foo=bar"'] },
  { name: 'vacation without a text', table: 'rules', text: 'a vacation days=3', want: ['db/rules:1:3: vacation needs its reply: text="…" (a line break is written \\n) or text_file=PATH'] },
  { name: 'vacation with both texts', table: 'rules', text: 'a vacation text=x text_file=/t', want: ['db/rules:1:19: give text= or text_file=, not both'] },
  { name: 'vacation with an argument', table: 'rules', text: 'a vacation:away', want: ['db/rules:1:11: vacation takes no argument: its reply follows as options, vacation text="…" [subject="…"] [days=N]'] },
  { name: 'vacation days 0', table: 'rules', text: 'a vacation text=x days=0', want: ['db/rules:1:24: days must be a whole number from 1 to 365, not "0"'] },
  { name: 'vacation days over a year', table: 'rules', text: 'a vacation text=x days=366', want: ['db/rules:1:24: days must be a whole number from 1 to 365, not "366"'] },
  { name: 'vacation days not a number', table: 'rules', text: 'a vacation text=x days=1.5', want: ['db/rules:1:24: days must be a whole number from 1 to 365, not "1.5"'] },
  { name: 'vacation days twice', table: 'rules', text: 'a vacation text=x days=1 days=2', want: ['db/rules:1: option days given twice'] },
  { name: 'vacation until not a day', table: 'rules', text: 'a vacation text=x until=2026-02-30', want: ['db/rules:1:25: bad until "2026-02-30" (want the last day of replies as YYYY-MM-DD, e.g. 2026-08-31)'] },
  { name: 'vacation until in another format', table: 'rules', text: 'a vacation text=x until=31.8.2026', want: ['db/rules:1:25: bad until "31.8.2026" (want the last day of replies as YYYY-MM-DD, e.g. 2026-08-31)'] },
  { name: 'vacation from without a domain', table: 'rules', text: 'a vacation text=x from=alice', want: ['db/rules:1:24: bad from address "alice" (want user@domain)'] },
  { name: 'vacation from with a variable', table: 'rules', text: 'a vacation text=x from=${user}@x.test', want: ['db/rules:1:24: from address "${user}@x.test" cannot use variables (without from= the reply comes from the recipient)'] },
  { name: 'vacation addresses with an empty item and a bad one', table: 'rules', text: 'a vacation text=x addresses=a@x,,b', want: ['db/rules:1:33: empty address in addresses= (two commas in a row, or a comma at an end)', 'db/rules:1:34: bad address "b" in addresses= (want user@domain,user@domain)'] },
  { name: 'vacation empty text', table: 'rules', text: 'a vacation text=" "', want: ['db/rules:1:12: text= is empty: write the reply, e.g. text="I am away until Monday."'] },
  { name: 'vacation text with a control character', table: 'rules', text: 'a vacation "text=a\x01b"', want: ['db/rules:1:19: control character U+0001 in text= (a line break is written \\n)'] },
  { name: 'vacation subject with a tab is fine, empty is not', table: 'rules', text: 'a vacation text=x subject=""', want: ['db/rules:1:19: subject= is empty (leave it out for "Auto: " and the original subject)'] },
  { name: 'vacation text_file with an unknown variable', table: 'rules', text: 'a vacation text_file=/v/${usr}', want: ['db/rules:1: unknown variable ${usr} in "/v/${usr}" (known: user, local, extension, domain, address, home)'] },
  { name: 'a vacation option on another destination', table: 'rules', text: 'a maildir:/m days=3 text=x', want: ['db/rules:1:14: days= applies only to a vacation destination', 'db/rules:1:21: text= applies only to a vacation destination'] },
  { name: 'two destinations, the second a vacation', table: 'rules', text: 'a discard vacation', want: ['db/rules:1: second destination "vacation": a rule has one destination, so give each its own line'] },
  { name: 'bad key', table: 'rules', text: 'a@ discard\n@ discard\na@b@c discard', want: ['db/rules:1: bad key "a@" (want user@domain, user+ext@domain, user or @domain)', 'db/rules:2: bad key "@" (want user@domain, user+ext@domain, user or @domain)', 'db/rules:3: bad key "a@b@c" (want user@domain, user+ext@domain, user or @domain)'] },
  { name: 'unterminated double quote', table: 'rules', text: 'a reject:"5.7.1 oops', want: ['db/rules:1:10: unterminated double quote'] },
  { name: 'continuation with nothing before it', table: 'rules', text: '# header\n  discard', want: ['db/rules:2: continuation line (it starts with white space) but no entry before it'] },
  { name: 'uid with no value', table: 'uid', text: 'a@x', want: ['db/rules:1: want exactly one user name or number after the key'] },
  { name: 'gid with two values', table: 'gid', text: 'a@x mail\n  staff', want: ['db/rules:2: want exactly one group name or number after the key'] },
  { name: 'uid out of range', table: 'uid', text: 'a@x 4294967295', want: ['db/rules:1: bad uid "4294967295" (want a user name or a number up to 4294967294)'] },
  { name: 'duplicate uid key, any case', table: 'uid', text: 'a@x alice\nA@X bob', want: ['db/rules:2: duplicate key "a@x" (first given at line 1)'] },
  { name: 'list without a mode', table: 'lists', text: 'dev@x', want: ['db/rules:1: list mode must be open, closed or moderated, found none'] },
  { name: 'unknown list mode', table: 'lists', text: 'dev@x private', want: ['db/rules:1: list mode must be open, closed or moderated, found "private"'] },
  { name: 'bad manager', table: 'lists', text: 'dev@x open manager=mailman', want: ['db/rules:1: bad manager "mailman" (want lmtp:unix:/PATH, lmtp:inet:HOST:PORT, pipe:COMMAND, alias or "")'] },
  { name: 'unknown list option', table: 'lists', text: 'dev@x open owner=a@x', want: ['db/rules:1: unknown list option "owner=a@x" (want manager=… or subscribers=…)'] },
  {
    name: 'bad, empty and repeated subscribers, each on its own line',
    table: 'lists',
    text: 'dev@x open subscribers=a@x,\n  bob,\n  ,A@X',
    want: ['db/rules:2: bad subscriber "bob" (want user@domain)', 'db/rules:3: empty subscriber (two commas in a row, or a trailing comma at the end of the entry)', 'db/rules:3: subscriber "a@x" listed twice'],
  },
  { name: 'duplicate list', table: 'lists', text: 'dev@x open\ndev@x closed', want: ['db/rules:2: duplicate key "dev@x" (first given at line 1)'] },
  { name: 'spam without on or off', table: 'spam', text: 'a@x yes', want: ['db/rules:1: want on or off after the key, found "yes"'] },
  { name: 'spam with nothing after the key', table: 'spam', text: 'a@x', want: ['db/rules:1: want on or off after the key, found nothing'] },
  { name: 'spam threshold not a number', table: 'spam', text: 'a@x on required=high', want: ['db/rules:1:17: bad required "high" (want a score such as 5, 3.5 or -1)'] },
  { name: 'spam on_error unknown', table: 'spam', text: 'a@x on on_error=maybe', want: ['db/rules:1:17: bad on_error "maybe" (want open or closed)'] },
  { name: 'spam option twice', table: 'spam', text: 'a@x on required=1 required=2', want: ['db/rules:1:19: required= given twice'] },
  { name: 'spam option unknown', table: 'spam', text: 'a@x on threshold=3', want: ['db/rules:1:8: unknown spam option "threshold=3" (want required=N or on_error=open|closed)'] },
  { name: 'duplicate spam key', table: 'spam', text: 'a@x on\na@x off', want: ['db/rules:2: duplicate key "a@x" (first given at line 1)'] },
  { name: 'nodes key without a domain', table: 'nodes', text: 'alice lmtp:inet:mb1:24', want: ['db/rules:1: key "alice" names no domain: Postfix\'s transport_maps cannot route a local part in every domain (write user@domain or @domain)'] },
  { name: 'nodes transport misspelt', table: 'nodes', text: 'a@x lmpt:inet:mb1:24', want: ['db/rules:1:5: bad next hop "lmpt:inet:mb1:24" (want lmtp:inet:HOST:PORT, lmtp:unix:/PATH, lmtp:[HOST]:PORT or smtp:[HOST]:PORT)'] },
  { name: 'nodes port out of range', table: 'nodes', text: 'a@x lmtp:inet:mb1:99999', want: ['db/rules:1:5: bad next hop "lmtp:inet:mb1:99999" (want lmtp:inet:HOST:PORT, lmtp:unix:/PATH, lmtp:[HOST]:PORT or smtp:[HOST]:PORT)'] },
  { name: 'nodes with two hops', table: 'nodes', text: 'a@x lmtp:inet:mb1:24 lmtp:inet:mb2:24', want: ['db/rules:1: want exactly one next hop after the key (lmtp:inet:HOST:PORT, lmtp:unix:/PATH or smtp:[HOST]:PORT)'] },
  { name: 'nodes with nothing after the key', table: 'nodes', text: '@x', want: ['db/rules:1: want exactly one next hop after the key (lmtp:inet:HOST:PORT, lmtp:unix:/PATH or smtp:[HOST]:PORT)'] },
  { name: 'duplicate nodes key', table: 'nodes', text: 'a@x smtp:[mb1]:25\nA@x smtp:[mb2]:25', want: ['db/rules:2: duplicate key "a@x" (first given at line 1)'] },
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
  {
    name: 'spam on and off, with a threshold and a failure mode',
    table: 'spam',
    text: '@Example.Test on\npostmaster@example.test off\nalice@example.test on required=3.5 on_error=closed\nbob@example.test on required=-1',
    want: [
      ['@example.test', { check: true, origin: 'db/spam:1' }],
      ['postmaster@example.test', { check: false, origin: 'db/spam:2' }],
      ['alice@example.test', { check: true, required: 3.5, onError: 'closed', origin: 'db/spam:3' }],
      ['bob@example.test', { check: true, required: -1, origin: 'db/spam:4' }],
    ],
  },
  {
    name: 'nodes: every next-hop form Postfix takes',
    table: 'nodes',
    text: '@Example.Test lmtp:inet:mb1.example.test:24\nalice@example.test lmtp:unix:/run/mb.sock\nbob+x@example.test lmtp:[192.0.2.7]:2424\ncarol@example.test smtp:[mb3.example.test]:25\n@other.test lmtp:inet:[2001:db8::1]:24\n@third.test lmtp:inet:mb4',
    want: [
      ['@example.test', 'lmtp:inet:mb1.example.test:24'],
      ['alice@example.test', 'lmtp:unix:/run/mb.sock'],
      ['bob+x@example.test', 'lmtp:[192.0.2.7]:2424'],
      ['carol@example.test', 'smtp:[mb3.example.test]:25'],
      ['@other.test', 'lmtp:inet:[2001:db8::1]:24'],
      ['@third.test', 'lmtp:inet:mb4'],
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

// ---- patterns: what the linear-time matcher refuses, at file:line:column ----

const badPatterns: { name: string; text: string; want: string }[] = [
  {
    name: 'a backreference',
    text: 'a discard header:Subject~/(a)\\1/',
    want: 'db/rules:1:30: bad regex in "header:Subject~/(a)\\1/": backreference \\1 is not supported (patterns run on a linear-time engine, which cannot match what a group captured)',
  },
  {
    name: 'a lookahead inside quotes (the column counts the quote)',
    text: 'a discard header:Subject~"/big (?=x)/i"',
    want: 'db/rules:1:32: bad regex in "header:Subject~/big (?=x)/i": lookahead (?=…) is not supported (patterns run on a linear-time engine, which has no lookaround)',
  },
  {
    name: 'a lookbehind after escaped quotes',
    text: 'a discard "header:X~/\\"a\\"(?<!b)/"',
    want: 'db/rules:1:27: bad regex in "header:X~/"a"(?<!b)/": lookbehind (?<!…) is not supported (patterns run on a linear-time engine, which has no lookaround)',
  },
  {
    name: 'a flag on a continuation line',
    text: 'a discard\n\t  !sender~/x/y',
    want: 'db/rules:2:15: bad regex in "!sender~/x/y": regex flag "y" not allowed (use i, m, s, u)',
  },
  {
    name: 'an escape RE2 would read differently, in an extension condition',
    text: 'a discard extension~/^a\\z/',
    want: 'db/rules:1:24: bad regex in "extension~/^a\\z/": \\z is not an escape (write z alone for the letter)',
  },
  {
    name: 'a repeat count over 1000',
    text: 'a discard header:X~/a{2000}/',
    want: 'db/rules:1:22: bad regex in "header:X~/a{2000}/": invalid repeat count: {2000}',
  },
];

for (const c of badPatterns) {
  test(`a regex the linear-time matcher cannot run is refused at file:line:column: ${c.name}`, () => {
    const got = parseTableSource('rules', c.text, FILE);
    assert.deepEqual(got.errors.map(formatSourceError), [c.want]);
  });
}

test('the pathological patterns from issue 8 compile: they are linear on this engine', () => {
  const got = parseTableSource('rules', 'a discard header:Subject~/(a+)+$/ sender=*a*a*a*a*a*a*a*a*b', FILE);
  assert.deepEqual(got.errors, []);
});

// ---- root, keys and lengths ----

const refusedEntries: { name: string; table: TableName; text: string; allowRoot?: string[]; want: string[] }[] = [
  { name: 'uid root', table: 'uid', text: 'a@x  root', want: ['db/rules:1:6: uid "root" is the superuser: deliveries as root need "a@x" in delivery.allow_root; write "root!" if this entry means it (db/README.md, "Root")'] },
  { name: 'uid 0, however written', table: 'uid', text: 'a@x 0\nb@x 000', want: ['db/rules:1:5: uid "0" is the superuser: deliveries as root need "a@x" in delivery.allow_root; write "0!" if this entry means it (db/README.md, "Root")', 'db/rules:2:5: uid "000" is the superuser: deliveries as root need "b@x" in delivery.allow_root; write "000!" if this entry means it (db/README.md, "Root")'] },
  { name: 'gid root', table: 'gid', text: '@x root', want: ['db/rules:1:4: gid "root" is root\'s group: deliveries as root need "@x" in delivery.allow_root; write "root!" if this entry means it (db/README.md, "Root")'] },
  { name: 'a rule\'s uid= override to root', table: 'rules', text: 'a@x pipe:/bin/cat uid=root', want: ['db/rules:1:23: uid "root" is the superuser: deliveries as root need "a@x" in delivery.allow_root; write "root!" if this entry means it (db/README.md, "Root")'] },
  { name: 'a rule\'s gid= override to 0, quoted', table: 'rules', text: 'a@x discard "gid=0"', want: ['db/rules:1:18: gid "0" is root\'s group: deliveries as root need "a@x" in delivery.allow_root; write "0!" if this entry means it (db/README.md, "Root")'] },
  { name: 'root for a key other than the one allowed', table: 'uid', text: '@x root', allowRoot: ['postmaster@x'], want: ['db/rules:1:4: uid "root" is the superuser: deliveries as root need "@x" in delivery.allow_root; write "root!" if this entry means it (db/README.md, "Root")'] },
  { name: 'the root marker on another user', table: 'uid', text: 'a@x alice!', want: ['db/rules:1:10: uid "alice!": "!" marks root (or 0) only'] },
  { name: 'a NUL in a key', table: 'rules', text: 'a\0b@x discard', want: ['db/rules:1:2: NUL character (byte 0): a table source is text'] },
  { name: 'a NUL in a value on a continuation line', table: 'rules', text: 'a@x maildir:/m\n  folder=a\0', want: ['db/rules:2:11: NUL character (byte 0): a table source is text'] },
  { name: 'a control character in a key', table: 'uid', text: 'a\x01b@x alice', want: ['db/rules:1:2: control character U+0001 in key "a\x01b@x": no address holds one'] },
  { name: 'a key longer than LMDB can store', table: 'uid', text: `${'k'.repeat(1977)}@x alice`, want: ['db/rules:1:1: key is 1979 bytes long, more than the 1978 LMDB can store'] },
  { name: 'a key over the limit in bytes, not characters', table: 'uid', text: `${'é'.repeat(989)}@x alice`, want: ['db/rules:1:1: key is 1980 bytes long, more than the 1978 LMDB can store'] },
  { name: 'a uid name longer than a system name', table: 'uid', text: `a@x ${'u'.repeat(256)}`, want: ['db/rules:1:5: uid name is 256 bytes long, more than the 255 allowed'] },
  { name: 'a maildir path longer than PATH_MAX', table: 'rules', text: `a@x maildir:/${'p'.repeat(4095)}`, want: ['db/rules:1:13: maildir path is 4096 bytes long, more than the 4095 allowed'] },
  { name: 'an mbox path longer than PATH_MAX', table: 'rules', text: `a@x mbox:/${'p'.repeat(4095)}`, want: ['db/rules:1:10: mbox path is 4096 bytes long, more than the 4095 allowed'] },
  { name: 'a folder longer than a file name', table: 'rules', text: `a@x maildir:/m folder=${'f'.repeat(255)}`, want: ['db/rules:1:23: folder name is 255 bytes long, more than the 254 allowed'] },
  { name: 'a pipe command over 4096 bytes', table: 'rules', text: `a@x pipe:"/bin/x ${'a'.repeat(4090)}"`, want: ['db/rules:1:11: pipe command is 4097 bytes long, more than the 4096 allowed'] },
  { name: 'a forward address over 254 bytes', table: 'rules', text: `a@x forward:${'f'.repeat(250)}@x.test`, want: ['db/rules:1:13: forward address is 257 bytes long, more than the 254 allowed'] },
  { name: 'a list address over 254 bytes', table: 'rules', text: `a@x list:${'l'.repeat(250)}@x.test`, want: ['db/rules:1:10: list address is 257 bytes long, more than the 254 allowed'] },
  { name: 'a reject text that would not fit an SMTP reply line', table: 'rules', text: `a@x reject:"5.7.1 ${'r'.repeat(401)}"`, want: ['db/rules:1:13: reject text is 401 bytes long, more than the 400 allowed'] },
  { name: 'a header name over 255 bytes', table: 'rules', text: `a@x discard header:${'H'.repeat(256)}=*`, want: ['db/rules:1:20: header name is 256 bytes long, more than the 255 allowed'] },
  { name: 'a glob over 4096 bytes', table: 'rules', text: `a@x discard sender=${'*'.repeat(4097)}`, want: ['db/rules:1:20: pattern is 4097 bytes long, more than the 4096 allowed'] },
  { name: 'any other word over 4096 bytes', table: 'rules', text: `a@x discard score>${'9'.repeat(4096)}`, want: ['db/rules:1:13: word of 4102 bytes, more than the 4096 a rule\'s word may have'] },
  { name: 'a list manager over 4096 bytes', table: 'lists', text: `l@x open manager=lmtp:unix:/${'m'.repeat(4086)}`, want: ['db/rules:1:18: manager is 4097 bytes long, more than the 4096 allowed'] },
  { name: 'a subscriber over 254 bytes', table: 'lists', text: `l@x open subscribers=a@x,${'s'.repeat(251)}@x.t`, want: [`db/rules:1: subscriber "${'s'.repeat(60)}…" is 255 bytes long, more than the 254 an address may have`] },
];

for (const c of refusedEntries) {
  test(`a ${c.table} entry is refused with file:line:column: ${c.name}`, () => {
    const got = parseTableSource(c.table, c.text, FILE, c.allowRoot !== undefined ? { allowRoot: c.allowRoot } : {});
    assert.deepEqual(got.errors.map(formatSourceError), c.want);
    assert.equal(got.entries.size, 0);
  });
}

const acceptedEntries: { name: string; table: TableName; text: string; allowRoot?: string[]; want: [string, unknown][] }[] = [
  { name: 'root! in the uid table, stored without the marker', table: 'uid', text: 'postmaster@x root!', want: [['postmaster@x', 'root']] },
  { name: '0! in the gid table', table: 'gid', text: 'postmaster@x 0!', want: [['postmaster@x', '0']] },
  { name: 'root for a key listed in delivery.allow_root (any case)', table: 'uid', text: 'Postmaster@X root', allowRoot: ['postmaster@X'], want: [['postmaster@x', 'root']] },
  { name: 'a key of exactly 1978 bytes', table: 'uid', text: `${'k'.repeat(1976)}@x alice`, want: [[`${'k'.repeat(1976)}@x`, 'alice']] },
  { name: 'a uid that merely starts with 0', table: 'uid', text: 'a@x 01000', want: [['a@x', '01000']] },
];

for (const c of acceptedEntries) {
  test(`a ${c.table} entry is accepted: ${c.name}`, () => {
    const got = parseTableSource(c.table, c.text, FILE, c.allowRoot !== undefined ? { allowRoot: c.allowRoot } : {});
    assert.deepEqual(got.errors, []);
    assert.deepEqual([...got.entries], c.want);
  });
}

test('a rule\'s uid=root! and gid=0! are kept without the marker', () => {
  const got = parseTableSource('rules', 'a@x pipe:/bin/cat uid=root! gid=0!', FILE);
  assert.deepEqual(got.errors, []);
  assert.deepEqual(got.entries.get('a@x')?.map((r) => [r.uid, r.gid]), [['root', '0']]);
});

test('a rule may name root for a key in delivery.allow_root', () => {
  const got = parseTableSource('rules', 'a@x pipe:/bin/cat uid=root gid=root', FILE, { allowRoot: ['a@x'] });
  assert.deepEqual(got.errors, []);
  assert.deepEqual(got.entries.get('a@x')?.map((r) => [r.uid, r.gid]), [['root', 'root']]);
});
