// Who may reach the unix sockets: by default (mode 0660) the LMTP and policy
// sockets are the daemon owner's and its group's only — a local user outside
// the group is refused by the kernel (EACCES) — and with `group:` set, a
// member of that group (as user postfix would be) gets in. Runs as root with
// two system users.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { requireRoot } from '../helpers/components.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { RawClient } from '../helpers/raw-client.js';
import { ensureSystemUser, type SystemUser } from '../helpers/users.js';

let d: TestDaemon | undefined;
let outsider: SystemUser;
let member: SystemUser;

/** Connects to a unix socket as `who`; "connected" or the error code. */
function connectAs(who: SystemUser, path: string): string {
  const script = `require('net').connect(${JSON.stringify(path)})
    .on('connect', function () { console.log('connected'); this.destroy(); })
    .on('error', (e) => console.log(e.code))`;
  const r = spawnSync(process.execPath, ['-e', script], { uid: who.uid, gid: who.gid, encoding: 'utf8', timeout: 20_000 });
  return r.stdout.trim() || `no output (status ${r.status}): ${r.stderr}`;
}

before(async () => {
  if (process.getuid?.() !== 0) return;
  outsider = ensureSystemUser('mpt-alice');
  member = ensureSystemUser('mpt-bob');
  // The LMTP socket gets bob's group; the policy socket keeps the default (no group: root's).
  d = await startDaemon({ config: { lmtp: { socket: { group: member.name } } } });
});
after(async () => {
  await d?.stop();
  d?.cleanup();
});

test('the LMTP and policy unix sockets are mode 0660 by default, owned by the daemon\'s user', (t) => {
  if (!requireRoot(t, 'socket ownership') || d === undefined) return;
  for (const path of [d.socket, d.policySocket]) {
    const st = lstatSync(path);
    assert.equal(st.mode & 0o777, 0o660, `${path} mode ${(st.mode & 0o777).toString(8)}`);
    assert.equal(st.uid, 0);
  }
  assert.equal(lstatSync(d.socket).gid, member.gid, 'lmtp.socket.group applied');
  assert.equal(lstatSync(d.policySocket).gid, 0);
});

test('a local user outside the group cannot connect to either socket (EACCES); a member of lmtp.socket.group can, and is greeted', async (t) => {
  if (!requireRoot(t, 'connecting as other users') || d === undefined) return;
  assert.equal(connectAs(outsider, d.socket), 'EACCES');
  assert.equal(connectAs(outsider, d.policySocket), 'EACCES');
  assert.equal(connectAs(member, d.policySocket), 'EACCES', 'the policy socket has no group set: root only');
  assert.equal(connectAs(member, d.socket), 'connected');
  const c = await RawClient.open({ path: d.socket });
  assert.equal((await c.reply()).code, 220, 'root (the owner) is served');
  c.close();
});
