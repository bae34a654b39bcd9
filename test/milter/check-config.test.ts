// `mailprocd --check-config` loads the users' milter filters as the start
// would (each in its worker, ended again): a module that would stop the
// daemon is named by milter.filters[i] before anyone restarts it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { DAEMON, makeTestDir } from '../helpers/daemon.js';

test('mailprocd --check-config names a milter filter that cannot be loaded, and passes the shipped example', (t) => {
  const dir = makeTestDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const check = (filters: string[]): { status: number | null; stderr: string } => {
    const file = join(dir, 'mailprocd.yaml');
    writeFileSync(file, stringify({ paths: { state: join(dir, 'state') }, milter: { filters } }));
    return spawnSync(process.execPath, [DAEMON, '--check-config', '--config', file], { encoding: 'utf8' });
  };
  const example = resolve('examples/milter/site-policy.mjs');
  const good = check([example]);
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stderr, /is valid/);

  const missing = join(dir, 'nowhere.mjs');
  const bad = check([example, missing]);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, new RegExp(`milter\\.filters\\[1\\]: ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: no such file`));
  assert.doesNotMatch(bad.stderr, /is valid/);
});
