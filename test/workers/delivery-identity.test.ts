// Deliveries never run as root: started as root, the daemon delivers as
// `nobody` (Postfix's default_privs) through a worker process whose real and
// effective uid are nobody's; files are owned by that user. A table that maps
// an address to root is refused, temporarily, and nothing is written.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTestDir, startDaemon } from '../helpers/daemon.js';
import { requireRoot } from '../helpers/components.js';
import { lmtpDeliver } from '../helpers/raw-client.js';
import { newFiles } from '../helpers/mailbox.js';

const deliver = (port: number, rcpt: string): Promise<string> => lmtpDeliver(port, rcpt, 'Subject: who\r\n\r\nwho am I\r\n');

function workerPids(parent: number): number[] {
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === parent;
    } catch {
      return false;
    }
  });
}

test('run as root, deliveries run as nobody in a worker process and files are owned by nobody', async (t) => {
  if (!requireRoot(t, 'switching to the delivery user')) return;
  const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
  const d = await startDaemon({ uid: 'rooty@example.test  root!\n', rules: 'alice@example.test  maildir:${MAIL}/${user}/Maildir/\nrooty@example.test  maildir:${MAIL}/rooty/Maildir/\n' });
  try {
    assert.match(await deliver(d.lmtpPort, 'alice@example.test'), /^250 2\.0\.0 /);
    const [file] = newFiles(join(d.mail, 'alice', 'Maildir'));
    assert.ok(file);
    assert.equal(statSync(file).uid, nobody);
    const pids = workerPids(d.child.pid ?? -1);
    assert.equal(pids.length, 1, 'one worker for the one delivery identity');
    const status = readFileSync(`/proc/${pids[0]}/status`, 'utf8');
    const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status)?.slice(1).map(Number);
    assert.deepEqual(uids, [nobody, nobody, nobody, nobody], 'real, effective, saved and fs uid are nobody');
    const groups = /^Groups:\s*(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).filter(Boolean).map(Number) ?? [];
    assert.ok(!groups.includes(0), 'no root group among the supplementary groups');

    assert.match(await deliver(d.lmtpPort, 'rooty@example.test'), /^451 4\.3\.5 /);
    await d.waitForLog(/to=<rooty@example\.test>.*dsn=4\.3\.5, status=deferred \(refusing to deliver as root/); // the reason is for the log, not the client
    assert.equal(existsSync(join(d.mail, 'rooty')), false, 'nothing written for the root-mapped address');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('run as an ordinary user, the daemon delivers as that user', async (t) => {
  if (!requireRoot(t, 'creating a system user to run the daemon as')) return;
  const user = 'mailproc-t1';
  try {
    execFileSync('id', ['-u', user], { stdio: 'pipe' });
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user], { stdio: 'pipe' });
  }
  const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
  const dir = makeTestDir();
  chownSync(dir, uid, gid);
  const d = await startDaemon({ dir, runAs: { uid, gid } });
  try {
    assert.match(await deliver(d.lmtpPort, 'alice@example.test'), /^250 2\.0\.0 /);
    const [file] = newFiles(join(d.mail, 'alice', 'Maildir'));
    assert.ok(file);
    assert.equal(statSync(file).uid, uid);
    assert.match(d.logs.find((l) => / ready /.test(l)) ?? '', new RegExp(`user=${user}`));
  } finally {
    await d.stop();
    d.cleanup();
  }
});
