// mail-root.ts: the master makes each user's directory under the mail root
// (0700, theirs), refuses one that is someone else's or a symlink (4.2.0,
// path and owner in the text), makes nothing for identities the pool will
// refuse, and does the work once per directory (concurrent deliveries share
// it, later ones hit the cache).
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { Destination } from '../../src/classify/rules.js';
import type { Identity } from '../../src/os/identity.js';
import { clearMailRootCache, prepareUserDirectories, userDirectoryOf } from '../../src/workers/mail-root.js';
import { requireRoot } from '../helpers/components.js';
import { ensureSystemUser } from '../helpers/users.js';

const maildir = (path: string): Destination => ({ kind: 'maildir', path });
const mbox = (path: string): Destination => ({ kind: 'mbox', path });

test('userDirectoryOf: the first component below the mail root, for maildir and mbox destinations', () => {
  const cases: { name: string; d: Destination; want: string | undefined }[] = [
    { name: 'a Maildir in the user\'s directory', d: maildir('/var/mail/alice/Maildir/'), want: '/var/mail/alice' },
    { name: 'an mbox in the user\'s directory', d: mbox('/var/mail/carol/mbox'), want: '/var/mail/carol' },
    { name: 'a Maildir that is the per-user entry itself', d: maildir('/var/mail/alice/'), want: '/var/mail/alice' },
    { name: 'an mbox file directly in the root has no directory', d: mbox('/var/mail/alice'), want: undefined },
    { name: 'deeper paths still name the first component', d: maildir('/var/mail/a/b/c/Maildir'), want: '/var/mail/a' },
    { name: '.. is resolved before deciding', d: maildir('/var/mail/alice/../../etc/Maildir'), want: undefined },
    { name: 'a sibling with the root as a prefix is outside', d: maildir('/var/mailx/alice/Maildir'), want: undefined },
    { name: 'the mail root itself', d: maildir('/var/mail/'), want: undefined },
    { name: 'outside the mail root', d: maildir('/home/alice/Maildir'), want: undefined },
    { name: 'a pipe', d: { kind: 'pipe', argv: ['/bin/true'] }, want: undefined },
  ];
  for (const c of cases) assert.equal(userDirectoryOf('/var/mail', c.d), c.want, c.name);
});

function mailRoot(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-root-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o755);
  clearMailRootCache();
  return dir;
}

function identityOf(name: string): Identity {
  const u = ensureSystemUser(name);
  return { user: u.name, uid: u.uid, gid: u.gid, home: '/' };
}

test('a missing per-user directory is made 0700 and owned by the delivery user; concurrent deliveries share it', async (t) => {
  if (!requireRoot(t, 'chown to a system user')) return;
  const root = mailRoot(t);
  const alice = identityOf('mpt-alice');
  const results = await Promise.all(Array.from({ length: 8 }, () => prepareUserDirectories(root, alice, [maildir(`${root}/alice/Maildir/`), mbox(`${root}/alice/mbox`)], false)));
  assert.deepEqual(results, Array(8).fill(undefined));
  const st = statSync(join(root, 'alice'));
  assert.deepEqual([st.uid, st.gid, st.mode & 0o7777, st.isDirectory()], [alice.uid, alice.gid, 0o700, true]);
  assert.deepEqual(readdirSync(join(root, 'alice')), [], 'only the directory: the worker makes the mailbox');
});

test('a per-user directory owned by someone else is refused with 4.2.0 naming it and its owner', async (t) => {
  if (!requireRoot(t, 'files owned by system users')) return;
  const root = mailRoot(t);
  const carol = identityOf('mpt-carol');
  const intruder = identityOf('mpt-intruder');
  mkdirSync(join(root, 'carol'));
  chownSync(join(root, 'carol'), intruder.uid, intruder.gid);
  const got = await prepareUserDirectories(root, carol, [mbox(`${root}/carol/mbox`)], false);
  assert.equal(got?.code, '4.2.0');
  assert.match(got?.text ?? '', new RegExp(`${root}/carol: it is owned by mpt-intruder \\(uid ${intruder.uid}\\), not by mpt-carol \\(uid ${carol.uid}\\)`));
  assert.equal(statSync(join(root, 'carol')).uid, intruder.uid, 'left as it was');
  // Fixed by the admin: the next delivery goes ahead (refusals are not remembered).
  chownSync(join(root, 'carol'), carol.uid, carol.gid);
  assert.equal(await prepareUserDirectories(root, carol, [mbox(`${root}/carol/mbox`)], false), undefined);
});

test('a symlink where the per-user directory should be is refused and not followed', async (t) => {
  if (!requireRoot(t, 'chown to a system user')) return;
  const root = mailRoot(t);
  const alice = identityOf('mpt-alice');
  const elsewhere = join(root, '..', `${root.split('/').pop() ?? ''}-elsewhere`);
  mkdirSync(elsewhere);
  t.after(() => rmSync(elsewhere, { recursive: true, force: true }));
  symlinkSync(elsewhere, join(root, 'alice'));
  const got = await prepareUserDirectories(root, alice, [maildir(`${root}/alice/Maildir`)], false);
  assert.equal(got?.code, '4.2.0');
  assert.match(got?.text ?? '', /not a directory/);
  assert.equal(statSync(elsewhere).uid, 0, 'the target was not chowned');
});

test('what was prepared is remembered: the next delivery does not look again', async (t) => {
  if (!requireRoot(t, 'chown to a system user')) return;
  const root = mailRoot(t);
  const alice = identityOf('mpt-alice');
  const intruder = identityOf('mpt-intruder');
  assert.equal(await prepareUserDirectories(root, alice, [maildir(`${root}/alice/Maildir`)], false), undefined);
  // Only root could do this (the mail root is root's); the cache does not notice within its minute.
  chownSync(join(root, 'alice'), intruder.uid, intruder.gid);
  assert.equal(await prepareUserDirectories(root, alice, [maildir(`${root}/alice/Maildir`)], false), undefined);
  clearMailRootCache();
  assert.equal((await prepareUserDirectories(root, alice, [maildir(`${root}/alice/Maildir`)], false))?.code, '4.2.0');
});

test('nothing is made for root unless allowed, nor outside the mail root', async (t) => {
  if (!requireRoot(t, 'running as root')) return;
  const root = mailRoot(t);
  const rootUser: Identity = { user: 'root', uid: 0, gid: 0, home: '/root' };
  assert.equal(await prepareUserDirectories(root, rootUser, [maildir(`${root}/rooty/Maildir`)], false), undefined);
  assert.equal(existsSync(join(root, 'rooty')), false);
  assert.equal(await prepareUserDirectories(root, rootUser, [maildir(`${root}/ops/Maildir`)], true), undefined);
  assert.equal(statSync(join(root, 'ops')).uid, 0);
  assert.equal(await prepareUserDirectories(root, identityOf('mpt-alice'), [maildir(`${root}-other/alice/Maildir`)], false), undefined);
  assert.equal(existsSync(`${root}-other`), false);
});
