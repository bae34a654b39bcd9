// No descriptor of the daemon reaches user code (issue 8 point 1): a user's
// pipe command holds exactly stdin, stdout and stderr, runs with
// no_new_privs, and the worker that runs it holds nothing under the state
// directory (the table and policy databases are open read-write in the
// master) and no descriptor that would survive an exec.
import assert from 'node:assert/strict';
import { chownSync, mkdirSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireRoot } from '../helpers/components.js';
import { startDaemon } from '../helpers/daemon.js';
import { lmtpDeliver } from '../helpers/raw-client.js';
import { childPids, ensureSystemUser } from '../helpers/users.js';

const O_CLOEXEC = 0o2000000;

const lmtp = (port: number, rcpt: string): Promise<string> => lmtpDeliver(port, rcpt, 'Subject: fds\r\n\r\nwhat do I hold?\r\n');

/** fd number → where it points, from `ls -l /proc/N/fd` output ("lrwx… 3 -> /x"). */
function parseListing(text: string): Map<number, string> {
  const fds = new Map<number, string>();
  for (const m of text.matchAll(/ (\d+) -> (.*)$/gm)) fds.set(Number(m[1]), m[2] ?? '');
  return fds;
}

test('a pipe command holds only stdin, stdout and stderr, with no_new_privs; its worker holds nothing under the state directory', async (t) => {
  if (!requireRoot(t, 'delivering as a system user')) return;
  const user = ensureSystemUser('mpt-fds');
  const d = await startDaemon({
    // ls is exec'd by the shell, so it holds what the pipe command was given
    // plus its own handle on /proc/self/fd, which the test leaves out. (A
    // redirection without exec would show dash's saved copy of stdout.)
    rules: `fds@example.test  pipe:"/bin/sh -c 'grep NoNewPrivs /proc/self/status > \${MAIL}/../out/nnp; exec /bin/ls -l /proc/self/fd/ > \${MAIL}/../out/fds'"\n`,
    uid: `fds@example.test  ${user.name}\n`,
  });
  try {
    const out = join(d.dir, 'out');
    mkdirSync(out, { mode: 0o700 });
    chownSync(out, user.uid, user.gid);
    assert.match(await lmtp(d.lmtpPort, 'fds@example.test'), /^250 2\.0\.0 /);

    const listing = readFileSync(join(out, 'fds'), 'utf8');
    const fds = parseListing(listing);
    for (const [fd, target] of fds) if (/^\/proc\/\d+\/fd$/.test(target)) fds.delete(fd); // ls's own directory handle
    assert.deepEqual([...fds.keys()].sort((a, b) => a - b), [0, 1, 2], `the pipe's descriptors:\n${listing}`);
    assert.equal(readFileSync(join(out, 'nnp'), 'utf8').trim(), 'NoNewPrivs:\t1');

    const workers = childPids(d.child.pid ?? -1);
    assert.equal(workers.length, 1, 'one worker');
    const pid = workers[0] as number;
    assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^NoNewPrivs:\s+1$/m, 'the worker itself runs with no_new_privs');
    const state = join(d.dir, 'state');
    for (const name of readdirSync(`/proc/${pid}/fd`)) {
      const fd = Number(name);
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${name}`);
      } catch {
        continue; // closed while we looked
      }
      assert.ok(!target.startsWith(`${state}/`) && target !== state, `worker fd ${fd} -> ${target} is under the state directory`);
      if (fd <= 2) continue;
      const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${name}`, 'utf8'))?.[1];
      assert.ok(flags !== undefined && (parseInt(flags, 8) & O_CLOEXEC) !== 0, `worker fd ${fd} -> ${target} would survive an exec (flags ${flags})`);
    }
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('delivery.no_new_privs: false lets pipes use set-gid helpers again (no_new_privs off), and still passes no descriptor', async (t) => {
  if (!requireRoot(t, 'delivering as a system user')) return;
  const user = ensureSystemUser('mpt-fds');
  const d = await startDaemon({
    rules: `fds@example.test  pipe:"/bin/sh -c 'grep NoNewPrivs /proc/self/status > \${MAIL}/../out/nnp; exec /bin/ls -l /proc/self/fd/ > \${MAIL}/../out/fds'"\n`,
    uid: `fds@example.test  ${user.name}\n`,
    config: { delivery: { no_new_privs: false } },
  });
  try {
    const out = join(d.dir, 'out');
    mkdirSync(out, { mode: 0o700 });
    chownSync(out, user.uid, user.gid);
    assert.match(await lmtp(d.lmtpPort, 'fds@example.test'), /^250 2\.0\.0 /);
    assert.equal(readFileSync(join(out, 'nnp'), 'utf8').trim(), 'NoNewPrivs:\t0');
    const fds = parseListing(readFileSync(join(out, 'fds'), 'utf8'));
    for (const [fd, target] of fds) if (/^\/proc\/\d+\/fd$/.test(target)) fds.delete(fd);
    assert.deepEqual([...fds.keys()].sort((a, b) => a - b), [0, 1, 2]);
  } finally {
    await d.stop();
    d.cleanup();
  }
});
