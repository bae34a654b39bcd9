// descriptors.ts: which descriptors would survive an exec, read from
// /proc/self/fdinfo. The leak is real — lmdb opens data.mdb read-write
// without O_CLOEXEC, so a plain spawn hands it to the child — and both
// defences hold: shieldDescriptors() keeps it out of a spawned child, and
// closeInheritableDescriptors() closes it in a process that got it anyway.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { open } from 'lmdb';
import { inheritableDescriptors, parseFdinfoFlags, shieldDescriptors, type StdioEntry } from '../../src/os/descriptors.js';

const DESCRIPTORS = join(process.cwd(), 'dist/src/os/descriptors.js');

test('parseFdinfoFlags reads the octal flags line of an fdinfo file', () => {
  const cases: { name: string; text: string; want: number | undefined }[] = [
    { name: 'close-on-exec, read-write', text: 'pos:\t0\nflags:\t02100002\nmnt_id:\t29\nino:\t1234\n', want: 0o2100002 },
    { name: 'no close-on-exec', text: 'pos:\t4096\nflags:\t0100002\nmnt_id:\t29\n', want: 0o100002 },
    { name: 'an epoll descriptor (extra lines after)', text: 'pos:\t0\nflags:\t02\nmnt_id:\t15\ntfd:        9 events:       19 data:                9  pos:0 ino:1 sdev:8\n', want: 0o2 },
    { name: 'no flags line', text: 'pos:\t0\nmnt_id:\t29\n', want: undefined },
    { name: 'not octal', text: 'flags:\t0x8002\n', want: undefined },
  ];
  for (const c of cases) assert.equal(parseFdinfoFlags(c.text), c.want, c.name);
});

/** This process's descriptors that point at `path`. */
function descriptorsOf(path: string): number[] {
  const found: number[] = [];
  for (let fd = 0; fd < 1024; fd++) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) found.push(fd);
    } catch {
      // not open
    }
  }
  return found;
}

/** Runs `node -e script` with the given stdio, returning what it printed. */
function runChild(script: string, stdio: StdioEntry[]): string {
  const io = stdio.map((e, i) => (i === 1 ? 'pipe' : i === 2 ? 'inherit' : e)) as StdioEntry[];
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { stdio: io.filter((e) => e !== 'ipc') as never, encoding: 'utf8' });
  assert.equal(r.status, 0, `child failed: ${r.stderr ?? ''}`);
  return r.stdout;
}

const LIST_TARGETS = `
import { readdirSync, readlinkSync } from 'node:fs';
const out = [];
for (const n of readdirSync('/proc/self/fd')) { try { out.push(readlinkSync('/proc/self/fd/' + n)); } catch {} }
console.log(JSON.stringify(out));
`;

test('an lmdb database descriptor is inheritable; shieldDescriptors keeps it out of a child, closeInheritableDescriptors closes it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-fds-'));
  const env = open({ path: dir });
  try {
    env.putSync('k', 'v');
    const data = join(dir, 'data.mdb');
    const dbFds = descriptorsOf(data);
    assert.ok(dbFds.length > 0, 'lmdb holds data.mdb open');
    const inheritable = inheritableDescriptors() ?? [];
    if (!dbFds.some((fd) => inheritable.includes(fd))) {
      // Not a failure of ours: the defences stay, this test just has no leak left to show.
      t.skip(`this lmdb opens data.mdb close-on-exec (fds ${dbFds.join(',')}); nothing to shield`);
      return;
    }
    const ours = openSync(join(dir, 'data.mdb'), 'r');
    try {
      assert.ok(!(inheritableDescriptors() ?? []).includes(ours), 'a descriptor Node opened is close-on-exec');
    } finally {
      closeSync(ours);
    }

    // The leak: a plain spawn hands data.mdb to the child.
    assert.ok((JSON.parse(runChild(LIST_TARGETS, ['ignore', 'pipe', 'inherit'])) as string[]).includes(data), 'a plain spawn leaks data.mdb');

    // Defence 1: the spawner overlays it with /dev/null.
    const io = shieldDescriptors(['ignore', 'pipe', 'inherit']);
    let seen: string[];
    try {
      for (const fd of dbFds.filter((x) => inheritable.includes(x))) assert.equal(typeof io.stdio[fd], 'number', `fd ${fd} is mapped to /dev/null`);
      seen = JSON.parse(runChild(LIST_TARGETS, io.stdio)) as string[];
    } finally {
      io.release();
    }
    assert.ok(!seen.includes(data), `the shielded child does not hold data.mdb: ${seen.join(' ')}`);

    // Defence 2: a process that inherited it closes it.
    const closer = `
      import { closeInheritableDescriptors, inheritableDescriptors } from ${JSON.stringify(DESCRIPTORS)};
      const closed = closeInheritableDescriptors();
      ${LIST_TARGETS.replace('console.log(JSON.stringify(out));', 'console.log(JSON.stringify({ closed, left: inheritableDescriptors(), out }));')}
    `;
    const after = JSON.parse(runChild(closer, ['ignore', 'pipe', 'inherit'])) as { closed: number[]; left: number[]; out: string[] };
    assert.ok(after.closed.length > 0, 'it closed something');
    assert.deepEqual(after.left, [], 'nothing inheritable is left');
    assert.ok(!after.out.includes(data), `data.mdb is closed: ${after.out.join(' ')}`);
  } finally {
    await env.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
