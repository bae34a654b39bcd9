// A worker's exit waits for an mbox append in progress (src/deliver/critical.ts):
// exitWhenSafe during a critical section exits only after the section's last
// write, with the code asked for; no new section starts once the exit is
// under way; with no section open it exits at once. Run in a child process,
// since exiting is the point.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';

const MODULE = pathToFileURL(join(process.cwd(), 'dist/src/deliver/critical.js')).href;

function run(script: string): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import { critical, exitWhenSafe } from ${JSON.stringify(MODULE)};\n${script}`], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('an exit asked for during a critical section waits for its last write, then exits with that code', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-critical-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mbox');
  const r = run(`
    import { appendFileSync } from 'node:fs';
    import { setImmediate as tick } from 'node:timers/promises';
    const section = critical(async () => {
      appendFileSync(${JSON.stringify(file)}, 'first half|');
      exitWhenSafe(75);               // SIGTERM arrives in the middle of the append
      for (let i = 0; i < 50; i++) await tick();
      appendFileSync(${JSON.stringify(file)}, 'second half');
    });
    await section;
    appendFileSync(${JSON.stringify(file)}, '|after the exit');
  `);
  assert.equal(r.status, 75, r.out);
  assert.equal(readFileSync(file, 'utf8'), 'first half|second half');
});

test('no new section starts once an exit is under way', () => {
  const r = run(`
    let release;
    const open = critical(() => new Promise((resolve) => { release = resolve; }));
    exitWhenSafe(3);
    await critical(async () => undefined).then(() => console.log('started'), (err) => console.log('refused', err.code));
    release();
    await open;
  `);
  assert.equal(r.status, 3, r.out);
  assert.match(r.out, /^refused ESHUTDOWN$/m);
});

test('with no section open the exit is immediate', () => {
  const r = run(`exitWhenSafe(9); console.log('still here');`);
  assert.equal(r.status, 9);
  assert.doesNotMatch(r.out, /still here/);
});
