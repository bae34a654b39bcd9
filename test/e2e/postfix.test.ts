// End to end behind a real Postfix 3.7: swaks → Postfix smtpd → queue →
// Postfix's lmtp client → mailprocd's LMTP unix socket → Maildir, configured
// the way docs/postfix.md tells an administrator to. Checks what a user and an
// administrator see: the files in the Maildir and their owner, the headers,
// Postfix's maillog and mailprocd's log; deferral while mailprocd is down and
// exactly-once delivery after it is back; unknown recipients.
//
// Needs root (Postfix's master starts as root), Debian "postfix" and "swaks".
// Every wait has a deadline; Postfix is stopped in finally, also on failure.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { requireProgram, requireRoot } from '../helpers/components.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { POSTFIX_HOSTNAME, startPostfix, swaks, type TestPostfix } from '../helpers/postfix.js';
import { waitFor as pollFor } from '../helpers/wait.js';

const RULES = `
alice@example.test  maildir:\${MAIL}/\${user}/Maildir/
bob@example.test    maildir:\${MAIL}/\${user}/Maildir/
`;

// As docs/postfix.md says: the socket is Postfix's (group postfix), nobody else's.
const CONFIG = { lmtp: { socket: { mode: '0660', group: 'postfix' } } };

const WAIT_MS = 30_000;
const waitFor = <T>(what: string, probe: () => T | undefined | Promise<T | undefined>, diag: () => string): Promise<T> => pollFor(what, probe, WAIT_MS, diag);

function components(t: TestContext): boolean {
  return requireRoot(t, 'Postfix starts its master as root')
    && requireProgram(t, 'postfix', 'postfix') !== undefined
    && requireProgram(t, 'swaks', 'swaks') !== undefined;
}

function uidOf(user: string): number {
  const m = new RegExp(`^${user}:[^:]*:(\\d+):`, 'm').exec(readFileSync('/etc/passwd', 'utf8'));
  if (m === null) throw new Error(`no user ${user}`);
  return Number(m[1]);
}

function gidOf(group: string): number {
  const m = new RegExp(`^${group}:[^:]*:(\\d+):`, 'm').exec(readFileSync('/etc/group', 'utf8'));
  if (m === null) throw new Error(`no group ${group}`);
  return Number(m[1]);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What to print when a wait times out: both sides' logs. */
function diagnostics(pf: TestPostfix | undefined, d: TestDaemon): string {
  return `\n--- Postfix maillog ---\n${pf?.logs() ?? '(not started)'}\n--- mailprocd log (last 60 lines) ---\n${d.logs.slice(-60).join('\n')}`;
}

/** Files in maildir/new carrying this Message-Id. */
function withMessageId(maildir: string, messageId: string): string[] {
  return newFiles(maildir).filter((f) => readFileSync(f, 'latin1').includes(`Message-Id: <${messageId}>`));
}

function headerOf(file: string): string {
  const text = readFileSync(file, 'utf8');
  const end = text.indexOf('\n\n');
  return end < 0 ? text : text.slice(0, end);
}

const re = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
let seq = 0;
const newMessageId = (what: string): string => `${what}.${process.pid}.${Date.now()}.${++seq}@remote.test`;

test('Postfix → LMTP: mail for alice and bob lands in their Maildirs as the delivery user, with Postfix\'s Received and our Delivered-To', async (t) => {
  if (!components(t)) return;
  const d = await startDaemon({ rules: RULES, config: CONFIG });
  let pf: TestPostfix | undefined;
  try {
    pf = await startPostfix({ lmtpSocket: d.socket });
    const diag = (): string => diagnostics(pf, d);
    const id = newMessageId('both');
    const sent = await swaks({ port: pf.smtpPort, from: 's@remote.test', to: ['alice@example.test', 'bob@example.test'], messageId: id, subject: 'through Postfix' });
    assert.equal(sent.code, 0, `swaks exit ${sent.code}:\n${sent.stdout}${sent.stderr}`);
    const qid = sent.queueId;
    assert.ok(qid !== undefined, `no "queued as" in swaks output:\n${sent.stdout}`);

    // Postfix reached a socket that only group postfix may use (docs/postfix.md).
    const sock = statSync(d.socket);
    assert.equal(sock.mode & 0o777, 0o660);
    assert.equal(sock.gid, gidOf('postfix'));

    const nobody = uidOf('nobody');
    for (const user of ['alice', 'bob']) {
      const maildir = join(d.mail, user, 'Maildir');
      const files = await waitFor(`${user}'s copy in ${maildir}/new`, () => {
        const f = withMessageId(maildir, id);
        return f.length > 0 ? f : undefined;
      }, diag);
      assert.equal(files.length, 1, `exactly one copy for ${user}`);
      const file = files[0] as string;
      const st = statSync(file);
      assert.equal(st.uid, nobody, `${file} is owned by nobody (uid ${nobody}), not ${st.uid}`);
      assert.notEqual(st.uid, 0);
      const head = headerOf(file);
      assert.match(head, new RegExp(`^Delivered-To: ${user}@example\\.test$`, 'm'));
      assert.match(head, /^Return-Path: <s@remote\.test>$/m);
      // Postfix's own trace line, with the queue id swaks was given.
      assert.match(head, new RegExp(`^Received: from client\\.test \\([^)]*\\[127\\.0\\.0\\.1\\]\\)\\n\\tby ${re(POSTFIX_HOSTNAME)} \\(Postfix\\) with ESMTP id ${qid}\\b`, 'm'));
      assert.match(head, /^Subject: through Postfix$/m);

      // Postfix's maillog: delivered over LMTP to the unix socket, 2.0.0.
      const pfLine = await pf.waitForLog(new RegExp(`postfix/lmtp\\[\\d+\\]: ${qid}: to=<${user}@example\\.test>, relay=[^,]*${re(d.socket)}[^,]*, .*dsn=2\\.0\\.0, status=sent \\(250 2\\.`), WAIT_MS);
      // mailprocd's log: the Maildir delivery, under the queue id its LMTP reply gave Postfix,
      // so an administrator can follow the message from one log into the other.
      const ourLine = await d.waitForLog(new RegExp(`: [0-9A-Za-z]+: to=<${user}@example\\.test>, relay=maildir, .*status=sent`), WAIT_MS);
      const ourId = /: ([0-9A-Za-z]+): to=</.exec(ourLine)?.[1] as string;
      assert.ok(pfLine.includes(` ${ourId} `), `Postfix's status=sent line carries mailprocd's queue id ${ourId}:\n${pfLine}`);
    }
    await pf.waitForLog(new RegExp(`${qid}: removed`), WAIT_MS);
    assert.deepEqual(await pf.queueIds(), [], 'Postfix\'s queue is empty');
  } finally {
    await pf?.stop();
    await d.stop();
    d.cleanup();
  }
});

test('Postfix → LMTP: while mailprocd is down the message is deferred; after a restart and postqueue -f it lands exactly once', async (t) => {
  if (!components(t)) return;
  let d = await startDaemon({ rules: RULES, config: CONFIG });
  let pf: TestPostfix | undefined;
  try {
    pf = await startPostfix({ lmtpSocket: d.socket });
    const diag = (): string => diagnostics(pf, d);
    await d.stop();

    const id = newMessageId('deferred');
    const sent = await swaks({ port: pf.smtpPort, from: 's@remote.test', to: ['alice@example.test'], messageId: id, subject: 'while down' });
    assert.equal(sent.code, 0, `Postfix queues the message even with mailprocd down:\n${sent.stdout}${sent.stderr}`);
    const qid = sent.queueId as string;
    assert.ok(qid, sent.stdout);
    const deferred = await pf.waitForLog(new RegExp(`${qid}: to=<alice@example\\.test>, relay=none, .*dsn=4\\.4\\.[12], status=deferred`), WAIT_MS);
    assert.match(deferred, new RegExp(`\\(connect to [^\\[]*\\[${re(d.socket)}\\]: (No such file or directory|Connection refused)\\)`));
    const maildir = join(d.mail, 'alice', 'Maildir');
    assert.deepEqual(withMessageId(maildir, id), [], 'nothing lands while mailprocd is down');
    assert.ok((await pf.queueIds()).includes(qid), 'the message waits in Postfix\'s queue');

    d = await startDaemon({ dir: d.dir, rules: RULES, config: CONFIG });
    await pf.flush();
    await pf.waitForLog(new RegExp(`${qid}: to=<alice@example\\.test>, relay=[^,]*lmtp\\.sock[^,]*, .*status=sent \\(250 2\\.`), WAIT_MS);
    await waitFor('the copy in Maildir/new', () => (withMessageId(maildir, id).length > 0 ? true : undefined), diag);
    await waitFor('Postfix\'s queue to empty', async () => ((await pf?.queueIds())?.length === 0 ? true : undefined), diag);
    // Give a second delivery (a retry after a lost reply) the time to show up.
    await sleep(3_000);
    assert.equal(withMessageId(maildir, id).length, 1, `exactly one copy${diag()}`);
    assert.equal(pf.linesOf(qid).filter((l) => /status=sent/.test(l)).length, 1, `one status=sent${diag()}`);
    assert.equal(d.logs.filter((l) => /to=<alice@example\.test>, relay=maildir, .*status=sent/.test(l)).length, 1, `mailprocd delivered once${diag()}`);
  } finally {
    await pf?.stop();
    await d.stop();
    d.cleanup();
  }
});

test('Postfix: a recipient it does not list is refused at RCPT with 550 5.1.1; the other recipient still gets the message and no bounce is sent', async (t) => {
  if (!components(t)) return;
  const d = await startDaemon({ rules: RULES, config: CONFIG });
  let pf: TestPostfix | undefined;
  try {
    pf = await startPostfix({ lmtpSocket: d.socket });
    const diag = (): string => diagnostics(pf, d);

    const lone = await swaks({ port: pf.smtpPort, from: 's@remote.test', to: ['nobody@example.test'], messageId: newMessageId('unknown') });
    assert.equal(lone.code, 24, `swaks: no recipient accepted (exit 24), got ${lone.code}:\n${lone.stdout}`);
    assert.match(lone.stdout, /<\*\* +550 5\.1\.1 <nobody@example\.test>: Recipient address rejected: User unknown/);
    await pf.waitForLog(/NOQUEUE: reject: RCPT from [^:]*: 550 5\.1\.1 <nobody@example\.test>/, WAIT_MS);

    const id = newMessageId('mixed');
    const mixed = await swaks({ port: pf.smtpPort, from: 's@remote.test', to: ['nobody@example.test', 'bob@example.test'], messageId: id });
    assert.equal(mixed.code, 0, mixed.stdout);
    assert.match(mixed.stdout, /<\*\* +550 5\.1\.1 <nobody@example\.test>/);
    const qid = mixed.queueId as string;
    await pf.waitForLog(new RegExp(`${qid}: to=<bob@example\\.test>, .*status=sent`), WAIT_MS);
    await waitFor('bob\'s copy', () => (withMessageId(join(d.mail, 'bob', 'Maildir'), id).length === 1 ? true : undefined), diag);
    await pf.waitForLog(new RegExp(`${qid}: removed`), WAIT_MS);
    // The client was told at RCPT: Postfix made no bounce, and mailprocd never heard of nobody@.
    assert.doesNotMatch(pf.logs(), /status=bounced|sender non-delivery notification/);
    assert.ok(!d.logs.some((l) => l.includes('nobody@example.test')), `mailprocd saw nobody@${diag()}`);
    assert.ok(!existsSync(join(d.mail, 'nobody')));
  } finally {
    await pf?.stop();
    await d.stop();
    d.cleanup();
  }
});

test('Postfix lists an address mailprocd does not know: mailprocd refuses it 550 5.1.1 at LMTP RCPT and the sender gets a bounce naming it', async (t) => {
  if (!components(t)) return;
  const d = await startDaemon({ rules: RULES, config: CONFIG });
  let pf: TestPostfix | undefined;
  try {
    // Postfix's recipient list out of step with mailprocd's tables.
    pf = await startPostfix({ lmtpSocket: d.socket, recipients: ['alice@example.test', 'bob@example.test', 'carol@example.test'] });
    const diag = (): string => diagnostics(pf, d);
    const id = newMessageId('drift');
    const sent = await swaks({ port: pf.smtpPort, from: 'bob@example.test', to: ['carol@example.test'], messageId: id, subject: 'to carol' });
    assert.equal(sent.code, 0, `Postfix accepts it (it lists carol):\n${sent.stdout}`);
    const qid = sent.queueId as string;
    const bounced = await pf.waitForLog(new RegExp(`${qid}: to=<carol@example\\.test>, relay=[^,]*lmtp\\.sock.*dsn=5\\.1\\.1, status=bounced`), WAIT_MS);
    assert.match(bounced, /said: 550 5\.1\.1 <carol@example\.test>: Recipient address rejected: User unknown \(in reply to RCPT TO command\)/);
    const ndr = await pf.waitForLog(new RegExp(`${qid}: sender non-delivery notification: ([0-9A-Za-z]+)`), WAIT_MS);
    const ndrId = /notification: ([0-9A-Za-z]+)/.exec(ndr)?.[1] as string;
    await pf.waitForLog(new RegExp(`${ndrId}: to=<bob@example\\.test>, .*status=sent`), WAIT_MS);

    // What bob sees: Postfix's bounce in his Maildir, naming carol and the 5.1.1, with his message's headers.
    const maildir = join(d.mail, 'bob', 'Maildir');
    const files = await waitFor('the bounce in bob\'s Maildir', () => {
      const f = withMessageId(maildir, id);
      return f.length > 0 ? f : undefined;
    }, diag);
    assert.equal(files.length, 1);
    const text = readFileSync(files[0] as string, 'utf8');
    assert.match(text, /^Return-Path: <>$/m);
    assert.match(text, /^Subject: Undelivered Mail Returned to Sender$/m);
    assert.match(text, /^From: Mail Delivery System <MAILER-DAEMON@/m);
    // Postfix folds the diagnostic over lines.
    assert.match(text.replace(/\s+/g, ' '), /<carol@example\.test>: host \S*lmtp\.sock\S* said: 550 5\.1\.1 <carol@example\.test>: Recipient address rejected: User unknown \(in reply to RCPT TO command\)/);
    assert.match(text, /^Status: 5\.1\.1$/m);
    assert.ok(!existsSync(join(d.mail, 'carol')), 'nothing for carol');
  } finally {
    await pf?.stop();
    await d.stop();
    d.cleanup();
  }
});

test('Debian\'s stock master.cf chroots lmtp(8): with the socket inside the queue directory (lmtp:unix:private/…) mail lands', async (t) => {
  if (!components(t)) return;
  // Postfix first: mailprocd's socket goes into its queue directory.
  const pf = await startPostfix({ lmtpSocket: 'private/mailprocd-lmtp', lmtpChroot: true });
  let d: TestDaemon | undefined;
  try {
    const socket = join(pf.queueDir, 'private', 'mailprocd-lmtp');
    d = await startDaemon({ rules: RULES, config: { ...CONFIG, lmtp: { ...CONFIG.lmtp, listen: [`unix:${socket}`] } } });
    const daemon = d;
    const id = newMessageId('chroot');
    const sent = await swaks({ port: pf.smtpPort, from: 's@remote.test', to: ['alice@example.test'], messageId: id });
    assert.equal(sent.code, 0, sent.stdout);
    await pf.waitForLog(new RegExp(`${sent.queueId}: to=<alice@example\\.test>, relay=[^,]*\\[private/mailprocd-lmtp\\], .*status=sent \\(250 2\\.`), WAIT_MS);
    await waitFor('alice\'s copy', () => (withMessageId(join(daemon.mail, 'alice', 'Maildir'), id).length === 1 ? true : undefined), () => diagnostics(pf, daemon));
  } finally {
    await d?.stop();
    d?.cleanup();
    await pf.stop();
  }
});
