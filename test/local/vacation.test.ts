// vacation rules against a real mailprocd, replies caught by a loopback SMTP
// sink as relay.smtp: one reply per sender per period with the RFC 3834
// headers and a real envelope sender; none for list or bulk mail, the null
// sender, automatic mail, or when the owner is only in Bcc; the message
// itself is delivered all the same (Sieve's implicit keep). text_file= is
// read only when the owner (or root, world-readable) owns it.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTransport, type Transporter } from 'nodemailer';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { startSmtpSink, type SinkMessage, type SmtpSink } from '../helpers/smtp-sink.js';
import { waitFor } from '../helpers/wait.js';

let sink: SmtpSink;
let d: TestDaemon;
let lmtp: Transporter;
let files: string;
let seq = 0;

before(async () => {
  sink = await startSmtpSink();
  // Files for text_file=, made before the daemon starts (its rules name them).
  files = mkdtempSync(join(tmpdir(), 'mailproc-vacation-'));
  writeFileSync(join(files, 'public.txt'), 'From a file: away.\n');
  chmodSync(join(files, 'public.txt'), 0o644);
  writeFileSync(join(files, 'secret.txt'), 'root only\n');
  chmodSync(join(files, 'secret.txt'), 0o600);
  symlinkSync('/etc/passwd', join(files, 'link.txt'));
  d = await startDaemon({
    rules: `
away@v.test    vacation text="I am away.\\nBack on Monday."  subject="Away"  days=7
auto@v.test    vacation text="Auto subject."
file@v.test    vacation text_file=${files}/public.txt
secret@v.test  vacation text_file=${files}/secret.txt
link@v.test    vacation text_file=${files}/link.txt
`,
    config: { relay: { smtp: `127.0.0.1:${sink.port}` }, log: { level: 'info' } },
  });
  lmtp = createTransport({ host: '127.0.0.1', port: d.lmtpPort, lmtp: true, name: 'client.test' } as never);
});
after(async () => {
  lmtp.close();
  await d.stop();
  d.cleanup();
  await sink.close();
  rmSync(files, { recursive: true, force: true });
});

interface Sent { readonly id: string }
async function send(from: string, to: string, o: { headers?: string; toHeader?: string; subject?: string } = {}): Promise<Sent> {
  const id = `<vac-${++seq}@remote.test>`;
  const raw = `From: ${from || 'mailer@remote.test'}\r\nTo: ${o.toHeader ?? to}\r\nSubject: ${o.subject ?? `message ${seq}`}\r\nMessage-ID: ${id}\r\n${o.headers ?? ''}\r\nhello\r\n`;
  const info = await lmtp.sendMail({ envelope: { from, to: [to] }, raw });
  assert.deepEqual(info.accepted, [to], 'the message itself is delivered');
  return { id };
}

const replies = (to: string): SinkMessage[] => sink.messages.filter((m) => m.to.includes(to));
const user = (address: string): string => address.split('@')[0] as string;

describe('vacation', () => {
  test('a reply with the RFC 3834 headers and the owner as envelope sender; the message is kept', async () => {
    const { id } = await send('friend@remote.test', 'away@v.test', { subject: 'lunch?' });
    const r = await waitFor('the reply', () => replies('friend@remote.test')[0]);
    assert.equal(r.from, 'away@v.test', 'a real envelope sender, not <>');
    const text = r.raw.toString('utf8');
    assert.match(text, /^Auto-Submitted: auto-replied$/im);
    assert.match(text, /^Subject: Away$/m);
    assert.match(text, new RegExp(`^In-Reply-To: ${id}$`, 'm'));
    assert.match(text, new RegExp(`^References: ${id}$`, 'm'));
    assert.match(text, /^From: <away@v\.test>$/m);
    assert.match(text, /^To: <friend@remote\.test>$/m);
    assert.match(text, /I am away\.\r\nBack on Monday\./);
    assert.equal(newFiles(join(d.mail, 'away', 'Maildir')).length, 1, 'the message went to the default Maildir');
    await d.waitForLog(/vacation: reply sent to <friend@remote\.test> from <away@v\.test>/);
  });

  test('once per sender per period: the second message gets none, another sender gets one', async () => {
    await send('once@remote.test', 'away@v.test');
    await waitFor('the first reply', () => replies('once@remote.test')[0]);
    await send('once@remote.test', 'away@v.test');
    await d.waitForLog(/vacation: no reply to <once@remote\.test>: already answered within 7 day\(s\)/);
    await send('other@remote.test', 'away@v.test');
    await waitFor('the other sender\'s reply', () => replies('other@remote.test')[0]);
    assert.equal(replies('once@remote.test').length, 1);
    assert.equal(newFiles(join(d.mail, 'away', 'Maildir')).length, 4, 'every message delivered');
  });

  test('without subject=, "Auto: " and the original subject', async () => {
    await send('subj@remote.test', 'auto@v.test', { subject: 'Quarterly numbers' });
    const r = await waitFor('the reply', () => replies('subj@remote.test')[0]);
    assert.match(r.raw.toString('utf8'), /^Subject: Auto: Quarterly numbers$/m);
  });

  for (const c of [
    { name: 'a List-Id', from: 'list1@remote.test', headers: 'List-Id: <dev.remote.test>\r\n', why: /list/i },
    { name: 'Precedence: bulk', from: 'bulk1@remote.test', headers: 'Precedence: bulk\r\n', why: /bulk/i },
    { name: 'Auto-Submitted: auto-generated', from: 'auto1@remote.test', headers: 'Auto-Submitted: auto-generated\r\n', why: /auto-submitted/i },
    { name: 'the owner only in Bcc', from: 'bcc1@remote.test', toHeader: 'someone@remote.test', why: /To|Cc|address/ },
    { name: 'the null sender', from: '', why: /null sender/i },
  ]) {
    test(`no reply for ${c.name}, and the message is still delivered`, async () => {
      const before = newFiles(join(d.mail, 'away', 'Maildir')).length;
      await send(c.from, 'away@v.test', { ...(c.headers !== undefined ? { headers: c.headers } : {}), ...(c.toHeader !== undefined ? { toHeader: c.toHeader } : {}) });
      const line = await d.waitForLog(new RegExp(`vacation: no reply to <${c.from.replace(/[.]/g, '\\.')}>: `));
      assert.match(line, c.why);
      assert.equal(newFiles(join(d.mail, 'away', 'Maildir')).length, before + 1);
      if (c.from !== '') assert.equal(replies(c.from).length, 0);
    });
  }

  // As root the owner is nobody, so the root-only file is someone else's; run as a user, every file would be that user's own.
  test('text_file=: a root-owned world-readable file is read; a root-only one and a symlink are refused, with no reply', { skip: process.getuid?.() !== 0 ? 'needs root (the tests run as root in CI)' : false }, async () => {
    await send('f1@remote.test', 'file@v.test');
    const r = await waitFor('the reply', () => replies('f1@remote.test')[0]);
    assert.match(r.raw.toString('utf8'), /From a file: away\./);
    await send('f2@remote.test', 'secret@v.test');
    await d.waitForLog(/vacation: no reply to <f2@remote\.test>: text_file refused: .*secret\.txt belongs to uid 0/);
    await send('f3@remote.test', 'link@v.test');
    await d.waitForLog(/vacation: no reply to <f3@remote\.test>: text_file refused: .*link\.txt is a symbolic link/);
    assert.equal(replies('f2@remote.test').length + replies('f3@remote.test').length, 0);
    assert.equal(newFiles(join(d.mail, user('secret@v.test'), 'Maildir')).length, 1, 'delivered all the same');
  });
});
