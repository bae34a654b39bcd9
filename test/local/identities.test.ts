// A rule's uid= names another identity, and its copy is written as that
// identity, by that identity's own worker; the address's other copies are
// written as its owner (the uid table's user). Real system users, real files.
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireRoot } from '../helpers/components.js';
import { startDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { lmtpDeliver } from '../helpers/raw-client.js';
import { ensureSystemUser } from '../helpers/users.js';

test('an archive rule with uid= writes its copy as the archive user, the owner\'s copy as the owner', { timeout: 90_000 }, async (t) => {
  if (!requireRoot(t, 'delivering as system users')) return;
  const owner = ensureSystemUser('mpt-alice');
  const archivist = ensureSystemUser('mpt-arch');
  const d = await startDaemon({
    rules: `alice@example.test  mbox:\${MAIL}/archive/alice  uid=${archivist.name}\nalice@example.test  maildir:\${MAIL}/alice/Maildir/\n`,
    uid: `alice@example.test  ${owner.name}\n`,
  });
  try {
    assert.match(await lmtpDeliver(d.lmtpPort, 'alice@example.test', 'Subject: twice\r\n\r\nkeep a copy\r\n'), /^250 2\.0\.0 .*Saved 2 copies/);
    const [inbox] = newFiles(join(d.mail, 'alice', 'Maildir'));
    assert.ok(inbox !== undefined, 'the owner\'s copy');
    assert.equal(statSync(inbox).uid, owner.uid);
    const archive = join(d.mail, 'archive', 'alice');
    assert.equal(statSync(archive).uid, archivist.uid);
    assert.equal(statSync(join(d.mail, 'archive')).uid, archivist.uid, 'its directory under the mail root is the archivist\'s');
    assert.match(readFileSync(archive, 'utf8'), /^From s@remote\.test .*\nReturn-Path: <s@remote\.test>\nDelivered-To: alice@example\.test\n[\s\S]*keep a copy\n/);
  } finally {
    await d.stop();
    d.cleanup();
  }
});
