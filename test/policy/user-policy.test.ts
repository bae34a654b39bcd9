// User policies end to end, with real system users and a real daemon: each
// user sets policies for their own addresses with `mailproc policy` over
// their own control socket (run as that user), and the policy endpoint
// applies them at RCPT from the next request on. The socket is the
// authentication: its directory and the socket are the user's alone, and
// another user cannot even connect. With state.backend on a shared engine
// (a real PostgreSQL, then a real Redis), a policy set on one node's socket
// is in force on another node at once.
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { chownSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { requireRoot } from '../helpers/components.js';
import { testEngine } from '../helpers/engines.js';
import { MAILPROC, makeTestDir, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { ensureSystemUser, type SystemUser } from '../helpers/users.js';
import { PolicyClient, rcptRequest } from './policy-peer.js';

const DENY = "REJECT 5.7.1 Sender refused by the recipient's policy";
const ONLY = 'REJECT 5.7.1 The recipient accepts mail only from senders they allow';

interface Setup {
  readonly d: TestDaemon;
  readonly alice: SystemUser;
  readonly bob: SystemUser;
  /** `mailproc policy …` run as the user, with the daemon's config file. */
  policy(user: SystemUser, args: string[], env?: Record<string, string>): SpawnSyncReturns<string>;
  /** The policy endpoint's answer at RCPT. */
  ask(sender: string, recipient: string, over?: Record<string, string>): Promise<string>;
  socketOf(user: SystemUser): string;
}

const RULES = '@users.test  maildir:${MAIL}/${user}/Maildir/\n@catchall.test  maildir:${MAIL}/catchall/Maildir/\n';
const UIDS = 'alice@users.test  mpt-alice\nbob@users.test  mpt-bob\n@catchall.test  mpt-alice\nrooty@users.test  root!\n';

async function setup(t: TestContext, backend?: string): Promise<Setup | undefined> {
  if (!requireRoot(t, 'useradd, sockets owned by other users, running mailproc as them')) return undefined;
  const alice = ensureSystemUser('mpt-alice');
  const bob = ensureSystemUser('mpt-bob');
  const d = await startDaemon({ rules: RULES, uid: UIDS, ...(backend !== undefined ? { config: { state: { backend } } } : {}) });
  const client = await PolicyClient.open({ port: d.policyPort });
  t.after(async () => {
    client.destroy();
    await d.stop();
    d.cleanup();
  });
  return {
    d, alice, bob,
    policy: (user, args, env = {}) => spawnSync('runuser', ['-u', user.name, '--', process.execPath, MAILPROC, 'policy', ...args], {
      encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    }),
    ask: (sender, recipient, over = {}) => client.request(rcptRequest({ sender, recipient, ...over })),
    socketOf: (user) => join(d.dir, 'state', 'run', 'users', String(user.uid), 'control.sock'),
  };
}

test('alice\'s deny pattern refuses that sender for her address only, from the next request on', async (t) => {
  const s = await setup(t);
  if (!s) return;
  assert.equal(await s.ask('x@spam.test', 'alice@users.test'), 'DUNNO', 'no policy yet');
  const set = s.policy(s.alice, ['set', 'alice@users.test', '--deny', '*@spam.test', '--config', s.d.configFile]);
  assert.equal(set.status, 0, set.stderr);
  assert.match(set.stdout, /^alice@users\.test\n {2}allow +\(none\)\n {2}deny +\*@spam\.test\n/);
  assert.equal(await s.ask('x@spam.test', 'alice@users.test'), DENY, 'applied without a restart');
  assert.equal(await s.ask('x@spam.test', 'alice+news@users.test'), DENY, 'her extensions too');
  assert.equal(await s.ask('x@spam.test', 'bob@users.test'), 'DUNNO', 'bob is not affected');
  assert.equal(await s.ask('x@ok.test', 'alice@users.test'), 'DUNNO', 'other senders still reach her');
  await s.d.waitForLog(/user policy for alice@users\.test set by mpt-alice/);

  const shown = s.policy(s.alice, ['show', 'alice@users.test', '--json', '--config', s.d.configFile]);
  assert.equal(shown.status, 0, shown.stderr);
  const r = JSON.parse(shown.stdout) as { policy: { deny: string[]; allow: string[]; onlyAllowed: boolean } };
  assert.deepEqual([r.policy.allow, r.policy.deny, r.policy.onlyAllowed], [[], ['*@spam.test'], false]);

  const cleared = s.policy(s.alice, ['clear', 'alice@users.test', '--config', s.d.configFile]);
  assert.equal(cleared.status, 0, cleared.stderr);
  assert.equal(cleared.stdout, 'alice@users.test: policy removed\n');
  assert.equal(await s.ask('x@spam.test', 'alice@users.test'), 'DUNNO', 'clear applies to the next request');
});

test('alice cannot set, show or clear a policy for bob\'s address, nor claim a catch-all\'s', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const set = s.policy(s.alice, ['set', 'bob@users.test', '--deny', '*@spam.test', '--config', s.d.configFile]);
  assert.equal(set.status, 1);
  assert.equal(set.stderr, 'mailproc: bob@users.test is not yours\n');
  assert.equal(await s.ask('x@spam.test', 'bob@users.test'), 'DUNNO', 'nothing was stored for bob');
  for (const verb of ['show', 'clear']) {
    const r = s.policy(s.alice, [verb, 'bob@users.test', '--config', s.d.configFile]);
    assert.deepEqual([r.status, r.stderr], [1, 'mailproc: bob@users.test is not yours\n'], verb);
  }
  // The uid table's catch-all names alice, but that makes no address hers to set a policy for.
  const claim = s.policy(s.alice, ['set', 'anyone@catchall.test', '--deny', '*', '--config', s.d.configFile]);
  assert.equal(claim.status, 1);
  assert.match(claim.stderr, /^mailproc: anyone@catchall\.test is not yours \(a policy can be set only for an address the uid table gives you by name/);
  assert.equal(await s.ask('x@spam.test', 'anyone@catchall.test'), 'DUNNO');

  // Bob sets his own; alice's list shows only hers.
  const bobSet = s.policy(s.bob, ['set', 'bob@users.test', '--deny', '*@bob-spam.test', '--config', s.d.configFile]);
  assert.equal(bobSet.status, 0, bobSet.stderr);
  const aliceSet = s.policy(s.alice, ['set', 'alice@users.test', '--max-size', '1M', '--config', s.d.configFile]);
  assert.equal(aliceSet.status, 0, aliceSet.stderr);
  const list = s.policy(s.alice, ['list', '--json', '--config', s.d.configFile]);
  assert.equal(list.status, 0, list.stderr);
  const l = JSON.parse(list.stdout) as { user: string; policies: { address: string }[]; addresses: string[] };
  assert.deepEqual([l.user, l.policies.map((p) => p.address), l.addresses], ['mpt-alice', ['alice@users.test'], ['alice@users.test']]);
  assert.equal(await s.ask('x@bob-spam.test', 'bob@users.test'), DENY);
  assert.equal(await s.ask('x@bob-spam.test', 'alice@users.test'), 'DUNNO');
});

test('each socket and its directory belong to their user alone; bob cannot connect to alice\'s', async (t) => {
  const s = await setup(t);
  if (!s) return;
  for (const u of [s.alice, s.bob]) {
    const sock: Stats = statSync(s.socketOf(u));
    const dir: Stats = statSync(join(s.socketOf(u), '..'));
    assert.ok(sock.isSocket());
    assert.deepEqual([sock.mode & 0o777, sock.uid, sock.gid], [0o600, u.uid, u.gid], `${u.name}'s socket`);
    assert.deepEqual([dir.mode & 0o777, dir.uid, dir.gid], [0o700, u.uid, u.gid], `${u.name}'s directory`);
  }
  const users = statSync(join(s.d.dir, 'state', 'run', 'users'));
  assert.deepEqual([users.mode & 0o777, users.uid], [0o755, 0], 'the users directory is root\'s, writable by no one else');
  assert.throws(() => statSync(join(s.d.dir, 'state', 'run', 'users', '0')), /ENOENT/, 'root\'s addresses get no socket');

  const viaSocket = s.policy(s.bob, ['set', 'alice@users.test', '--deny', '*', '--socket', s.socketOf(s.alice)]);
  assert.equal(viaSocket.status, 77);
  assert.match(viaSocket.stderr, /^mailproc: cannot reach mailprocd at .*: permission denied: it is not your socket/);
  const viaEnv = s.policy(s.bob, ['show', 'alice@users.test'], { MAILPROC_SOCKET: s.socketOf(s.alice) });
  assert.equal(viaEnv.status, 77, viaEnv.stderr);
  assert.equal(await s.ask('x@anything.test', 'alice@users.test'), 'DUNNO');

  // Bob on his own socket, found through $MAILPROC_SOCKET instead of the config file.
  const own = s.policy(s.bob, ['show', 'bob@users.test'], { MAILPROC_SOCKET: s.socketOf(s.bob) });
  assert.deepEqual([own.status, own.stdout], [0, 'bob@users.test: no policy\n'], own.stderr);
});

test('only-allowed lets only the allowed senders through; the size limit refuses an announced size over it', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const set = s.policy(s.alice, ['set', 'alice@users.test', '--allow', '*@friends.test', '--allow', 'boss@work.test', '--only-allowed', 'on', '--max-size', '10k', '--config', s.d.configFile]);
  assert.equal(set.status, 0, set.stderr);
  assert.match(set.stdout, /only allowed {2}on/);
  assert.match(set.stdout, /max size {6}10240 bytes \(10k\)/);
  assert.equal(await s.ask('x@friends.test', 'alice@users.test'), 'DUNNO');
  assert.equal(await s.ask('boss@work.test', 'alice@users.test'), 'DUNNO');
  assert.equal(await s.ask('intern@work.test', 'alice@users.test'), ONLY);
  assert.equal(await s.ask('', 'alice@users.test'), 'DUNNO', 'a bounce gets through');
  assert.equal(await s.ask('intern@work.test', 'bob@users.test'), 'DUNNO');
  assert.equal(await s.ask('x@friends.test', 'alice@users.test', { size: '20000' }), '552 5.2.3 Message too large for the recipient (limit 10240 bytes)');
  assert.equal(await s.ask('x@friends.test', 'alice@users.test', { size: '10240' }), 'DUNNO');
  assert.equal(await s.ask('x@friends.test', 'bob@users.test', { size: '20000' }), 'DUNNO');

  // Lifting only-allowed keeps the rest.
  const off = s.policy(s.alice, ['set', 'alice@users.test', '--only-allowed', 'off', '--config', s.d.configFile]);
  assert.equal(off.status, 0, off.stderr);
  assert.equal(await s.ask('intern@work.test', 'alice@users.test'), 'DUNNO');
  assert.equal(await s.ask('intern@work.test', 'alice@users.test', { size: '20000' }), '552 5.2.3 Message too large for the recipient (limit 10240 bytes)');

  const cleared = s.policy(s.alice, ['clear', 'alice@users.test', '--config', s.d.configFile]);
  assert.equal(cleared.status, 0, cleared.stderr);
  assert.equal(await s.ask('intern@work.test', 'alice@users.test', { size: '20000' }), 'DUNNO');
});

test('greylisting turned on by alice applies to her address only', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const set = s.policy(s.alice, ['set', 'alice@users.test', '--greylist', 'on', '--config', s.d.configFile]);
  assert.equal(set.status, 0, set.stderr);
  assert.equal(await s.ask('x@new.test', 'alice@users.test'), 'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again later');
  assert.equal(await s.ask('x@new.test', 'bob@users.test'), 'DUNNO');
  const back = s.policy(s.alice, ['set', 'alice@users.test', '--greylist', 'default', '--config', s.d.configFile]);
  assert.deepEqual([back.status, back.stdout], [0, 'alice@users.test: no policy\n'], 'nothing left in it: removed');
  assert.equal(await s.ask('y@new.test', 'alice@users.test'), 'DUNNO');
});

test('the CLI names what is wrong: bad options, an unknown address, a daemon that is not there', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const bad = s.policy(s.alice, ['set', 'alice@users.test', '--greylist', 'maybe', '--config', s.d.configFile]);
  assert.equal(bad.status, 64);
  assert.match(bad.stderr, /^mailproc: --greylist: expected on or off or default, got "maybe"/);
  const none = s.policy(s.alice, ['set', 'alice@users.test', '--config', s.d.configFile]);
  assert.equal(none.status, 64);
  assert.match(none.stderr, /nothing to set/);
  const only = s.policy(s.alice, ['set', 'alice@users.test', '--only-allowed', 'on', '--config', s.d.configFile]);
  assert.equal(only.status, 1);
  assert.equal(only.stderr, 'mailproc: alice@users.test: only-allowed needs at least one allow pattern (otherwise every sender but the null sender is refused)\n');
  const stranger = s.policy(s.alice, ['show', 'nobody@elsewhere.test', '--config', s.d.configFile]);
  assert.equal(stranger.status, 1);
  assert.match(stranger.stderr, /^mailproc: nobody@elsewhere\.test is not yours/);
  const gone = s.policy(s.alice, ['list', '--socket', join(s.d.dir, 'no-such.sock')]);
  assert.equal(gone.status, 69);
  assert.match(gone.stderr, /no socket there: the daemon is not running/);
  const asRoot = spawnSync(process.execPath, [MAILPROC, 'policy', 'list', '--config', s.d.configFile], { encoding: 'utf8' });
  assert.equal(asRoot.status, 64);
  assert.match(asRoot.stderr, /^mailproc: policies belong to mailbox owners/);
});

test('a user added to the uid table gets a socket after SIGHUP, and one removed loses it', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const carol = ensureSystemUser('mpt-carol');
  writeFileSync(join(s.d.dir, 'db', 'uid'), 'alice@users.test  mpt-alice\ncarol@users.test  mpt-carol\n');
  const compiled = spawnSync(process.execPath, [MAILPROC, 'db', 'compile', '--config', s.d.configFile], { encoding: 'utf8' });
  assert.equal(compiled.status, 0, compiled.stderr);
  s.d.child.kill('SIGHUP');
  await s.d.waitForLog(/user control socket for mpt-bob \(uid \d+\) closed/);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      statSync(s.socketOf(carol));
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const set = s.policy(carol, ['set', 'carol@users.test', '--deny', '*@spam.test', '--config', s.d.configFile]);
  assert.equal(set.status, 0, set.stderr);
  assert.equal(await s.ask('x@spam.test', 'carol@users.test'), DENY);
  assert.throws(() => statSync(s.socketOf(s.bob)), /ENOENT/);
});

test('a daemon run by an ordinary user serves that user alone, who owns every address it accepts', async (t) => {
  if (!requireRoot(t, 'running the daemon as a system user')) return;
  const alice = ensureSystemUser('mpt-alice');
  const dir = makeTestDir();
  chownSync(dir, alice.uid, alice.gid);
  const d = await startDaemon({ dir, runAs: { uid: alice.uid, gid: alice.gid } });
  t.after(async () => {
    await d.stop();
    d.cleanup();
  });
  const run = (args: string[]): SpawnSyncReturns<string> =>
    spawnSync('runuser', ['-u', alice.name, '--', process.execPath, MAILPROC, 'policy', ...args, '--config', d.configFile], { encoding: 'utf8' });
  const sock = statSync(join(d.dir, 'state', 'run', 'users', String(alice.uid), 'control.sock'));
  assert.deepEqual([sock.mode & 0o777, sock.uid], [0o600, alice.uid]);
  // The default tables name no uid: every delivery runs as the daemon's user, so every address it accepts is hers.
  const set = run(['set', 'bob@example.test', '--deny', '*@spam.test']);
  assert.equal(set.status, 0, set.stderr);
  const client = await PolicyClient.open({ port: d.policyPort });
  t.after(() => client.destroy());
  assert.equal(await client.request(rcptRequest({ sender: 'x@spam.test', recipient: 'bob@example.test' })), DENY);
  assert.equal(await client.request(rcptRequest({ sender: 'x@spam.test', recipient: 'alice@example.test' })), 'DUNNO');
  const unknown = run(['set', 'nobody@elsewhere.test', '--deny', '*']);
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /nobody@elsewhere\.test is not yours/);
});

test('after a crash and a restart the user gets a fresh socket in the directory they already own, and their policy is kept', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const set = s.policy(s.alice, ['set', 'alice@users.test', '--deny', '*@spam.test', '--config', s.d.configFile]);
  assert.equal(set.status, 0, set.stderr);
  await s.d.kill();
  const again = await startDaemon({ dir: s.d.dir, rules: RULES, uid: UIDS });
  try {
    const sock: Stats = statSync(s.socketOf(s.alice));
    const dir: Stats = statSync(join(s.socketOf(s.alice), '..'));
    assert.deepEqual([sock.mode & 0o777, sock.uid, dir.mode & 0o777, dir.uid], [0o600, s.alice.uid, 0o700, s.alice.uid]);
    const shown = s.policy(s.alice, ['show', 'alice@users.test', '--config', s.d.configFile]);
    assert.equal(shown.status, 0, shown.stderr);
    assert.match(shown.stdout, /deny +\*@spam\.test/);
    const client = await PolicyClient.open({ port: again.policyPort });
    assert.equal(await client.request(rcptRequest({ sender: 'x@spam.test', recipient: 'alice@users.test' })), DENY);
    client.destroy();
  } finally {
    await again.stop();
  }
});

for (const kind of ['postgresql', 'redis'] as const) {
  const engine = testEngine(kind);
  after(() => engine.dispose());
  test(`on a shared ${kind}, the policy alice sets on one node is in force on another at once, and cleared there too`, async (t) => {
    const backend = await engine.use(t);
    if (backend === undefined) return;
    const mx1 = await setup(t, backend);
    if (!mx1) return;
    const mx2 = await setup(t, backend);
    if (!mx2) return;
    assert.equal(await mx2.ask('x@spam.test', 'alice@users.test'), 'DUNNO', 'no policy yet');
    const set = mx1.policy(mx1.alice, ['set', 'alice@users.test', '--deny', '*@spam.test', '--config', mx1.d.configFile]);
    assert.equal(set.status, 0, set.stderr);
    assert.equal(await mx2.ask('x@spam.test', 'alice@users.test'), DENY, 'set on mx1, applied by mx2');
    const shown = mx2.policy(mx2.alice, ['show', 'alice@users.test', '--json', '--config', mx2.d.configFile]);
    assert.equal(shown.status, 0, shown.stderr);
    assert.deepEqual((JSON.parse(shown.stdout) as { policy: { deny: string[] } }).policy.deny, ['*@spam.test'], 'mx2 shows it to her');
    const cleared = mx2.policy(mx2.alice, ['clear', 'alice@users.test', '--config', mx2.d.configFile]);
    assert.equal(cleared.status, 0, cleared.stderr);
    assert.equal(await mx1.ask('x@spam.test', 'alice@users.test'), 'DUNNO', 'cleared on mx2, gone on mx1');
    assert.ok(mx1.d.logs.some((l) => l.includes(`greylist, rate counters and user policies on ${kind === 'redis' ? 'unix://' : 'postgresql://'}`)), 'the daemon says where its state is');
  });
}

