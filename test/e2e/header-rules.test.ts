// Header rules against a real mailprocd: a rule `header:Subject=Invoice*`
// (and one `header:Subject=*Café*`) with a folder destination sees the
// subject as a person reads it — RFC 2047 B and Q words in UTF-8 and latin1,
// folded words, raw UTF-8, raw latin1 — so each message lands in that folder,
// byte for byte as it was sent (only our trace headers added in front), and
// a message whose subject does not match stays in the inbox.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { listDir, newFiles, onlyMessage, stored } from '../helpers/mailbox.js';
import { dataBlock, RawClient } from '../helpers/raw-client.js';

const RULES = `
@hdr.test  maildir:\${MAIL}/\${user}/Maildir/  folder=Invoices  header:Subject=Invoice*  stop
@hdr.test  maildir:\${MAIL}/\${user}/Maildir/  folder=Cafe  header:Subject=*Café*  stop
@hdr.test  maildir:\${MAIL}/\${user}/Maildir/
`;

let d: TestDaemon;
before(async () => {
  d = await startDaemon({ rules: RULES });
});
after(async () => {
  await d.stop();
  d.cleanup();
});

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');
const utf8 = (s: string): Buffer => Buffer.from(s, 'utf8');
const message = (subject: Buffer): Buffer => Buffer.concat([
  latin1('From: <s@remote.test>\r\nTo: <x@hdr.test>\r\nSubject:'), subject,
  latin1('\r\nMessage-ID: <1@remote.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n'),
]);

/** Sends one message to `user@hdr.test` over LMTP; returns the reply after DATA. */
async function send(user: string, msg: Buffer): Promise<string> {
  const c = await RawClient.open({ path: d.socket });
  try {
    assert.equal((await c.reply()).code, 220);
    assert.equal((await c.command('LHLO client.test')).code, 250);
    assert.equal((await c.command('MAIL FROM:<s@remote.test> BODY=8BITMIME')).code, 250);
    assert.equal((await c.command(`RCPT TO:<${user}@hdr.test>`)).code, 250);
    assert.equal((await c.command('DATA')).code, 354);
    c.write(Buffer.from(dataBlock(msg.toString('latin1')), 'latin1'));
    return (await c.reply()).line;
  } finally {
    c.close();
  }
}

const cases: { name: string; subject: Buffer; folder: string | undefined }[] = [
  { name: 'a B-encoded UTF-8 subject', subject: latin1(' =?UTF-8?B?SW52b2ljZSAxMjM=?='), folder: 'Invoices' },
  { name: 'a Q-encoded UTF-8 subject', subject: latin1(' =?utf-8?q?Invoice_123?='), folder: 'Invoices' },
  { name: 'a Q-encoded latin1 subject', subject: latin1(' =?ISO-8859-1?Q?Invoice_f=FCr_M=E4rz?='), folder: 'Invoices' },
  { name: 'a B-encoded latin1 subject', subject: latin1(' =?iso-8859-1?B?SW52b2ljZSBm/HIgTeRyeg==?='), folder: 'Invoices' },
  { name: 'a subject folded between two encoded words', subject: latin1(' =?UTF-8?Q?Inv?=\r\n =?UTF-8?Q?oice_123?='), folder: 'Invoices' },
  { name: 'a subject folded inside plain text', subject: latin1(' Invoice\r\n\t123'), folder: 'Invoices' },
  { name: 'a raw UTF-8 subject', subject: utf8(' Invoice für März'), folder: 'Invoices' },
  { name: 'a Q-encoded UTF-8 Café', subject: latin1(' Menu du =?UTF-8?Q?Caf=C3=A9?='), folder: 'Cafe' },
  { name: 'a Q-encoded latin1 Café', subject: latin1(' =?ISO-8859-1?Q?Caf=E9_du_coin?='), folder: 'Cafe' },
  { name: 'a B-encoded UTF-8 Café split over two folded words', subject: latin1(' =?UTF-8?B?Q2Fmww==?=\r\n =?UTF-8?B?qSBjcsOobWU=?='), folder: 'Cafe' },
  { name: 'a raw UTF-8 Café', subject: utf8(' Café crème'), folder: 'Cafe' },
  { name: 'a raw latin1 Café', subject: latin1(' Caf\xe9 cr\xe8me'), folder: 'Cafe' },
  { name: 'an encoded subject that says something else', subject: latin1(' =?UTF-8?B?UmU6IGludm9pY2U=?='), folder: undefined },
  { name: 'a subject that only has the encoded bytes of Invoice in it', subject: latin1(' SW52b2ljZQ=='), folder: undefined },
];

let seq = 0;
for (const c of cases) {
  test(`${c.name} lands ${c.folder === undefined ? 'in the inbox' : `in folder ${c.folder}`}, byte for byte`, async () => {
    const user = `h${++seq}`;
    const msg = message(c.subject);
    assert.match(await send(user, msg), /^250 /);
    const maildir = join(d.mail, user, 'Maildir');
    const where = c.folder === undefined ? maildir : join(maildir, `.${c.folder}`);
    const m = onlyMessage(where);
    assert.deepEqual(m.rest, stored(msg), 'the stored bytes are the sent bytes with CRLF → LF');
    assert.match(m.trace, new RegExp(`^Delivered-To: ${user}@hdr\\.test$`, 'm'));
    if (c.folder !== undefined) assert.deepEqual(newFiles(maildir), [], 'nothing in the inbox');
    for (const other of ['Invoices', 'Cafe'].filter((f) => f !== c.folder)) {
      assert.deepEqual(listDir(join(maildir, `.${other}`, 'new')), [], `nothing in folder ${other}`);
    }
  });
}
