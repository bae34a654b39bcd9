// Spam checking as each recipient's owner, end to end: a real mailprocd (as
// root), the real Debian SpamAssassin (libexec/spam-checker.pl), real system
// users with homes of their own, LMTP in, Maildir out. What a user would
// check: the folder the message landed in, its bytes and X-Spam-* headers,
// the checker's uids in /proc, its socket, the Bayes files after learning,
// the reply code when the checker is down.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import test, { type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { MAILPROC, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { requireProgram, requireRoot } from '../helpers/components.js';
import { newFiles, splitTrace } from '../helpers/mailbox.js';
import { RawClient } from '../helpers/raw-client.js';
import { ensureUserWithHome, processIds } from '../helpers/users.js';
import { waitFor } from '../helpers/wait.js';

const run = promisify(execFile);

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';
const SPAM = `From: Sender <s@remote.test>\r\nTo: a@example.test\r\nSubject: Cheap offer\r\nDate: Mon, 06 Jan 2025 10:00:00 +0000\r\nMessage-ID: <gtube-1@remote.test>\r\n\r\nThis is the GTUBE.\r\n\r\n${GTUBE}\r\n`;
const HAM = 'From: Bob Example <bob@remote.test>\r\nTo: Alice <a@example.test>\r\nSubject: Lunch on Thursday?\r\nDate: Mon, 06 Jan 2025 10:59:58 +0100\r\nMessage-ID: <lunch-4711@remote.test>\r\n\r\nHi, shall we meet at noon on Thursday? The usual place.\r\n\r\nBob\r\n';
/** Scores a few points locally (no Date, no Message-ID) but stays under 5. */
const GREY = 'From: Carol <carol@remote.test>\r\nTo: dave@example.test\r\nSubject: meeting notes\r\n\r\nHello Dave,\r\nhere are the notes from the meeting.\r\n';

/** A checker start (the parent compiles the rules first) on a loaded CI machine: a hang detector, not a window. */
const SLOW = 180_000;

function needs(t: TestContext): boolean {
  if (!requireRoot(t, 'spam checkers run as real users')) return false;
  return requireProgram(t, 'spamassassin', 'spamassassin') !== undefined && requireProgram(t, 'spamd', 'spamd') !== undefined;
}

const users = () => ({ a: ensureUserWithHome('mpt-spam-a'), b: ensureUserWithHome('mpt-spam-b'), c: ensureUserWithHome('mpt-spam-c') });

/** A's user_prefs flags anything from 1 point; B's and C's are SpamAssassin's defaults. */
function writePrefs(u: { uid: number; gid: number; home: string }, prefs: string | undefined): void {
  const dir = join(u.home, '.spamassassin');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chownSync(dir, u.uid, u.gid);
  const file = join(dir, 'user_prefs');
  if (prefs === undefined) {
    rmSync(file, { force: true });
    return;
  }
  writeFileSync(file, prefs, { mode: 0o600 });
  chownSync(file, u.uid, u.gid);
}

interface SpamDaemon { readonly d: TestDaemon; readonly u: ReturnType<typeof users> }

async function start(t: TestContext, o: { spam?: string; config?: Record<string, unknown> } = {}): Promise<SpamDaemon> {
  const u = users();
  writePrefs(u.a, 'required_score 1\n');
  writePrefs(u.b, undefined);
  const d = await startDaemon({
    rules: `
a@example.test  maildir:\${MAIL}/\${user}/Maildir/  folder=Junk  spam  stop
a@example.test  maildir:\${MAIL}/\${user}/Maildir/
b@example.test  maildir:\${MAIL}/\${user}/Maildir/  folder=Junk  spam  stop
b@example.test  maildir:\${MAIL}/\${user}/Maildir/
c@example.test  maildir:\${MAIL}/\${user}/Maildir/
`,
    uid: 'a@example.test mpt-spam-a\nb@example.test mpt-spam-b\nc@example.test mpt-spam-c\n',
    ...(o.spam !== undefined ? { spam: o.spam } : {}),
    config: { spam: { enabled: true, timeout: '120s', ...((o.config?.spam as object | undefined) ?? {}) }, ...Object.fromEntries(Object.entries(o.config ?? {}).filter(([k]) => k !== 'spam')) },
  });
  t.after(async () => {
    await d.stop();
    d.cleanup();
  });
  return { d, u };
}

/** One LMTP transaction to several recipients: the RCPT replies, then one reply per accepted recipient. */
async function lmtp(d: TestDaemon, rcpts: readonly string[], message: string): Promise<number[]> {
  const c = await RawClient.open({ port: d.lmtpPort });
  try {
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    let accepted = 0;
    for (const r of rcpts) if ((await c.command(`RCPT TO:<${r}>`)).code === 250) accepted++;
    await c.command('DATA');
    c.write(`${message}.\r\n`);
    const codes: number[] = [];
    for (let i = 0; i < accepted; i++) codes.push((await c.reply(SLOW)).code);
    return codes;
  } finally {
    c.close();
  }
}

interface CheckerRow { user: string; uid: number; pid: number; socket: string; checked: number; privateBytes?: number }

async function checkers(d: TestDaemon): Promise<CheckerRow[]> {
  const { stdout } = await run(process.execPath, [MAILPROC, 'status', '--json', '--config', d.configFile]);
  const r = JSON.parse(stdout) as { spam: { enabled: boolean; checkers?: CheckerRow[] } };
  assert.equal(r.spam.enabled, true, 'mailproc status says spam checking is on');
  return r.spam.checkers ?? [];
}

/** The rules write to <mail>/${user}/Maildir: the address's user part (a, b, c). */
const maildir = (d: TestDaemon, user: string, folder = ''): string => join(d.mail, user.replace(/^mpt-spam-/, ''), 'Maildir', folder === '' ? '' : `.${folder}`);
const only = (dir: string): Buffer => {
  const files = newFiles(dir);
  assert.equal(files.length, 1, `one message in ${dir}/new`);
  return readFileSync(files[0] as string);
};

/** The X-Spam-* block right after our trace headers, and the bytes after it. */
function spamBlock(file: Buffer): { block: string; rest: Buffer } {
  const { rest } = splitTrace(file);
  const text = rest.toString('latin1');
  const m = /^(X-Spam-[^\n]*\n(?:[ \t][^\n]*\n)*)+/.exec(text);
  const block = m?.[0] ?? '';
  return { block, rest: rest.subarray(Buffer.byteLength(block, 'latin1')) };
}

const lf = (s: string): Buffer => Buffer.from(s.replace(/\r\n/g, '\n'), 'latin1');

test('GTUBE is flagged and a spam rule files it in Junk; a ham message is not; the headers are added and every other byte is the original', { timeout: 300_000 }, async (t) => {
  if (!needs(t)) return;
  const { d } = await start(t);
  assert.deepEqual(await lmtp(d, ['b@example.test'], SPAM), [250]);
  assert.deepEqual(await lmtp(d, ['b@example.test'], HAM), [250]);

  const junk = spamBlock(only(maildir(d, 'mpt-spam-b', 'Junk')));
  assert.match(junk.block, /^X-Spam-Flag: YES\nX-Spam-Level: \*{50}\nX-Spam-Status: Yes, score=1\d{3}\.\d required=5\.0 tests=[^\n]*GTUBE/);
  assert.deepEqual(junk.rest, lf(SPAM), 'the original bytes follow the headers unchanged');

  const inbox = spamBlock(only(maildir(d, 'mpt-spam-b')));
  assert.match(inbox.block, /^X-Spam-Flag: NO\nX-Spam-Level: \**\nX-Spam-Status: No, score=-?\d+\.\d required=5\.0 tests=/);
  assert.deepEqual(inbox.rest, lf(HAM));
});

test('each owner\'s checker runs as that owner (real, effective, saved uid; no other groups) on a socket in their 0700 directory; one check per message per owner; the owner\'s user_prefs decide for them alone', { timeout: 300_000 }, async (t) => {
  if (!needs(t)) return;
  const { d, u } = await start(t);
  // One message to A (twice: a+x is also A's) and to B: A's threshold is 1 (user_prefs), B's 5.
  assert.deepEqual(await lmtp(d, ['a@example.test', 'a+x@example.test', 'b@example.test'], GREY), [250, 250, 250]);

  const aFiles = newFiles(maildir(d, 'mpt-spam-a', 'Junk'));
  assert.equal(aFiles.length, 2, 'both of A\'s addresses got the grey message as spam (required_score 1)');
  for (const f of aFiles) assert.match(spamBlock(readFileSync(f)).block, /^X-Spam-Flag: YES\n[^]*required=1\.0/);
  const bBlock = spamBlock(only(maildir(d, 'mpt-spam-b'))).block;
  assert.match(bBlock, /^X-Spam-Flag: NO\n[^]*required=5\.0/, 'B keeps the default threshold on the same message');
  const score = (s: string): string | undefined => /score=(-?[\d.]+)/.exec(s)?.[1];
  assert.equal(score(spamBlock(readFileSync(aFiles[0] as string)).block), score(bBlock), 'the same score for both');

  const rows = await checkers(d);
  const ca = rows.find((r) => r.uid === u.a.uid);
  const cb = rows.find((r) => r.uid === u.b.uid);
  assert.ok(ca !== undefined && cb !== undefined, `a checker each for A and B: ${JSON.stringify(rows)}`);
  assert.equal(ca.checked, 1, 'A\'s two addresses: one check');
  assert.equal(cb.checked, 1);
  assert.notEqual(ca.pid, cb.pid);
  const ids = processIds(ca.pid);
  assert.deepEqual(ids.uids, [u.a.uid, u.a.uid, u.a.uid, u.a.uid], 'real, effective, saved and fs uid are A\'s');
  assert.deepEqual(ids.gids, [u.a.gid, u.a.gid, u.a.gid, u.a.gid]);
  assert.ok(ids.groups.every((g) => g === u.a.gid), `no supplementary groups: ${ids.groups.join(',')}`);
  assert.equal(ca.socket, join(d.dir, 'state', 'run', 'users', String(u.a.uid), 'spamd.sock'));
  const dir = statSync(join(ca.socket, '..'));
  assert.equal(dir.uid, u.a.uid);
  assert.equal(dir.mode & 0o777, 0o700);
  assert.ok(statSync(ca.socket).isSocket());

  // B's message never reaches A's checker.
  assert.deepEqual(await lmtp(d, ['b@example.test'], HAM), [250]);
  const after = await checkers(d);
  assert.equal(after.find((r) => r.uid === u.a.uid)?.checked, 1, 'A\'s checker saw nothing of B\'s mail');
  assert.equal(after.find((r) => r.uid === u.b.uid)?.checked, 2);
});

test('the spam table turns checking off for an address (no header, spam rules do not hold) and sets its threshold', { timeout: 300_000 }, async (t) => {
  if (!needs(t)) return;
  const { d } = await start(t, { spam: 'b@example.test off\nc@example.test on required=1\n' });
  assert.deepEqual(await lmtp(d, ['b@example.test', 'c@example.test'], GREY), [250, 250]);
  const b = spamBlock(only(maildir(d, 'mpt-spam-b')));
  assert.equal(b.block, '', 'no X-Spam header for an address with checking off');
  assert.deepEqual(b.rest, lf(GREY));
  assert.match(spamBlock(only(maildir(d, 'mpt-spam-c'))).block, /^X-Spam-Flag: YES\n[^]*required=1\.0/);
  assert.ok(!(await checkers(d)).some((r) => r.user === 'mpt-spam-b'), 'no checker started for B');
});

test('a message over spam.max_size is delivered unchecked and says so', { timeout: 300_000 }, async (t) => {
  if (!needs(t)) return;
  const { d } = await start(t, { config: { spam: { max_size: '1k' } } });
  const big = `${HAM}${'filler line of the message body\r\n'.repeat(64)}`;
  assert.deepEqual(await lmtp(d, ['b@example.test'], big), [250]);
  const m = spamBlock(only(maildir(d, 'mpt-spam-b')));
  assert.equal(m.block, 'X-Spam-Status: unchecked (message larger than 1k)\n');
  assert.deepEqual(m.rest, lf(big));
});

/** Connections waiting in a listening unix socket's backlog (ss's Recv-Q), or undefined when ss cannot say. */
function backlog(path: string): number | undefined {
  const out = execFileSync('ss', ['-xlnH'], { encoding: 'utf8' });
  for (const line of out.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.includes(path)) return Number(f[2]);
  }
  return undefined;
}

for (const mode of ['open', 'closed'] as const) {
  test(`a checker killed in the middle of a check: ${mode === 'open' ? 'fail open delivers it unchecked' : 'fail closed answers 451 4.7.1'}, the message is not lost, and the next message gets a new checker`, { timeout: 300_000 }, async (t) => {
    if (!needs(t)) return;
    const { d, u } = await start(t, { spam: `b@example.test on on_error=${mode}\n` });
    assert.deepEqual(await lmtp(d, ['b@example.test'], HAM), [250], 'a first message starts B\'s checker');
    const first = (await checkers(d)).find((r) => r.uid === u.b.uid);
    assert.ok(first !== undefined);
    // Stopped, it accepts no request: the next check waits in its socket's backlog until we kill it.
    process.kill(first.pid, 'SIGSTOP');
    const pending = lmtp(d, ['b@example.test'], SPAM);
    await waitFor('the check to reach the stopped checker', () => ((backlog(first.socket) ?? 0) >= 1 ? true : undefined), SLOW);
    process.kill(first.pid, 'SIGKILL');
    const codes = await pending;
    if (mode === 'open') {
      assert.deepEqual(codes, [250]);
      const files = newFiles(maildir(d, 'mpt-spam-b'));
      assert.equal(files.length, 2);
      const unchecked = files.map((f) => spamBlock(readFileSync(f))).find((m) => m.block.includes('unchecked'));
      assert.ok(unchecked !== undefined, 'the second copy says it was not checked');
      assert.match(unchecked.block, /^X-Spam-Status: unchecked \(checker [a-z ]+\)\n$/);
      assert.deepEqual(unchecked.rest, lf(SPAM), 'delivered whole, though GTUBE: no verdict, no spam rule');
      assert.equal(newFiles(maildir(d, 'mpt-spam-b', 'Junk')).length, 0);
    } else {
      assert.deepEqual(codes, [451]);
      assert.equal(newFiles(maildir(d, 'mpt-spam-b')).length, 1, 'nothing more delivered: the MTA keeps it and retries');
    }
    await d.waitForLog(/spam check for b@example\.test failed/, SLOW);
    // The retry (or the next message) is checked by a new checker.
    assert.deepEqual(await lmtp(d, ['b@example.test'], SPAM), [250]);
    assert.equal(newFiles(maildir(d, 'mpt-spam-b', 'Junk')).length, 1, 'checked again: GTUBE in Junk');
    const second = (await checkers(d)).find((r) => r.uid === u.b.uid);
    assert.ok(second !== undefined && second.pid !== first.pid, 'a new checker process');
  });
}

test('an idle checker stops after spam.idle and the next message starts it again', { timeout: 300_000 }, async (t) => {
  if (!needs(t)) return;
  const { d } = await start(t, { config: { spam: { idle: '2s' } } });
  assert.deepEqual(await lmtp(d, ['b@example.test'], HAM), [250]);
  // From the log, not from mailproc status: on a loaded machine the checker may already be idle for 2 s by then.
  const listening = await d.waitForLog(/spam checker for mpt-spam-b listening on .*pid=\d+/, SLOW);
  const pid = Number(/pid=(\d+)/.exec(listening)?.[1]);
  await d.waitForLog(/spam checker for mpt-spam-b stopped after \d+ s idle/, SLOW);
  await waitFor('the idle checker to exit', () => (existsSync(`/proc/${pid}`) ? undefined : true), SLOW);
  assert.deepEqual(await lmtp(d, ['b@example.test'], SPAM), [250]);
  assert.equal(newFiles(maildir(d, 'mpt-spam-b', 'Junk')).length, 1);
});

test('mailproc learn, run by the user, teaches their own checker: Bayes files owned by them appear in their home; root may do it for them with --user', { timeout: 300_000 }, async (t) => {
  if (!needs(t)) return;
  // A checker start far from the time it takes on a loaded machine (STYLE habit 15).
  const { d, u } = await start(t, { config: { spam: { bayes_sync: '1s', bayes_sync_messages: 1, start_timeout: '170s' } } });
  const sadir = join(u.c.home, '.spamassassin');
  for (const f of existsSync(sadir) ? readdirSync(sadir) : []) if (f.startsWith('bayes')) rmSync(join(sadir, f), { force: true });
  // A Maildir folder of the user's own, readable by them.
  const src = mkdtempSync(join(tmpdir(), 'mailproc-learn-'));
  t.after(() => rmSync(src, { recursive: true, force: true }));
  for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(src, sub), { recursive: true });
  for (let i = 0; i < 3; i++) writeFileSync(join(src, 'cur', `m${i}`), lf(SPAM.replace('gtube-1', `gtube-learn-${i}`).replace('This is the GTUBE.', `This is GTUBE number ${i}.`)));
  execFileSync('chown', ['-R', `${u.c.uid}:${u.c.gid}`, src]);
  execFileSync('chmod', ['755', src]);
  await waitFor('C\'s control socket', () => (existsSync(join(d.dir, 'state', 'run', 'users', String(u.c.uid), 'control.sock')) ? true : undefined), SLOW);

  const asUser = await run('setpriv', ['--reuid', String(u.c.uid), '--regid', String(u.c.gid), '--clear-groups', process.execPath, MAILPROC, 'learn', '--spam', '--config', d.configFile, src], { cwd: '/' });
  assert.match(asUser.stdout, /^mpt-spam-c: 3 learned as spam, 0 already known, 0 too large, 0 failed\n$/);
  const again = await run('setpriv', ['--reuid', String(u.c.uid), '--regid', String(u.c.gid), '--clear-groups', process.execPath, MAILPROC, 'learn', '--spam', '--config', d.configFile, src], { cwd: '/' });
  assert.match(again.stdout, /3 already known/);

  const hamFile = join(src, 'ham.eml');
  writeFileSync(hamFile, lf(HAM));
  const asRoot = await run(process.execPath, [MAILPROC, 'learn', '--ham', '--user', 'mpt-spam-c', '--config', d.configFile, hamFile]);
  assert.match(asRoot.stdout, /^mpt-spam-c: 1 learned as ham/);

  const bayes = await waitFor('Bayes files in C\'s home', () => {
    const fs = existsSync(sadir) ? readdirSync(sadir).filter((f) => f === 'bayes_toks' || f === 'bayes_seen') : [];
    return fs.length === 2 ? fs : undefined;
  }, SLOW);
  for (const f of bayes) assert.equal(statSync(join(sadir, f)).uid, u.c.uid, `${f} is owned by C`);

  // Not root, --user is refused; root without --user too.
  await assert.rejects(run(process.execPath, [MAILPROC, 'learn', '--ham', '--config', d.configFile, hamFile]), (e: { code: number }) => e.code === 64);
});

test('fairness: with a flood of mail for A waiting on A\'s checker, B\'s message is checked and delivered before half of A\'s backlog', { timeout: 600_000 }, async (t) => {
  if (!needs(t)) return;
  const { d } = await start(t);
  const FLOOD = 40;
  // SMTP intake: each message is answered once it is in our queue, so all of A's wait before B's is sent.
  const c = await RawClient.open({ port: d.smtpPort });
  try {
    await c.reply();
    await c.command('EHLO client.test');
    const send = async (rcpt: string, n: number): Promise<void> => {
      assert.equal((await c.command('MAIL FROM:<s@remote.test>')).code, 250);
      assert.equal((await c.command(`RCPT TO:<${rcpt}>`)).code, 250);
      assert.equal((await c.command('DATA')).code, 354);
      c.write(`${HAM.replace('lunch-4711', `flood-${n}`)}.\r\n`);
      assert.equal((await c.reply(SLOW)).code, 250);
    };
    for (let i = 0; i < FLOOD; i++) await send('a@example.test', i);
    await send('b@example.test', 0);
  } finally {
    c.close();
  }
  const aDir = maildir(d, 'mpt-spam-a');
  const bDir = maildir(d, 'mpt-spam-b');
  // Sampled when B's copy appears: how many of A's were delivered by then.
  const aDone = await waitFor('B\'s message', () => (newFiles(bDir).length === 1 ? newFiles(aDir).length + newFiles(join(aDir, '.Junk')).length : undefined), SLOW);
  assert.ok(aDone < FLOOD / 2, `B's message was delivered when ${aDone} of A's ${FLOOD} were`);
  assert.match(spamBlock(only(bDir)).block, /^X-Spam-Flag: NO\n/, 'B\'s message was checked, not passed unchecked');
  await waitFor('A\'s backlog', () => (newFiles(aDir).length + newFiles(join(aDir, '.Junk')).length === FLOOD ? true : undefined), SLOW);
});

test('at most spam.max_checkers run: the least recently used one is stopped to make room, and started again when its user has mail', { timeout: 300_000 }, async (t) => {
  if (!needs(t)) return;
  const { d, u } = await start(t, { config: { spam: { max_checkers: 1 } } });
  assert.deepEqual(await lmtp(d, ['a@example.test'], HAM), [250]);
  const a1 = (await checkers(d)).find((r) => r.uid === u.a.uid);
  assert.ok(a1 !== undefined);
  assert.deepEqual(await lmtp(d, ['b@example.test'], SPAM), [250]);
  await d.waitForLog(/spam checker for mpt-spam-a stopped to make room \(spam\.max_checkers 1\)/, SLOW);
  await waitFor('A\'s checker to exit', () => (existsSync(`/proc/${a1.pid}`) ? undefined : true), SLOW);
  assert.deepEqual((await checkers(d)).map((r) => r.uid), [u.b.uid], 'only B\'s checker runs');
  assert.equal(newFiles(maildir(d, 'mpt-spam-b', 'Junk')).length, 1);
  assert.deepEqual(await lmtp(d, ['a@example.test'], SPAM), [250]);
  assert.equal(newFiles(maildir(d, 'mpt-spam-a', 'Junk')).length, 1, 'A\'s mail is checked by a new checker');
  assert.deepEqual((await checkers(d)).map((r) => r.uid), [u.a.uid]);
});
