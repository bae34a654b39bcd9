// Rate limits (src/policy/plugins/ratelimit.ts) with a clock the test moves:
// over the limit → the rule's action; fixed windows reset at the boundary;
// sliding windows let the previous window fade out; keys are separate;
// maintenance forgets idle counters. Each table runs three times: counters in
// memory (state.backend lmdb), on a real PostgreSQL and on a real Redis
// (test/helpers/engines.ts; skipped naming the package when missing, failed
// under CI=true).
import assert from 'node:assert/strict';
import { after, describe, test, type TestContext } from 'node:test';
import { policyRequest } from '../../src/policy/index.js';
import { createRatelimitPlugin, type RateRule } from '../../src/policy/plugins/ratelimit.js';
import { stateConfigSchema } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { openPolicyState, type StateStore } from '../../src/state/index.js';
import { ENGINE_KINDS, testEngine, type EngineKind, type TestEngine } from '../helpers/engines.js';
import { manualClock, rcptRequest, startTestService } from './policy-peer.js';

const MIN = 60_000;

function rule(over: Partial<RateRule> = {}): RateRule {
  return { name: 'r', key: 'sasl_username', limit: 3, windowMs: MIN, mode: 'fixed', count: 'recipients', action: 'DEFER_IF_PERMIT 4.7.1 slow down', ...over };
}

type Setup = { ask: (over?: Record<string, string>) => Promise<string>; clock: ReturnType<typeof manualClock>; plugin: ReturnType<typeof createRatelimitPlugin> };

/** The plugin with counters in memory (lmdb) or on the engine; undefined: the engine's package is missing (skipped). */
async function setup(t: TestContext, engine: TestEngine, rules: RateRule[], maxKeys = 1000): Promise<Setup | undefined> {
  // Start on a window boundary so the test's arithmetic is the window's.
  const clock = manualClock(1000 * MIN);
  const backend = await engine.use(t);
  if (backend === undefined) return undefined;
  let shared;
  let expireShared;
  if (engine.kind !== 'lmdb') {
    const log = createLogger({ format: 'text', level: 'error', write: () => undefined });
    const ps = await openPolicyState({ config: stateConfigSchema.parse({ backend }), store: undefined as unknown as StateStore, log });
    t.after(() => ps.close());
    shared = ps.rate?.bind(ps);
    expireShared = ps.expireRates?.bind(ps);
  }
  const plugin = createRatelimitPlugin({ rules, maxKeys, now: clock.now, shared, expireShared });
  const ask = async (over: Record<string, string> = {}): Promise<string> => (await plugin.check(policyRequest(rcptRequest({ sasl_username: 'alice', ...over })))) ?? 'DUNNO';
  return { ask, clock, plugin };
}

async function times(n: number, f: () => Promise<string>): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}


const suite = (kind: EngineKind): void => {
  const engine = testEngine(kind);
  after(() => engine.dispose());

  test('over the limit gets the configured action; the refused request is not counted', async (t) => {
    const s = await setup(t, engine, [rule({ action: 'REJECT 5.7.1 too many' })]);
    if (s === undefined) return;
    const { ask } = s;
    assert.deepEqual(await times(5, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO', 'REJECT 5.7.1 too many', 'REJECT 5.7.1 too many']);
  });

  test('a fixed window rolls over at its boundary', async (t) => {
    const s = await setup(t, engine, [rule()]);
    if (s === undefined) return;
    const { ask, clock } = s;
    clock.advance(30_000);
    assert.deepEqual(await times(4, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO', 'DEFER_IF_PERMIT 4.7.1 slow down']);
    clock.advance(29_999);
    assert.equal(await ask(), 'DEFER_IF_PERMIT 4.7.1 slow down', 'same window');
    clock.advance(1);
    assert.deepEqual(await times(4, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO', 'DEFER_IF_PERMIT 4.7.1 slow down'], 'a new window');
  });

  test('a sliding window lets the previous window fade out in proportion', async (t) => {
    const s = await setup(t, engine, [rule({ mode: 'sliding', limit: 10 })]);
    if (s === undefined) return;
    const { ask, clock } = s;
    assert.equal((await times(10, () => ask())).filter((a) => a === 'DUNNO').length, 10);
    assert.notEqual(await ask(), 'DUNNO');
    clock.advance(MIN);
    assert.notEqual(await ask(), 'DUNNO', 'right after the boundary the previous window still counts in full');
    clock.advance(MIN / 2);
    // used = 10 × ½ + 0 = 5: five more fit.
    assert.deepEqual(await times(6, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO', 'DUNNO', 'DUNNO', 'DEFER_IF_PERMIT 4.7.1 slow down']);
    clock.advance(2 * MIN);
    assert.equal((await times(10, () => ask())).filter((a) => a === 'DUNNO').length, 10, 'two windows later the past is gone');
  });

  test('each key value has its own counter, compared as sent (senders without regard to case)', async (t) => {
    const s = await setup(t, engine, [rule({ key: 'sender', limit: 1 })]);
    if (s === undefined) return;
    const { ask } = s;
    assert.equal(await ask({ sender: 'a@x.test' }), 'DUNNO');
    assert.notEqual(await ask({ sender: 'A@X.test' }), 'DUNNO');
    assert.equal(await ask({ sender: 'b@x.test' }), 'DUNNO');
  });

  test('a request without the key attribute is not counted by that rule', async (t) => {
    const s = await setup(t, engine, [rule({ limit: 1 })]);
    if (s === undefined) return;
    const { ask } = s;
    assert.deepEqual(await times(5, () => ask({ sasl_username: '' })), ['DUNNO', 'DUNNO', 'DUNNO', 'DUNNO', 'DUNNO']);
  });

  test('recipients count RCPT requests, messages count END-OF-MESSAGE requests', async (t) => {
    const s = await setup(t, engine, [rule({ name: 'msgs', count: 'messages', limit: 1, action: 'REJECT 5.7.1 one message a minute' })]);
    if (s === undefined) return;
    const { ask } = s;
    assert.deepEqual(await times(3, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO'], 'RCPT is not counted by a messages rule');
    assert.equal(await ask({ protocol_state: 'END-OF-MESSAGE' }), 'DUNNO');
    assert.equal(await ask({ protocol_state: 'END-OF-MESSAGE' }), 'REJECT 5.7.1 one message a minute');
  });

  test('a request refused by one rule is counted by none', async (t) => {
    const s = await setup(t, engine, [rule({ key: 'client_address', limit: 100 }), rule({ key: 'sasl_username', limit: 1, action: 'REJECT 5.7.1 user' })]);
    if (s === undefined) return;
    const { ask } = s;
    await ask();
    for (let i = 0; i < 10; i++) assert.equal(await ask(), 'REJECT 5.7.1 user');
    // The client rule saw 1, not 11: 99 more from another user fit.
    assert.deepEqual(new Set(await times(99, () => ask({ sasl_username: '' }))), new Set(['DUNNO']));
    assert.equal(await ask({ sasl_username: '' }), 'DEFER_IF_PERMIT 4.7.1 slow down');
  });

  test('maintenance forgets counters whose windows are over; in memory, max_keys drops the oldest', async (t) => {
    const s = await setup(t, engine, [rule({ limit: 1 })], 2);
    if (s === undefined) return;
    const { ask, clock, plugin } = s;
    await ask({ sasl_username: 'a' });
    await ask({ sasl_username: 'b' });
    await ask({ sasl_username: 'c' });
    if (kind === 'lmdb') assert.equal(await ask({ sasl_username: 'a' }), 'DUNNO', 'a was dropped to make room for c');
    // A shared engine keeps every key until its windows are over: max_keys bounds this process's memory only.
    else assert.notEqual(await ask({ sasl_username: 'a' }), 'DUNNO', 'the engine still counts a');
    assert.notEqual(await ask({ sasl_username: 'c' }), 'DUNNO');
    clock.advance(2 * MIN);
    await plugin.maintain?.(clock.now());
    assert.equal(await ask({ sasl_username: 'c' }), 'DUNNO');
  });

  test('configured in the service: rules from the config file, over a socket', async (t) => {
    const clock = manualClock(1000 * MIN);
    const backend = await engine.use(t);
    if (backend === undefined) return;
    const svc = await startTestService(t, {
      backend,
      now: clock.now,
      config: { chain: ['ratelimit'], ratelimit: { rules: [{ key: 'client_address', limit: 2, window: '1m', mode: 'fixed' }] } },
    });
    const c = await svc.client();
    assert.deepEqual([await c.request(rcptRequest()), await c.request(rcptRequest()), await c.request(rcptRequest())],
      ['DUNNO', 'DUNNO', 'DEFER_IF_PERMIT 4.7.1 Rate limit exceeded, try again later']);
    clock.advance(MIN);
    assert.equal(await c.request(rcptRequest()), 'DUNNO');
    c.destroy();
  });
};

for (const kind of ENGINE_KINDS) describe(`rate limits on ${kind === 'lmdb' ? 'memory (lmdb)' : kind}`, () => suite(kind));
