// The PostgreSQL policy state's request path, on a real PostgreSQL
// (test/helpers/engines.ts; skipped naming the package when missing, failed
// under CI=true):
//   - greylist checks that wait for a busy connection go out together (one
//     connection, calls made at once) and each gets the answer it would get
//     alone: new, repeated in the same statement, first pass with its delay,
//     auto-whitelisted network, and the networks' pass counts;
//   - two nodes checking the same triplets in opposite orders, batched, never
//     deadlock (a deadlock would surface as an error after deadlock_timeout);
//   - rate checks batched the same way: each request decided in turn as if
//     alone (counted by all its rules or by none), and no deadlock between
//     two nodes whose rules are listed in opposite orders;
//   - user policies are answered from memory between changes: a row written
//     behind the nodes' back (trigger disabled) is not seen by a node that
//     has the address in memory; a change through one node is seen there at
//     once and on the other when its notification arrives; a TRUNCATE clears
//     everything; with its listening connection gone a node asks the engine
//     every time, and keeps answers again once it listens again.
import assert from 'node:assert/strict';
import { after, test, type TestContext } from 'node:test';
import pg from 'pg';
import { stateConfigSchema } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { openPolicyState, type PolicyState, type RateCheck, type StateStore, type UserPolicyRecord } from '../../src/state/index.js';
import { LISTENER_NAME } from '../../src/state/postgres-policy-cache.js';
import { testEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait.js';

const engine = testEngine('postgresql');
after(() => engine.dispose());

const T0 = Date.UTC(2026, 0, 5, 9, 0, 0);
const DELAY = 300_000;

async function node(t: TestContext, backend: string, pool: number, timeout = '5s'): Promise<{ ps: PolicyState; lines: string[] }> {
  const lines: string[] = [];
  const log = createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) });
  const ps = await openPolicyState({
    config: stateConfigSchema.parse({ backend, pool, timeout, retry_interval: '200ms' }), store: undefined as unknown as StateStore, log,
  });
  t.after(() => ps.close());
  return { ps, lines };
}

async function admin(t: TestContext, backend: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: backend });
  await c.connect();
  t.after(() => c.end());
  return c;
}

/** Until two sessions wait for a row lock: both nodes are mid-statement, each holding some rows. */
const bothWaitingForALock = (db: pg.Client): Promise<true> => waitFor('both nodes waiting for a row lock', async () => {
  const r = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'");
  return (r.rows[0]?.n ?? 0) >= 2 ? true : undefined;
});

test('greylist checks that wait for the connection share one statement, and each gets its own answer', async (t) => {
  const backend = await engine.use(t);
  if (backend === undefined) return;
  const { ps } = await node(t, backend, 1);
  const db = await admin(t, backend);
  const p = { delayMs: DELAY, retryWindowMs: 86_400_000, expireMs: 35 * 86_400_000, autoWhitelist: 2 };
  const net = (n: number): string => `198.51.${n}.0/24`;
  // One connection: the first call of each round goes alone, the others wait and go together.
  const round = (now: number, calls: [number, string][]): Promise<unknown[]> => Promise.all(calls.map(([n, k]) => ps.greylist(net(n), k, now, p)));
  const DEFER = { kind: 'defer' };
  const pass = (delayedMs?: number): unknown => ({ kind: 'pass', delayedMs });

  assert.deepEqual(await round(T0, [[1, 't1'], [1, 't2'], [2, 't3'], [2, 't4'], [3, 't5'], [1, 't1'], [3, 't6']]), Array(7).fill(DEFER));
  const t1 = T0 + DELAY + 1000;
  assert.deepEqual(await round(t1, [[3, 't7'], [1, 't1'], [1, 't1'], [1, 't2'], [2, 't3'], [3, 't5']]), [
    DEFER, // new
    pass(DELAY + 1000), // first pass: how long it was delayed
    pass(undefined), // the same triplet again in the same statement: passed already
    pass(DELAY + 1000), pass(DELAY + 1000), pass(DELAY + 1000),
  ]);
  const passes = async (): Promise<Record<string, number>> =>
    Object.fromEntries((await db.query<{ net: string; passes: number }>('SELECT net, passes FROM mailproc_greylist_clients')).rows.map((r) => [r.net, r.passes]));
  assert.deepEqual(await passes(), { [net(1)]: 2, [net(2)]: 1, [net(3)]: 1 });
  const t2 = t1 + 1000;
  assert.deepEqual(await round(t2, [[2, 't9'], [1, 't8'], [2, 't4'], [2, 't10']]), [
    DEFER, // network 2 has one pass: not whitelisted
    pass(undefined), // network 1 has two: whitelisted, no triplet kept
    pass(t2 - T0), // first seen in the first round
    DEFER,
  ]);
  assert.deepEqual(await passes(), { [net(1)]: 2, [net(2)]: 2, [net(3)]: 1 });
  assert.deepEqual(await ps.counts(), { triplets: 9, clients: 3 });
});

test('two nodes checking the same triplets in opposite orders, in batches, never deadlock', async (t) => {
  const backend = await engine.use(t);
  if (backend === undefined) return;
  const a = await node(t, backend, 1);
  const b = await node(t, backend, 1);
  const db = await admin(t, backend);
  // Whitelisting out of reach: every first pass counts on its network's row, locked after the triplets.
  const p = { delayMs: DELAY, retryWindowMs: 86_400_000, expireMs: 35 * 86_400_000, autoWhitelist: 1000 };
  const calls = Array.from({ length: 16 }, (_, i) => ({ net: `203.0.${i % 3}.0/24`, key: `t${String(i).padStart(2, '0')}` }));
  const both = (now: number): Promise<{ delayedMs?: number }[][]> => Promise.all([
    Promise.all(calls.map((c) => a.ps.greylist(c.net, c.key, now, p))),
    Promise.all([...calls].reverse().map((c) => b.ps.greylist(c.net, c.key, now, p))),
  ]) as Promise<{ delayedMs?: number }[][]>;
  // A third session holds t08 (inserted, not committed), so both nodes' batches are
  // under way at once, each holding some triplets, when it lets go: locks taken in
  // call order would deadlock here (a 40P01 error a second later).
  const hold = await admin(t, backend);
  await hold.query('BEGIN');
  await hold.query('INSERT INTO mailproc_greylist (key, first_seen, last_seen, passed_at) VALUES ($1, $2, $2, 0)', ['t08', T0]);
  const firstRound = both(T0);
  await bothWaitingForALock(db);
  await hold.query('COMMIT');
  await firstRound;
  const [fromA, fromB] = await both(T0 + DELAY + 1) as [{ delayedMs?: number }[], { delayedMs?: number }[]];
  // Each triplet passed once for the first time: on one node or the other, never both.
  const firsts = calls.map((_, i) => [fromA[i]?.delayedMs, fromB[calls.length - 1 - i]?.delayedMs].filter((d) => d !== undefined).length);
  assert.deepEqual(firsts, calls.map(() => 1));
  const rows = (await db.query<{ passes: number }>('SELECT passes FROM mailproc_greylist_clients ORDER BY net')).rows.map((row) => row.passes);
  assert.deepEqual(rows, [6, 5, 5], '16 first passes over three networks');
});

test('rate checks that wait for the connection share one statement, each request decided in turn as alone', async (t) => {
  const backend = await engine.use(t);
  if (backend === undefined) return;
  const { ps } = await node(t, backend, 1);
  const HOUR = 3_600_000;
  const checks = (sender: string): RateCheck[] => [
    { rule: 'per-client', key: '192.0.2.7', limit: 5, windowMs: HOUR, mode: 'fixed' },
    { rule: 'per-sender', key: sender, limit: 2, windowMs: HOUR, mode: 'fixed' },
  ];
  const rate = ps.rate?.bind(ps);
  assert.ok(rate !== undefined);
  // One connection: the first request goes alone, the other seven wait and go together.
  const got = await Promise.all(['s1', 's1', 's1', 's2', 's2', 's2', 's3', 's4'].map((sender) => rate(checks(sender), T0)));
  assert.deepEqual(got, [
    -1, -1, // s1 twice: counted by both rules
    1, // s1 a third time: per-sender refuses; nothing counted
    -1, -1, 1, // s2 the same
    -1, // s3: the fifth message for the client
    0, // s4: per-client refuses first
  ]);
  const db = await admin(t, backend);
  const counts = (await db.query<{ key: string; current: number }>("SELECT key, current FROM mailproc_rate ORDER BY rule, key")).rows.map((r) => `${r.key}=${r.current}`);
  assert.deepEqual(counts, ['192.0.2.7=5', 's1=2', 's2=2', 's3=1', 's4=0']);
  // A lone request with one rule (the one-request function) and without any.
  assert.equal(await rate([{ rule: 'single', key: 'k', limit: 1, windowMs: HOUR, mode: 'sliding' }], T0), -1);
  assert.equal(await rate([{ rule: 'single', key: 'k', limit: 1, windowMs: HOUR, mode: 'sliding' }], T0), 0);
  assert.equal(await rate([], T0), -1);
});

test('two nodes counting the same keys under rules listed in opposite orders, in batches, never deadlock', async (t) => {
  const backend = await engine.use(t);
  if (backend === undefined) return;
  const a = await node(t, backend, 1);
  const b = await node(t, backend, 1);
  const db = await admin(t, backend);
  const HOUR = 3_600_000;
  const rule = (name: string, key: string): RateCheck => ({ rule: name, key, limit: 1000, windowMs: HOUR, mode: 'fixed' });
  const keys = Array.from({ length: 12 }, (_, i) => `k${String(i).padStart(2, '0')}`);
  // Node a lists the rules z, y; node b y, z; and they take the keys in opposite orders.
  const onA = keys.map((k) => [rule('z', k), rule('y', k)]);
  const onB = [...keys].reverse().map((k) => [rule('y', k), rule('z', k)]);
  await db.query("INSERT INTO mailproc_rate (rule, key, window_ms, win, current, previous) VALUES ('y', 'k06', $1, 0, 0, 0)", [HOUR]);
  // A third session holds one counter, so both nodes are mid-statement, each holding some, when it lets go.
  const hold = await admin(t, backend);
  await hold.query('BEGIN');
  await hold.query("SELECT 1 FROM mailproc_rate WHERE rule = 'y' AND key = 'k06' FOR UPDATE");
  const both = Promise.all([Promise.all(onA.map((c) => a.ps.rate?.(c, T0))), Promise.all(onB.map((c) => b.ps.rate?.(c, T0)))]);
  await bothWaitingForALock(db);
  await hold.query('COMMIT');
  const [fromA, fromB] = await both;
  assert.deepEqual([...fromA, ...fromB], Array(24).fill(-1));
  const counts = (await db.query<{ current: number }>('SELECT current FROM mailproc_rate')).rows.map((r) => r.current);
  assert.deepEqual(counts, Array(24).fill(2), 'every counter counted once by each node');
});

test('statements stuck behind a lock a forgotten session holds are given up: the node answers again while the lock is still held', async (t) => {
  const backend = await engine.use(t);
  if (backend === undefined) return;
  const { ps, lines } = await node(t, backend, 2, '200ms');
  const p = { delayMs: DELAY, retryWindowMs: 86_400_000, expireMs: 35 * 86_400_000, autoWhitelist: 0 };
  const net = '192.0.2.0/24';
  assert.deepEqual(await ps.greylist(net, 'locked', T0, p), { kind: 'defer' });
  const hold = await admin(t, backend);
  await hold.query('BEGIN');
  await hold.query("SELECT 1 FROM mailproc_greylist WHERE key = 'locked' FOR UPDATE");
  // Both of the pool's connections wait for that row: past the 200 ms deadline, an outage.
  const stuck = await Promise.allSettled([ps.greylist(net, 'locked', T0 + 1, p), ps.greylist(net, 'locked', T0 + 2, p)]);
  assert.deepEqual(stuck.map((r) => r.status), ['rejected', 'rejected']);
  assert.ok(lines.some((l) => /unreachable \(no answer within 200 ms\)/.test(l)), lines.join('\n'));
  // The server gives the two statements up (statement_timeout), the probe finds a connection, the node answers.
  let n = 0;
  try {
    await waitFor('a greylist answer for another triplet while the lock is held', async () => {
      try {
        return (await ps.greylist(net, `free-${n++}`, T0, p)).kind === 'defer' ? true : undefined;
      } catch {
        return undefined;
      }
    }, 30_000);
    assert.ok(lines.some((l) => /reachable again after/.test(l)), lines.join('\n'));
  } finally {
    // Let go either way, or closing the node would wait for its stuck statements.
    await hold.query('ROLLBACK');
  }
});

const policy = (uid: number, deny: string[]): UserPolicyRecord => ({ allow: [], deny, onlyAllowed: false, owner: 'alice', uid, updatedAt: '2026-01-05T09:00:00Z' });

test('user policies are answered from memory between changes, and every change reaches every node', async (t) => {
  const backend = await engine.use(t);
  if (backend === undefined) return;
  const a = await node(t, backend, 2);
  const b = await node(t, backend, 2);
  const db = await admin(t, backend);
  const listening = (n: { lines: string[] }, times: number): Promise<true> =>
    waitFor(`the node to listen for changes (${times})`, () => (n.lines.filter((l) => l.includes('listening for user policy changes')).length >= times ? true : undefined));
  await listening(a, 1);
  await listening(b, 1);
  assert.deepEqual(b.ps.policyCache?.(), { listening: true, entries: 0 }, 'what mailproc status shows');
  const ALICE = 'alice@example.test';
  const uidOn = async (n: { ps: PolicyState }): Promise<number | null> => (await n.ps.userPolicies([ALICE]))[0]?.uid ?? null;
  const behindTheBack = async (uid: number): Promise<void> => {
    await db.query('ALTER TABLE mailproc_user_policy DISABLE TRIGGER mailproc_user_policy_changed');
    await db.query(`INSERT INTO mailproc_user_policy (address, uid, policy) VALUES ($1, $2, $3)
      ON CONFLICT (address) DO UPDATE SET uid = EXCLUDED.uid, policy = EXCLUDED.policy`, [ALICE, uid, JSON.stringify(policy(uid, ['*@spam.test']))]);
    await db.query('ALTER TABLE mailproc_user_policy ENABLE TRIGGER mailproc_user_policy_changed');
  };

  assert.equal(await uidOn(b), null, 'b looks alice up: none, kept');
  assert.deepEqual(b.ps.policyCache?.(), { listening: true, entries: 1 });
  await behindTheBack(1001);
  assert.equal(await uidOn(b), null, 'b answers from memory: the untold row is not seen');
  assert.equal(await uidOn(a), 1001, 'a never asked before: it reads the row');

  await a.ps.putUserPolicy(ALICE, policy(1002, ['*@junk.test']));
  assert.equal(await uidOn(a), 1002, 'a change through a node is in force there at once');
  await waitFor('b to hear of the change', async () => ((await uidOn(b)) === 1002 ? true : undefined));
  assert.deepEqual((await b.ps.userPolicies([ALICE]))[0]?.deny, ['*@junk.test']);

  assert.equal(await b.ps.removeUserPolicy(ALICE), true);
  assert.equal(await uidOn(b), null);
  await waitFor('a to hear of the removal', async () => ((await uidOn(a)) === null ? true : undefined));

  await b.ps.putUserPolicy(ALICE, policy(1003, []));
  await waitFor('a to hear of the new policy', async () => ((await uidOn(a)) === 1003 ? true : undefined));
  await db.query('TRUNCATE mailproc_user_policy');
  await waitFor('a to forget everything on a TRUNCATE', async () => ((await uidOn(a)) === null ? true : undefined));
  await waitFor('b to forget everything on a TRUNCATE', async () => ((await uidOn(b)) === null ? true : undefined));

  // The listening connections go: no answer from memory until they are back.
  const killed = await db.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [LISTENER_NAME]);
  assert.equal(killed.rowCount, 2);
  for (const n of [a, b]) await waitFor('the node to notice', () => (n.lines.some((l) => l.includes('no user policy change notifications')) ? true : undefined));
  // Nothing of before is kept (listening again already or not: a reconnect starts from nothing).
  assert.equal(b.ps.policyCache?.().entries, 0);
  await behindTheBack(1004);
  assert.equal(await uidOn(b), 1004, 'not listening: b asks the engine');
  await listening(b, 2);
  assert.equal(await uidOn(b), 1004, 'listening again: b reads and keeps');
  await behindTheBack(1005);
  assert.equal(await uidOn(b), 1004, 'kept: the untold row is not seen');
  await a.ps.putUserPolicy(ALICE, policy(1006, []));
  await waitFor('b to hear of the change after reconnecting', async () => ((await uidOn(b)) === 1006 ? true : undefined));
});
