// The instance lock against other processes: a holder that wrote no pid (here
// another node process with a bare fcntl lock, as a foreign program would
// hold it) is still named, from the
// kernel's /proc/locks; a second attempt from the same process is refused
// without dropping the lock it already holds (an fcntl lock is lost when its
// process closes any descriptor of the file); release lets others take it.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { LOCK_FILE, lockInstance } from '../../src/state/instance-lock.js';

// Run from the checkout (os-lock resolves from its node_modules); the path is the last argument.
const HOLD = `import { open } from 'node:fs/promises'; import { lock } from 'os-lock';
const fh = await open(process.argv.at(-1), 'a'); await lock(fh.fd, { exclusive: true, immediate: true });
console.log('locked'); process.stdin.resume(); process.stdin.on('end', () => process.exit(0));`;
const TRY = `import { open } from 'node:fs/promises'; import { lock } from 'os-lock';
const fh = await open(process.argv.at(-1), 'a');
console.log(await lock(fh.fd, { exclusive: true, immediate: true }).then(() => 'free', () => 'busy'));`;
const node = (script: string, path: string): string[] => ['--input-type=module', '-e', script, path];

/** A foreign process holding the lock until its stdin closes. */
async function foreignHolder(path: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, node(HOLD, path), { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the holder exited ${code}`)));
  });
  return child;
}

const tryFromOutside = (path: string): string => spawnSync(process.execPath, node(TRY, path), { encoding: 'utf8' }).stdout.trim();

test('a foreign holder that wrote no pid is named from /proc/locks', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'instance-lock-'));
  const holder = await foreignHolder(join(dir, LOCK_FILE));
  try {
    const r = await lockInstance(dir);
    assert.equal(r.kind, 'busy');
    assert.equal(r.kind === 'busy' ? r.pid : undefined, holder.pid);
  } finally {
    holder.stdin?.end();
    await new Promise((r) => holder.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a second attempt from the same process is refused and the first lock stays held until release', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'instance-lock-'));
  const path = join(dir, LOCK_FILE);
  try {
    const first = await lockInstance(dir);
    assert.equal(first.kind, 'held');
    const second = await lockInstance(dir);
    assert.deepEqual(second.kind === 'busy' ? second.pid : 'held twice', process.pid);
    assert.equal(tryFromOutside(path), 'busy', 'still held after the refused second attempt');
    if (first.kind === 'held') await first.release();
    assert.equal(tryFromOutside(path), 'free', 'released');
    const again = await lockInstance(dir);
    assert.equal(again.kind, 'held', 'this process may take it again');
    if (again.kind === 'held') await again.release();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
