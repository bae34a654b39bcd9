// The one writable store (src/state/store.ts): an older version's
// <state>/policy-db is carried over to paths.state_db at the daemon's start,
// with what it holds; an existing store is never replaced by it; and the
// former policy.db key is refused with a pointer to paths.state_db.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config/load.js';
import { openState, openStateMigrating, rosterKey } from '../../src/state/index.js';

test('a policy-db left by an older version moves to state-db at start, rosters and all', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-state-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const legacy = openState(join(dir, 'policy-db'));
  await legacy.roster.put(rosterKey('dev@example.test', 'alice@example.test'), 1);
  await legacy.close();

  const { store, migrated } = await openStateMigrating(join(dir, 'state-db'), dir);
  try {
    assert.match(migrated ?? '', /moved .*policy-db to .*state-db/);
    assert.equal(store.isSubscriber('dev@example.test', 'alice@example.test'), true);
    assert.equal(existsSync(join(dir, 'policy-db')), false);
  } finally {
    await store.close();
  }
});

test('an existing state-db is opened as it is, and a policy-db beside it is left alone', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-state-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const current = openState(join(dir, 'state-db'));
  await current.roster.put(rosterKey('dev@example.test', 'bob@example.test'), 1);
  await current.close();
  await openState(join(dir, 'policy-db')).close();

  const { store, migrated } = await openStateMigrating(join(dir, 'state-db'), dir);
  try {
    assert.equal(migrated, undefined);
    assert.equal(store.isSubscriber('dev@example.test', 'bob@example.test'), true);
    assert.equal(existsSync(join(dir, 'policy-db')), true);
  } finally {
    await store.close();
  }
});

test('policy.db is refused, naming the key and where the setting went', () => {
  assert.throws(() => resolveConfig({ policy: { db: '/var/lib/x' } }, 'test.yaml', '/tmp'), /policy\.db: moved: .*paths\.state_db/);
});
