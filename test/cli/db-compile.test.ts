// `mailproc db compile` against a running daemon: a bad source is refused with
// file:line and the daemon keeps answering from the old tables; a good one is
// picked up by the daemon at once, without restart or signal.
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { MAILPROC, startDaemon } from '../helpers/daemon.js';
import { lmtpRcptCode } from '../helpers/raw-client.js';



test('a bad rules line is refused with file:line and the running daemon keeps the old table; a good compile is seen without restart', async () => {
  const d = await startDaemon({ rules: 'alice@example.test  maildir:${MAIL}/${user}/Maildir/\n' });
  try {
    const rules = join(d.dir, 'db', 'rules');
    assert.equal(await lmtpRcptCode(d.lmtpPort, 'alice@example.test'), 250);
    assert.equal(await lmtpRcptCode(d.lmtpPort, 'dave@example.test'), 550);

    writeFileSync(rules, `dave@example.test  maildir:${d.mail}/\${user}/Maildir/\nerin@example.test  maildri:/nowhere\n`);
    const bad = spawnSync(process.execPath, [MAILPROC, '--config', d.configFile, 'db', 'compile'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, new RegExp(`${rules.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: .*maildri`));
    assert.equal(await lmtpRcptCode(d.lmtpPort, 'alice@example.test'), 250, 'old table still answers');
    assert.equal(await lmtpRcptCode(d.lmtpPort, 'dave@example.test'), 550, 'nothing of the bad source was applied');

    writeFileSync(rules, `dave@example.test  maildir:${d.mail}/\${user}/Maildir/\n`);
    const good = spawnSync(process.execPath, [MAILPROC, '--config', d.configFile, 'db', 'compile'], { encoding: 'utf8' });
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /rules: 1 entries/);
    assert.equal(await lmtpRcptCode(d.lmtpPort, 'dave@example.test'), 250, 'the new table is live');
    assert.equal(await lmtpRcptCode(d.lmtpPort, 'alice@example.test'), 550, 'the old entry is gone');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('mailproc db compile reads delivery.allow_root: root compiles for a listed key, is refused at file:line:column for another, and root! marks it', async () => {
  const d = await startDaemon({ config: { delivery: { allow_root: ['postmaster@example.test'] } } });
  try {
    const uid = join(d.dir, 'db', 'uid');
    const compile = (): SpawnSyncReturns<string> => spawnSync(process.execPath, [MAILPROC, '--config', d.configFile, 'db', 'compile', 'uid'], { encoding: 'utf8' });
    writeFileSync(uid, 'postmaster@example.test  root\nops@example.test  0\n');
    const bad = compile();
    assert.equal(bad.status, 1);
    assert.equal(bad.stderr, `mailproc: ${uid}:2:19: uid "0" is the superuser: deliveries as root need "ops@example.test" in delivery.allow_root; write "0!" if this entry means it (db/README.md, "Root")\nmailproc: nothing compiled; the tables in use are unchanged\n`);
    writeFileSync(uid, 'postmaster@example.test  root\nops@example.test  0!\n');
    const good = compile();
    assert.equal(good.status, 0, good.stderr);
    assert.match(good.stdout, /^uid: 2 entries/);
  } finally {
    await d.stop();
    d.cleanup();
  }
});
