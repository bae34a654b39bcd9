// Templates are expanded once (issue "the recipient layer"): through the real
// daemon, a sender who writes `${home}` into the extension of bob's address
// gets a folder literally named after the extension, never one named after the
// delivery user's home directory; a `/` in the extension becomes `_`.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { startDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { lmtpDeliver } from '../helpers/raw-client.js';

const lmtp = (port: number, rcpt: string): Promise<string> => lmtpDeliver(port, rcpt, 'Subject: templates\r\n\r\nbody\r\n');

test('bob+${home}@… lands in a folder named ".${home}", and bob+a/b@… in ".a_b"; no folder is named after a home', { timeout: 60_000 }, async () => {
  const d = await startDaemon();
  try {
    assert.match(await lmtp(d.lmtpPort, 'bob+${home}@example.test'), /^250 2\.0\.0 /);
    assert.match(await lmtp(d.lmtpPort, 'bob+a/b@example.test'), /^250 2\.0\.0 /);
    const maildir = join(d.mail, 'bob', 'Maildir');
    assert.equal(newFiles(join(maildir, '.${home}')).length, 1);
    assert.equal(newFiles(join(maildir, '.a_b')).length, 1);
    const folders = readdirSync(maildir).filter((f) => f.startsWith('.')).sort();
    assert.deepEqual(folders, ['.${home}', '.a_b'], 'nothing else: no folder from a home path (e.g. .nonexistent, .root)');
  } finally {
    await d.stop();
    d.cleanup();
  }
});
