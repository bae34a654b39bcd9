// The one writable store (src/state/store.ts): an older version's
// <state>/policy-db is carried over to paths.state_db at the daemon's start,
// with what it holds; an existing store is never replaced by it; and the
// former policy.db key is refused with a pointer to paths.state_db. Vacation
// and dedupe records: once per sender per period (atomic across processes),
// the first delivery within a window, and pruning.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { execFile } from 'node:child_process';
import { dedupeKey } from '../../src/classify/duplicate.js';
import { vacationKey } from '../../src/classify/vacation.js';
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

// ---- vacation and dedupe records ----

const DAY = 86_400_000;

async function withStore(t: { after: (fn: () => void) => void }): Promise<{ dir: string; store: ReturnType<typeof openState> }> {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-state-'));
  const store = openState(dir);
  t.after(() => {
    void store.close().finally(() => rmSync(dir, { recursive: true, force: true }));
  });
  return Promise.resolve({ dir, store });
}

const claims: { name: string; steps: { at: number; periodMs: number; want: boolean }[] }[] = [
  { name: 'the first reply to a sender goes', steps: [{ at: 0, periodMs: 7 * DAY, want: true }] },
  { name: 'a second within the period does not', steps: [{ at: 0, periodMs: 7 * DAY, want: true }, { at: 7 * DAY - 1, periodMs: 7 * DAY, want: false }] },
  { name: 'one at the end of the period goes, and starts a new period', steps: [{ at: 0, periodMs: 7 * DAY, want: true }, { at: 7 * DAY, periodMs: 7 * DAY, want: true }, { at: 8 * DAY, periodMs: 7 * DAY, want: false }] },
  { name: 'a refused claim does not move the period on', steps: [{ at: 0, periodMs: DAY, want: true }, { at: DAY - 1, periodMs: DAY, want: false }, { at: DAY, periodMs: DAY, want: true }] },
  { name: 'a shorter period set later counts from the last reply', steps: [{ at: 0, periodMs: 7 * DAY, want: true }, { at: DAY, periodMs: DAY, want: true }] },
  { name: 'a clock that went back counts as within the period', steps: [{ at: 10 * DAY, periodMs: DAY, want: true }, { at: 5 * DAY, periodMs: DAY, want: false }] },
];

for (const c of claims) {
  test(`claimVacation: ${c.name}`, async (t) => {
    const { store } = await withStore(t);
    const t0 = Date.UTC(2026, 5, 1);
    const got = c.steps.map((s) => store.claimVacation(vacationKey('bob@example.test', 'alice@example.org'), s.periodMs, t0 + s.at));
    assert.deepEqual(got, c.steps.map((s) => s.want));
  });
}

test('claimVacation keeps senders and owners apart, and remembers a sender too long for an LMDB key', async (t) => {
  const { store } = await withStore(t);
  const now = Date.UTC(2026, 5, 1);
  const long = `${'x'.repeat(3000)}@example.org`;
  assert.equal(store.claimVacation(vacationKey('bob@example.test', 'alice@example.org'), DAY, now), true);
  assert.equal(store.claimVacation(vacationKey('bob@example.test', 'carol@example.org'), DAY, now), true);
  assert.equal(store.claimVacation(vacationKey('dave@example.test', 'alice@example.org'), DAY, now), true);
  assert.equal(store.claimVacation(vacationKey('bob@example.test', long), DAY, now), true);
  assert.equal(store.claimVacation(vacationKey('bob@example.test', long), DAY, now + 1), false);
  assert.equal(store.claimVacation(vacationKey('Bob@Example.TEST', 'ALICE@example.org'), DAY, now + 1), false);
});

test('claimVacation: of many deliveries racing in one process, one replies', async (t) => {
  const { store } = await withStore(t);
  const now = Date.UTC(2026, 5, 1);
  const key = vacationKey('bob@example.test', 'alice@example.org');
  const got = await Promise.all(Array.from({ length: 20 }, async () => {
    await new Promise<void>((resolve) => setImmediate(resolve));
    return store.claimVacation(key, DAY, now);
  }));
  assert.equal(got.filter(Boolean).length, 1);
});

test('claimVacation: of processes racing on one store, exactly one replies', async (t) => {
  const { dir, store } = await withStore(t);
  const storeModule = new URL('../../src/state/store.js', import.meta.url).href;
  const key = vacationKey('bob@example.test', 'alice@example.org');
  // Each child waits for the same moment, then claims; whatever the interleaving, LMDB's write lock must let one through.
  const startAt = Date.now() + 1500;
  const code = `
    const { openState } = await import(process.argv[1]);
    const store = openState(process.argv[2]);
    while (Date.now() < Number(process.argv[3])) await new Promise((r) => setTimeout(r, 1));
    process.stdout.write(String(store.claimVacation(process.argv[4], 86400000, 1780272000000)));
    await store.close();`;
  const run = (): Promise<string> => new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', code, storeModule, dir, String(startAt), key], (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  const got = await Promise.all(Array.from({ length: 6 }, run));
  assert.deepEqual(got.filter((o) => o === 'true').length, 1, got.join(' '));
  assert.deepEqual(got.filter((o) => o === 'false').length, 5, got.join(' '));
  // And the daemon's own handle sees the reply the winner recorded.
  assert.equal(store.claimVacation(key, DAY, 1780272000000 + 1), false);
});

test('dedupe: a delivery is seen within its window with the first queue id, and not after', async (t) => {
  const { store } = await withStore(t);
  const now = Date.UTC(2026, 5, 1);
  const key = dedupeKey('bob@example.test', '<m1@example.org>') as string;
  assert.equal(store.dedupeSeen(key, DAY, now), undefined);
  await store.dedupeRecord(key, now, 'Q1', DAY);
  assert.deepEqual(store.dedupeSeen(key, DAY, now + 1000), { firstMs: now, queueId: 'Q1' });
  // A second delivery within the window does not replace the first.
  await store.dedupeRecord(key, now + 1000, 'Q2', DAY);
  assert.deepEqual(store.dedupeSeen(key, DAY, now + 2000), { firstMs: now, queueId: 'Q1' });
  assert.equal(store.dedupeSeen(key, DAY, now + DAY), undefined);
  // After the window a new delivery starts a new one.
  await store.dedupeRecord(key, now + DAY, 'Q3', DAY);
  assert.deepEqual(store.dedupeSeen(key, DAY, now + DAY + 1), { firstMs: now + DAY, queueId: 'Q3' });
  assert.equal(store.dedupeSeen(dedupeKey('carol@example.test', '<m1@example.org>') as string, DAY, now), undefined);
});

test('pruning removes vacation entries past their own period and dedupe entries past the window, and nothing else', async (t) => {
  const { store } = await withStore(t);
  const now = Date.UTC(2026, 5, 1);
  store.claimVacation(vacationKey('bob@example.test', 'old@example.org'), DAY, now - DAY);
  store.claimVacation(vacationKey('bob@example.test', 'recent@example.org'), DAY, now - DAY + 1);
  store.claimVacation(vacationKey('bob@example.test', 'long-period@example.org'), 30 * DAY, now - 10 * DAY);
  // More than one prune chunk of expired entries, to see the chunks resume where they left off.
  await Promise.all(Array.from({ length: 2500 }, (_v, i) => store.dedupeRecord(dedupeKey('bob@example.test', `<old${i}@example.org>`) as string, now - 2 * DAY, `Q${i}`, DAY)));
  await store.dedupeRecord(dedupeKey('bob@example.test', '<new@example.org>') as string, now - 1000, 'QN', DAY);

  assert.equal(await store.pruneVacation(now), 1);
  assert.deepEqual([...store.vacation.getKeys()].map((k) => k.split('\x1f')[1]).sort(), ['long-period@example.org', 'recent@example.org']);
  assert.equal(await store.pruneDedupe(DAY, now), 2500);
  assert.deepEqual([...store.dedupe.getKeys()], [dedupeKey('bob@example.test', '<new@example.org>')]);
  assert.equal(await store.pruneDedupe(DAY, now), 0);
});
