// Owners' own rules end to end, with real system users and a real daemon:
// each owner edits the rules of their own addresses with `mailproc rules`
// (run as that user with runuser, over their own control socket), tries them
// on a message, and the next message over LMTP follows them: its file lands
// in the folder the rule names, written as the owner. What a user may not
// say is refused with its message and changes nothing; a locked admin rule
// applies whatever the owner's rules say; a change is atomic for the
// messages flowing while it is made; the list outlives a restart and a
// `mailproc db compile`; `rules log` names the rule that placed a message.
// Root uses the same command without runuser, for any address.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { requireProgram, requireRoot } from '../helpers/components.js';
import { MAILPROC, startDaemon, type DaemonOptions, type TestDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { lmtpDeliver } from '../helpers/raw-client.js';
import { ensureUserWithHome, type SystemUser } from '../helpers/users.js';
import { waitFor } from '../helpers/wait.js';

const A_NAME = 'mpt-rules-a';
const B_NAME = 'mpt-rules-b';
const A = 'a@rules.test';
const B = 'b@rules.test';
const RULES = `
${A}  maildir:\${MAIL}/\${user}/Maildir/
${B}  maildir:\${MAIL}/\${user}/Maildir/
`;
const UIDS = `${A}  ${A_NAME}\n${B}  ${B_NAME}\n`;
const INVOICE_RULE = 'folder:Invoices header:Subject=Invoice* stop';

interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

interface Setup {
  readonly d: TestDaemon;
  readonly a: SystemUser;
  readonly b: SystemUser;
  /** `mailproc rules ARGS… --config FILE` as `user` (runuser), or as root when user is undefined; `input` on stdin. */
  rules(user: SystemUser | undefined, args: readonly string[], input?: string): Promise<Run>;
  /** The Maildir of a@ or b@ (the rules write to <mail>/<address's user part>/Maildir), or one of its folders. */
  maildir(who: 'a' | 'b', folder?: string): string;
}

/** Runs a command without blocking the event loop (the daemon's log pipe keeps draining meanwhile). */
function run(command: string, args: readonly string[], input?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

/** The test's users, or undefined (skipped; failed under CI=true) when not root or they cannot be made. */
function users(t: TestContext): { a: SystemUser; b: SystemUser } | undefined {
  if (!requireRoot(t, 'useradd, sockets owned by other users, running mailproc as them')) return undefined;
  try {
    return { a: ensureUserWithHome(A_NAME), b: ensureUserWithHome(B_NAME) };
  } catch (err) {
    const why = `cannot create the test users ${A_NAME}, ${B_NAME}: ${(err as Error).message}`;
    if (process.env.CI === 'true') throw new Error(why);
    t.skip(why);
    return undefined;
  }
}

async function setup(t: TestContext, opts: DaemonOptions = {}): Promise<Setup | undefined> {
  const u = users(t);
  if (u === undefined) return undefined;
  const d = await startDaemon({ rules: RULES, uid: UIDS, ...opts });
  t.after(async () => {
    await d.stop();
    d.cleanup();
  });
  return {
    d, ...u,
    rules: (user, args, input) => (user === undefined
      ? run(process.execPath, [MAILPROC, 'rules', ...args, '--config', d.configFile], input)
      : run('runuser', ['-u', user.name, '--', process.execPath, MAILPROC, 'rules', ...args, '--config', d.configFile], input)),
    maildir: (who, folder) => join(d.mail, who, 'Maildir', folder === undefined ? '' : `.${folder}`),
  };
}

/** A message as a client writes it (CRLF), with a Message-ID that names it. */
const message = (subject: string, id = subject.replace(/\W+/g, '-')): string =>
  `From: Shop <billing@shop.test>\r\nTo: ${A}\r\nSubject: ${subject}\r\nMessage-ID: <${id}@shop.test>\r\n\r\nHello.\r\n`;

/** What `rules list --json` says of the owner's rules: their texts in order. */
async function ownRules(s: Setup, user: SystemUser | undefined, address: string): Promise<string[]> {
  const r = await s.rules(user, ['list', address, '--json']);
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { rules: { n: number; text: string }[] }).rules.map((x) => x.text);
}

/** Every message file of a Maildir (new/ and cur/) and of each of its folders: folder name ('' = inbox) → files. */
function filed(maildir: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (!existsSync(maildir)) return out;
  const folders = ['', ...readdirSync(maildir).filter((n) => n.startsWith('.') && statSync(join(maildir, n)).isDirectory()).map((n) => n.slice(1))];
  for (const f of folders) {
    const dir = f === '' ? maildir : join(maildir, `.${f}`);
    const files = ['new', 'cur'].flatMap((sub) => (existsSync(join(dir, sub)) ? readdirSync(join(dir, sub)).map((n) => join(dir, sub, n)) : []));
    if (files.length > 0) out.set(f, files);
  }
  return out;
}

test('A adds a rule with mailproc rules: the next message lands in that folder, written as A; rules test names the rule and the folder; rules log names the rule that placed it', async (t) => {
  const s = await setup(t);
  if (!s) return;
  assert.deepEqual(await ownRules(s, s.a, A), [], 'no rules of A\'s yet');

  const added = await s.rules(s.a, ['add', A, INVOICE_RULE]);
  assert.equal(added.status, 0, added.stderr);
  assert.match(added.stdout, new RegExp(`^${A} \\(owner ${A_NAME}\\)\n`));
  assert.match(added.stdout, /\nYour rules, evaluated next:\n {2}1 {2}folder:Invoices header:Subject=Invoice\* stop\n/);
  assert.match(added.stdout, /\nThe administrator's other rules, evaluated after yours:\n {2}\S*\/db\/rules:2 {2}maildir:/);
  await s.d.waitForLog(new RegExp(`rules: uid=${s.a.uid} ${A} add "folder:Invoices header:Subject=Invoice\\* stop"`));

  // The dry run first: it names the rule and the folder, and delivers nothing.
  const dry = await s.rules(s.a, ['test', A, '--from', 'billing@shop.test'], message('Invoice 12', 'dry-run'));
  assert.equal(dry.status, 0, dry.stderr);
  assert.match(dry.stdout, new RegExp(`^Dry run for ${A}: nothing was delivered\\.\n`));
  assert.match(dry.stdout, new RegExp(`\nowner +${A_NAME} \\(uid ${s.a.uid}\\)\n`));
  assert.match(dry.stdout, /\nmatched +rules table, key a@rules\.test; uid table, key a@rules\.test\n/);
  assert.match(dry.stdout, /\nspam +not checked/);
  assert.match(dry.stdout, /\n {2}subject: Invoice 12\n/i, 'the decoded headers');
  assert.match(dry.stdout, /\n {2}yours 1 +folder:Invoices header:Subject=Invoice\* stop\n +-> applied: every condition held; stop: no further rules\n/);
  assert.match(dry.stdout, /\n {2}admin \S*\/db\/rules:2 +maildir:\S+\n +-> not reached: yours 1 above applied with stop\n/);
  assert.match(dry.stdout, new RegExp(`\nPlan: deliver 1 copy:\n {2}maildir:${s.maildir('a')}/? folder=Invoices {2}as ${A_NAME} {2}\\(your rule 1\\)\n$`));
  const json = await s.rules(s.a, ['test', A, '--json'], message('Invoice 12', 'dry-run-json'));
  assert.equal(json.status, 0, json.stderr);
  const report = (JSON.parse(json.stdout) as { test: { plan: { kind: string; steps: { origin: string; destination: string; user: string }[] }; rules: { result: string }[] } }).test;
  assert.deepEqual(report.plan.steps.map((x) => [x.origin, x.user]), [['yours:1', A_NAME]]);
  assert.match(report.plan.steps[0]?.destination ?? '', /folder=Invoices$/);
  const other = await s.rules(s.a, ['test', A], message('Lunch on Thursday?'));
  assert.equal(other.status, 0, other.stderr);
  assert.match(other.stdout, /\n {2}yours 1 +folder:Invoices header:Subject=Invoice\* stop\n +-> not applied: header:Subject=Invoice\* did not hold\n/);
  // A message over the 8 MiB the command sends: the headers are in what is sent, the size is the real one.
  const big = `${message('Invoice 13', 'big')}${`${'y'.repeat(1022)}\r\n`.repeat(9 * 1024)}`;
  const large = await s.rules(s.a, ['test', A], big);
  assert.equal(large.status, 0, large.stderr);
  assert.match(large.stdout, new RegExp(`\nsize +${Buffer.byteLength(big)} bytes \\(9\\.0M\\)\n`));
  assert.match(large.stdout, /\n {2}yours 1 +folder:Invoices header:Subject=Invoice\* stop\n +-> applied/);
  assert.deepEqual(filed(s.maildir('a')), new Map(), 'the dry runs delivered nothing');

  // The next message follows the rule, without a restart.
  assert.match(await lmtpDeliver(s.d.lmtpPort, A, message('Invoice 12', 'real-1')), /^250 /);
  const files = newFiles(s.maildir('a', 'Invoices'));
  assert.equal(files.length, 1, 'one message in .Invoices/new');
  assert.match(readFileSync(files[0] as string, 'latin1'), /Message-ID: <real-1@shop\.test>/);
  assert.equal(statSync(files[0] as string).uid, s.a.uid, 'written as A');
  assert.deepEqual([...filed(s.maildir('a')).keys()], ['Invoices'], 'and nowhere else: the rule says stop');
  assert.match(await lmtpDeliver(s.d.lmtpPort, A, message('Lunch on Thursday?', 'real-2')), /^250 /);
  assert.equal(newFiles(s.maildir('a')).length, 1, 'another subject goes to the inbox (the admin\'s rule)');

  // The decision log: the rule that placed each copy. It is written beside the delivery log line, so wait for it.
  const log = await waitFor('two decisions in rules log', async () => {
    const r = await s.rules(s.a, ['log', A, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const l = JSON.parse(r.stdout) as { entries: { queueId: string; subject: string; copies: { origin: string; rule?: string; destination: string; user: string }[] }[] };
    return l.entries.length >= 2 ? l : undefined;
  }, 30_000);
  assert.deepEqual(log.entries.map((e) => [e.subject, e.copies.map((c) => c.origin)]), [['Invoice 12', ['yours:1']], ['Lunch on Thursday?', [`${join(s.d.dir, 'db', 'rules')}:2`]]]);
  assert.equal(log.entries[0]?.copies[0]?.rule, INVOICE_RULE);
  assert.match(log.entries[0]?.copies[0]?.destination ?? '', /folder=Invoices$/);
  const text = await s.rules(s.a, ['log', A, '--last', '1']);
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^\S+ {2}\S+ {2}2\.\d\.\d {2}to a@rules\.test\n {2}from +s@remote\.test\n {2}subject +Lunch on Thursday\?\n {2}copy +maildir:\S+ {2}as mpt-rules-a\n +by rule \S*\/db\/rules:2\n$/);
  const first = await s.rules(s.a, ['log', A, '--last', '2']);
  assert.match(first.stdout, /\n {2}copy +maildir:\S+ folder=Invoices {2}as mpt-rules-a\n +by your rule 1: folder:Invoices header:Subject=Invoice\* stop\n/);
});

test('A cannot list, change, test or read the log of B\'s address, nor reach it through B\'s socket; root can, for any address, without runuser', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const notYours = `mailproc: ${B} is not yours\n`;
  for (const args of [['list', B], ['add', B, 'folder:Stolen stop'], ['remove', B, '1'], ['move', B, '1', '2'], ['clear', B], ['log', B], ['test', B]]) {
    const r = await s.rules(s.a, args, args[0] === 'test' ? message('Invoice 1') : undefined);
    assert.deepEqual([r.status, r.stderr, r.stdout], [1, notYours, ''], args.join(' '));
  }
  assert.deepEqual(await ownRules(s, undefined, B), [], 'nothing was stored for B');

  const bSocket = join(s.d.dir, 'state', 'run', 'users', String(s.b.uid), 'control.sock');
  const via = await s.rules(s.a, ['add', B, 'folder:Stolen stop', '--socket', bSocket]);
  assert.equal(via.status, 77, via.stderr);
  assert.match(via.stderr, /^mailproc: cannot reach mailprocd at .*: permission denied: it is not your socket/);

  // Root: the admin socket, any address; B then sees what root set, and it applies to B's mail.
  const rootAdd = await s.rules(undefined, ['add', B, 'folder:FromRoot stop']);
  assert.equal(rootAdd.status, 0, rootAdd.stderr);
  assert.match(rootAdd.stdout, new RegExp(`^${B} \\(owner ${B_NAME}\\)\n`));
  await s.d.waitForLog(new RegExp(`rules: uid=0 ${B} add "folder:FromRoot stop"`));
  assert.deepEqual(await ownRules(s, s.b, B), ['folder:FromRoot stop']);
  assert.deepEqual(await ownRules(s, s.a, A), [], 'A\'s own list is untouched');
  assert.match(await lmtpDeliver(s.d.lmtpPort, B, message('Anything')), /^250 /);
  const files = newFiles(s.maildir('b', 'FromRoot'));
  assert.equal(files.length, 1);
  assert.equal(statSync(files[0] as string).uid, s.b.uid, 'written as B, not as root');
  const rootTest = await s.rules(undefined, ['test', A], message('Invoice 3'));
  assert.equal(rootTest.status, 0, rootTest.stderr);
  assert.match(rootTest.stdout, new RegExp(`\nowner +${A_NAME} `));
  const cleared = await s.rules(undefined, ['clear', B]);
  assert.deepEqual([cleared.status, cleared.stdout], [0, `${B}: 1 rule removed\n`], cleared.stderr);
  assert.deepEqual(await ownRules(s, s.b, B), []);
});

test('what a user may not say is refused with its message, and the list is unchanged after each refusal', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const first = await s.rules(s.a, ['add', A, INVOICE_RULE]);
  assert.equal(first.status, 0, first.stderr);
  const refusals: [rule: string, stderr: RegExp][] = [
    ['maildir:/root/x', /^mailproc: a@rules\.test: rule 2, column 1: maildir:\/root\/x is outside what your rules may write to \(.+\)\n$/],
    ['mbox:/etc/passwd', /^mailproc: a@rules\.test: rule 2, column 1: mbox:\/etc\/passwd is outside what your rules may write to \(.+\)\n$/],
    ['pipe:/bin/cat', /^mailproc: a@rules\.test: rule 2, column 1: pipe: is not allowed for your rules on this server \(rules\.user_pipes\)\n$/],
    ['folder:Root uid=0', /^mailproc: a@rules\.test: rule 2, column 13: uid= is not allowed in your rules: your rules always deliver as you\n$/],
    ['folder:Archive locked', /^mailproc: a@rules\.test: rule 2, column 16: locked is not allowed in your rules: locked rules are the administrator's\n$/],
    ['folder:Invoices subjct=Invoice*', /^mailproc: a@rules\.test: rule 2, column 17: unknown condition or option "subjct=Invoice\*"/],
  ];
  for (const [rule, stderr] of refusals) {
    const r = await s.rules(s.a, ['add', A, rule]);
    assert.equal(r.status, 1, `${rule}: ${r.stderr}`);
    assert.match(r.stderr, stderr, rule);
    assert.equal(r.stdout, '', rule);
    assert.deepEqual(await ownRules(s, s.a, A), [INVOICE_RULE], `nothing changed after "${rule}"`);
  }
  // Numbers out of range are refused too, and change nothing.
  for (const args of [['remove', A, '2'], ['move', A, '1', '3']]) {
    const r = await s.rules(s.a, args);
    assert.deepEqual([r.status, r.stderr], [1, `mailproc: ${A} has only 1 rule, no rule ${args[0] === 'remove' ? 2 : 3}\n`], args.join(' '));
  }
  assert.deepEqual(await ownRules(s, s.a, A), [INVOICE_RULE]);
  // The CLI's own usage errors never reach the daemon.
  const usage = await s.rules(s.a, ['add', A, 'folder:Invoices', 'header:Subject=Invoice*']);
  assert.equal(usage.status, 64);
  assert.match(usage.stderr, /^mailproc: rules add: give the rule as one argument, in quotes/);
});

test('a locked admin rule still applies when A\'s rule says stop: the archive gets its copy, then A\'s folder', async (t) => {
  const s = await setup(t, {
    rules: `
${A}  maildir:\${MAIL}/archive/Maildir/  locked
${A}  maildir:\${MAIL}/\${user}/Maildir/
${B}  maildir:\${MAIL}/\${user}/Maildir/
`,
  });
  if (!s) return;
  const added = await s.rules(s.a, ['add', A, 'folder:Everything stop']);
  assert.equal(added.status, 0, added.stderr);
  assert.match(added.stdout, /\nLocked rules of the administrator, evaluated first \(they apply whatever yours say\):\n {2}\S*\/db\/rules:2 {2}maildir:\S+\/archive\/Maildir\/ locked\n/);
  assert.match(added.stdout, /\nThe administrator's other rules, evaluated after yours:\n {2}\S*\/db\/rules:3 {2}maildir:/);

  const dry = await s.rules(s.a, ['test', A], message('Hello'));
  assert.equal(dry.status, 0, dry.stderr);
  assert.match(dry.stdout, /\n {2}locked \S*\/db\/rules:2 +maildir:\S+ locked\n +-> applied: every condition held\n {2}yours 1 +folder:Everything stop\n +-> applied: every condition held; stop: no further rules\n {2}admin \S*\/db\/rules:3 +maildir:\S+\n +-> not reached: yours 1 above applied with stop\n/);
  assert.match(dry.stdout, /\nPlan: deliver 2 copies:\n {2}maildir:\S+\/archive\/Maildir\/? {2}as mpt-rules-a {2}\(locked rule \S*\/db\/rules:2\)\n {2}maildir:\S+ folder=Everything {2}as mpt-rules-a {2}\(your rule 1\)\n$/);

  assert.match(await lmtpDeliver(s.d.lmtpPort, A, message('Hello', 'locked-1')), /^250 /);
  assert.equal(newFiles(join(s.d.mail, 'archive', 'Maildir')).length, 1, 'the locked copy');
  assert.equal(newFiles(s.maildir('a', 'Everything')).length, 1, 'A\'s own');
  assert.equal(newFiles(s.maildir('a')).length, 0, 'the admin\'s other rule is not reached');
});

test('rules test --spam asks the owner\'s own checker: GTUBE is spam and A\'s spam rule applies; without --spam the verdict is "not checked" and the rule does not hold', { timeout: 600_000 }, async (t) => {
  if (requireProgram(t, 'spamassassin', 'spamassassin') === undefined || requireProgram(t, 'spamd', 'spamd') === undefined) return;
  const s = await setup(t, { config: { spam: { enabled: true, timeout: '120s' } } });
  if (!s) return;
  const added = await s.rules(s.a, ['add', A, 'folder:Junk spam stop']);
  assert.equal(added.status, 0, added.stderr);
  const gtube = `${message('Cheap offer', 'gtube')}\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n`;

  const unchecked = await s.rules(s.a, ['test', A], gtube);
  assert.equal(unchecked.status, 0, unchecked.stderr);
  assert.match(unchecked.stdout, /\nspam +not checked \(add --spam to have your spam checker look at it\)\n/);
  assert.match(unchecked.stdout, /\n {2}yours 1 +folder:Junk spam stop\n +-> not applied: spam did not hold\n/);

  const checked = await s.rules(s.a, ['test', A, '--spam'], gtube);
  assert.equal(checked.status, 0, checked.stderr);
  assert.match(checked.stdout, /\nspam +spam, score \d+\.\d \(required \d+\.\d\), tests [^\n]*GTUBE/);
  assert.match(checked.stdout, /\n {2}yours 1 +folder:Junk spam stop\n +-> applied: every condition held; stop: no further rules\n/);
  assert.match(checked.stdout, /\nPlan: deliver 1 copy:\n {2}maildir:\S+ folder=Junk {2}as mpt-rules-a {2}\(your rule 1\)\n$/);
  assert.deepEqual(filed(s.maildir('a')), new Map(), 'nothing delivered');
  const json = await s.rules(s.a, ['test', A, '--spam', '--json'], gtube);
  assert.equal(json.status, 0, json.stderr);
  const spam = (JSON.parse(json.stdout) as { test: { spam: { checked: boolean; isSpam?: boolean; tests?: string[] } } }).test.spam;
  assert.deepEqual([spam.checked, spam.isSpam, spam.tests?.includes('GTUBE')], [true, true, true]);
});

test('a rule added while 100 messages flow: each message follows the old list or the new one, never a mix; the list survives a restart and a db compile', { timeout: 600_000 }, async (t) => {
  const s = await setup(t);
  if (!s) return;
  for (const rule of ['folder:Old1', 'folder:Old2']) {
    const r = await s.rules(s.a, ['add', A, rule]);
    assert.equal(r.status, 0, r.stderr);
  }
  // Old list: copies in Old1, Old2 and the inbox (the admin's rule). New list: New only.
  const OLD = 'Old1,Old2,inbox';
  const NEW = 'New';
  const TOTAL = 100;
  const BEFORE = 30;
  const AFTER = 10;
  const senders = 4;
  let next = 0;
  let acked = 0;
  let addStarted = false;
  const startedBeforeAdd = new Set<number>();
  const ackedBeforeAdd = new Set<number>();
  const sentAfterAdd = new Set<number>();
  let add: Promise<Run> | undefined;
  let addDone = false;
  const send = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= TOTAL) return;
      // The last messages wait for the change: some are certain to be sent after it (a hook, not a clock).
      if (i >= TOTAL - AFTER && add !== undefined) await add;
      if (!addStarted) startedBeforeAdd.add(i);
      if (addDone) sentAfterAdd.add(i);
      const reply = await lmtpDeliver(s.d.lmtpPort, A, message(`Flow ${i}`, `flow-${i}`));
      assert.match(reply, /^250 /, `message ${i}`);
      if (!addStarted) ackedBeforeAdd.add(i);
      if (++acked === BEFORE) {
        addStarted = true;
        add = s.rules(s.a, ['add', A, 'folder:New stop', '--at', '1']).then((r) => {
          addDone = true;
          return r;
        });
      }
    }
  };
  await Promise.all(Array.from({ length: senders }, send));
  const added = await (add as Promise<Run>);
  assert.equal(added.status, 0, added.stderr);
  assert.ok(ackedBeforeAdd.size >= BEFORE - senders + 1 && sentAfterAdd.size >= AFTER, `${ackedBeforeAdd.size} acknowledged before the change, ${sentAfterAdd.size} sent after`);

  // Which folders got each message (by its Message-ID).
  const where = new Map<number, string[]>();
  for (const [folder, files] of filed(s.maildir('a'))) {
    for (const f of files) {
      const id = /Message-ID: <flow-(\d+)@shop\.test>/.exec(readFileSync(f, 'latin1'))?.[1];
      assert.ok(id !== undefined, `a message of the flow in ${f}`);
      where.set(Number(id), [...(where.get(Number(id)) ?? []), folder === '' ? 'inbox' : folder]);
    }
  }
  t.diagnostic(`${ackedBeforeAdd.size} messages delivered before the change began, ${sentAfterAdd.size} sent after it was made, the rest in flight`);
  const seen = { old: 0, new: 0 };
  for (let i = 0; i < TOTAL; i++) {
    const set = (where.get(i) ?? []).sort().join(',');
    assert.ok(set === OLD || set === NEW, `message ${i} landed in "${set}": neither the old list's (${OLD}) nor the new one's (${NEW})`);
    if (ackedBeforeAdd.has(i)) assert.equal(set, OLD, `message ${i} was delivered before the change`);
    if (sentAfterAdd.has(i)) assert.equal(set, NEW, `message ${i} was sent after the change`);
    seen[set === OLD ? 'old' : 'new']++;
  }
  assert.ok(seen.old >= ackedBeforeAdd.size && seen.new >= sentAfterAdd.size, JSON.stringify(seen));
  t.diagnostic(`${seen.old} followed the old list, ${seen.new} the new one`);

  // A restart (SIGTERM, same state directory) keeps the list, and the next message follows it.
  const want = ['folder:New stop', 'folder:Old1', 'folder:Old2'];
  await s.d.stop();
  const again = await startDaemon({ dir: s.d.dir, rules: RULES, uid: UIDS });
  try {
    assert.deepEqual(await ownRules(s, s.a, A), want, 'after a restart');
    // A db compile replaces the admin's tables, not the owners' lists.
    const compiled = spawnSync(process.execPath, [MAILPROC, 'db', 'compile', '--config', s.d.configFile], { encoding: 'utf8' });
    assert.equal(compiled.status, 0, compiled.stderr);
    assert.deepEqual(await ownRules(s, s.a, A), want, 'after a db compile');
    assert.match(await lmtpDeliver(again.lmtpPort, A, message('After', 'after-restart')), /^250 /);
    const inNew = newFiles(s.maildir('a', 'New')).filter((f) => readFileSync(f, 'latin1').includes('<after-restart@shop.test>'));
    assert.equal(inNew.length, 1, 'the message after the restart and the compile follows the new list');
  } finally {
    await again.stop();
  }
});
