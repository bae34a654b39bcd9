// A mailbox that belongs to someone else is refused (issue 8 point 2), like
// Postfix's safe_open ("not owned by recipient"): another local user (B) who
// planted carol's mbox, her per-user directory, or a new/ or tmp/ in
// alice's Maildir gets nothing — the message is not written there, the reply
// is a temporary 4.2.0, and the log line names the path and its owner. The
// mail root the daemon creates is not world-writable, and the per-user
// directory under it is made by the master, 0700, owned by the delivery user.
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireRoot } from '../helpers/components.js';
import { DEFAULT_RULES, makeTestDir, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { lmtpDeliver } from '../helpers/raw-client.js';
import { ensureSystemUser, type SystemUser } from '../helpers/users.js';

const lmtp = (d: TestDaemon, rcpt: string): Promise<string> => lmtpDeliver(d.lmtpPort, rcpt, 'Subject: for you only\r\n\r\nsecret\r\n');

interface Users { carol: SystemUser; alice: SystemUser; intruder: SystemUser }

function users(): Users {
  return { carol: ensureSystemUser('mpt-carol'), alice: ensureSystemUser('mpt-alice'), intruder: ensureSystemUser('mpt-intruder') };
}

/** A test directory whose mail root exists, with `plant` run in it before the daemon starts. */
async function daemonWith(u: Users, plant: (mail: string) => void): Promise<TestDaemon> {
  const dir = makeTestDir();
  const mail = join(dir, 'mail');
  mkdirSync(mail, { mode: 0o755 });
  plant(mail);
  return startDaemon({ dir, rules: DEFAULT_RULES(mail), uid: `carol@example.test  ${u.carol.name}\nalice@example.test  ${u.alice.name}\n` });
}

function makeDir(path: string, owner: SystemUser, mode: number): void {
  mkdirSync(path);
  chownSync(path, owner.uid, owner.gid);
  chmodSync(path, mode);
}

/** The delivery log line for rcpt. */
function logLine(d: TestDaemon, rcpt: string): string {
  return d.logs.find((l) => l.includes(`to=<${rcpt}>`)) ?? `(no log line for ${rcpt}:\n${d.logs.join('\n')})`;
}

const cases: {
  name: string;
  rcpt: string;
  plant: (mail: string, u: Users) => void;
  /** The path the refusal must name, and whose owner. */
  named: (mail: string) => string;
  /** Where the message must not be. */
  untouched: (mail: string) => void;
}[] = [
  {
    name: 'an mbox file planted by B (mode 0666) in carol\'s own directory',
    rcpt: 'carol@example.test',
    plant: (mail, u) => {
      makeDir(join(mail, 'carol'), u.carol, 0o777); // carol's mistake lets B in
      writeFileSync(join(mail, 'carol', 'mbox'), '');
      chownSync(join(mail, 'carol', 'mbox'), u.intruder.uid, u.intruder.gid);
      chmodSync(join(mail, 'carol', 'mbox'), 0o666);
    },
    named: (mail) => join(mail, 'carol', 'mbox'),
    untouched: (mail) => assert.equal(statSync(join(mail, 'carol', 'mbox')).size, 0, 'nothing appended to B\'s file'),
  },
  {
    name: 'carol\'s per-user directory and mbox made by B (when the mail root was world-writable)',
    rcpt: 'carol@example.test',
    plant: (mail, u) => {
      makeDir(join(mail, 'carol'), u.intruder, 0o755);
      writeFileSync(join(mail, 'carol', 'mbox'), '');
      chownSync(join(mail, 'carol', 'mbox'), u.intruder.uid, u.intruder.gid);
      chmodSync(join(mail, 'carol', 'mbox'), 0o666);
    },
    named: (mail) => join(mail, 'carol'),
    untouched: (mail) => assert.equal(statSync(join(mail, 'carol', 'mbox')).size, 0, 'nothing appended to B\'s file'),
  },
  {
    name: 'a new/ owned by B (mode 0777) in alice\'s Maildir',
    rcpt: 'alice@example.test',
    plant: (mail, u) => {
      makeDir(join(mail, 'alice'), u.alice, 0o700);
      makeDir(join(mail, 'alice', 'Maildir'), u.alice, 0o777);
      for (const sub of ['cur', 'tmp']) makeDir(join(mail, 'alice', 'Maildir', sub), u.alice, 0o700);
      makeDir(join(mail, 'alice', 'Maildir', 'new'), u.intruder, 0o777);
    },
    named: (mail) => join(mail, 'alice', 'Maildir', 'new'),
    untouched: (mail) => {
      assert.deepEqual(newFiles(join(mail, 'alice', 'Maildir')), [], 'nothing in B\'s new/');
      assert.deepEqual(readdirSync(join(mail, 'alice', 'Maildir', 'tmp')), [], 'nothing left in tmp/');
    },
  },
  {
    name: 'a tmp/ owned by B (mode 0777) in alice\'s Maildir',
    rcpt: 'alice@example.test',
    plant: (mail, u) => {
      makeDir(join(mail, 'alice'), u.alice, 0o700);
      makeDir(join(mail, 'alice', 'Maildir'), u.alice, 0o777);
      for (const sub of ['cur', 'new']) makeDir(join(mail, 'alice', 'Maildir', sub), u.alice, 0o700);
      makeDir(join(mail, 'alice', 'Maildir', 'tmp'), u.intruder, 0o777);
    },
    named: (mail) => join(mail, 'alice', 'Maildir', 'tmp'),
    untouched: (mail) => {
      assert.deepEqual(readdirSync(join(mail, 'alice', 'Maildir', 'tmp')), [], 'nothing written into B\'s tmp/');
      assert.deepEqual(newFiles(join(mail, 'alice', 'Maildir')), []);
    },
  },
  {
    name: 'alice\'s Maildir itself owned by B',
    rcpt: 'alice@example.test',
    plant: (mail, u) => {
      makeDir(join(mail, 'alice'), u.alice, 0o777);
      makeDir(join(mail, 'alice', 'Maildir'), u.intruder, 0o777);
      for (const sub of ['cur', 'new', 'tmp']) makeDir(join(mail, 'alice', 'Maildir', sub), u.intruder, 0o777);
    },
    named: (mail) => join(mail, 'alice', 'Maildir'),
    untouched: (mail) => assert.deepEqual(newFiles(join(mail, 'alice', 'Maildir')), []),
  },
];

for (const c of cases) {
  test(`refused with 4.2.0, path and owner logged: ${c.name}`, async (t) => {
    if (!requireRoot(t, 'files owned by other system users')) return;
    const u = users();
    const d = await daemonWith(u, (mail) => c.plant(mail, u));
    try {
      assert.match(await lmtp(d, c.rcpt), /^4\d\d 4\.2\.0 /);
      c.untouched(d.mail);
      const line = logLine(d, c.rcpt);
      assert.match(line, /dsn=4\.2\.0/);
      const named = c.named(d.mail);
      const escaped = named.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      assert.match(line, new RegExp(`${escaped}/?[: ]`), `the log names ${named}`);
      assert.ok(line.includes(`uid ${u.intruder.uid}`), `the log names the owner (uid ${u.intruder.uid}): ${line}`);
    } finally {
      await d.stop();
      d.cleanup();
    }
  });
}

test('the mail root the daemon creates is not world-writable; the per-user directory is made 0700 for the delivery user', async (t) => {
  if (!requireRoot(t, 'delivering as system users')) return;
  const u = users();
  const d = await startDaemon({ uid: `carol@example.test  ${u.carol.name}\nalice@example.test  ${u.alice.name}\n` });
  try {
    const root = statSync(d.mail);
    assert.equal(root.mode & 0o7777, 0o755, `mail root mode ${(root.mode & 0o7777).toString(8)}`);
    assert.equal(root.uid, 0);
    assert.match(await lmtp(d, 'alice@example.test'), /^250 2\.0\.0 /);
    assert.match(await lmtp(d, 'carol@example.test'), /^250 2\.0\.0 /);
    for (const [name, user] of [['alice', u.alice], ['carol', u.carol]] as const) {
      const st = statSync(join(d.mail, name));
      assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [user.uid, user.gid, 0o700], `${name}'s directory: uid, gid, mode`);
    }
    assert.equal(newFiles(join(d.mail, 'alice', 'Maildir')).length, 1);
    assert.ok(existsSync(join(d.mail, 'carol', 'mbox')));
    assert.equal(statSync(join(d.mail, 'carol', 'mbox')).uid, u.carol.uid);
  } finally {
    await d.stop();
    d.cleanup();
  }
});
