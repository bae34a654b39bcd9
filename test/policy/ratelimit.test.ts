// Rate limits (src/policy/plugins/ratelimit.ts) with a clock the test moves:
// over the limit → the rule's action; fixed windows reset at the boundary;
// sliding windows let the previous window fade out; keys are separate;
// maintenance forgets idle counters.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { policyRequest } from '../../src/policy/index.js';
import { createRatelimitPlugin, type RateRule } from '../../src/policy/plugins/ratelimit.js';
import { manualClock, rcptRequest, startTestService } from './policy-peer.js';

const MIN = 60_000;

function rule(over: Partial<RateRule> = {}): RateRule {
  return { name: 'r', key: 'sasl_username', limit: 3, windowMs: MIN, mode: 'fixed', count: 'recipients', action: 'DEFER_IF_PERMIT 4.7.1 slow down', ...over };
}

function setup(rules: RateRule[], maxKeys = 1000): { ask: (over?: Record<string, string>) => Promise<string>; clock: ReturnType<typeof manualClock>; plugin: ReturnType<typeof createRatelimitPlugin> } {
  // Start on a window boundary so the test's arithmetic is the window's.
  const clock = manualClock(1000 * MIN);
  const plugin = createRatelimitPlugin({ rules, maxKeys, now: clock.now });
  const ask = async (over: Record<string, string> = {}): Promise<string> => (await plugin.check(policyRequest(rcptRequest({ sasl_username: 'alice', ...over })))) ?? 'DUNNO';
  return { ask, clock, plugin };
}

async function times(n: number, f: () => Promise<string>): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}

test('over the limit gets the configured action; the refused request is not counted', async () => {
  const { ask } = setup([rule({ action: 'REJECT 5.7.1 too many' })]);
  assert.deepEqual(await times(5, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO', 'REJECT 5.7.1 too many', 'REJECT 5.7.1 too many']);
});

test('a fixed window rolls over at its boundary', async () => {
  const { ask, clock } = setup([rule()]);
  clock.advance(30_000);
  assert.deepEqual(await times(4, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO', 'DEFER_IF_PERMIT 4.7.1 slow down']);
  clock.advance(29_999);
  assert.equal(await ask(), 'DEFER_IF_PERMIT 4.7.1 slow down', 'same window');
  clock.advance(1);
  assert.deepEqual(await times(4, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO', 'DEFER_IF_PERMIT 4.7.1 slow down'], 'a new window');
});

test('a sliding window lets the previous window fade out in proportion', async () => {
  const { ask, clock } = setup([rule({ mode: 'sliding', limit: 10 })]);
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

test('each key value has its own counter, compared as sent (senders without regard to case)', async () => {
  const { ask } = setup([rule({ key: 'sender', limit: 1 })]);
  assert.equal(await ask({ sender: 'a@x.test' }), 'DUNNO');
  assert.notEqual(await ask({ sender: 'A@X.test' }), 'DUNNO');
  assert.equal(await ask({ sender: 'b@x.test' }), 'DUNNO');
});

test('a request without the key attribute is not counted by that rule', async () => {
  const { ask } = setup([rule({ limit: 1 })]);
  assert.deepEqual(await times(5, () => ask({ sasl_username: '' })), ['DUNNO', 'DUNNO', 'DUNNO', 'DUNNO', 'DUNNO']);
});

test('recipients count RCPT requests, messages count END-OF-MESSAGE requests', async () => {
  const { ask } = setup([rule({ name: 'msgs', count: 'messages', limit: 1, action: 'REJECT 5.7.1 one message a minute' })]);
  assert.deepEqual(await times(3, () => ask()), ['DUNNO', 'DUNNO', 'DUNNO'], 'RCPT is not counted by a messages rule');
  assert.equal(await ask({ protocol_state: 'END-OF-MESSAGE' }), 'DUNNO');
  assert.equal(await ask({ protocol_state: 'END-OF-MESSAGE' }), 'REJECT 5.7.1 one message a minute');
});

test('a request refused by one rule is counted by none', async () => {
  const { ask } = setup([rule({ key: 'client_address', limit: 100 }), rule({ key: 'sasl_username', limit: 1, action: 'REJECT 5.7.1 user' })]);
  await ask();
  for (let i = 0; i < 10; i++) assert.equal(await ask(), 'REJECT 5.7.1 user');
  // The client rule saw 1, not 11: 99 more from another user fit.
  assert.deepEqual(new Set(await times(99, () => ask({ sasl_username: '' }))), new Set(['DUNNO']));
  assert.equal(await ask({ sasl_username: '' }), 'DEFER_IF_PERMIT 4.7.1 slow down');
});

test('maintenance forgets counters whose windows are over; max_keys drops the oldest', async () => {
  const { ask, clock, plugin } = setup([rule({ limit: 1 })], 2);
  await ask({ sasl_username: 'a' });
  await ask({ sasl_username: 'b' });
  await ask({ sasl_username: 'c' });
  assert.equal(await ask({ sasl_username: 'a' }), 'DUNNO', 'a was dropped to make room for c');
  assert.notEqual(await ask({ sasl_username: 'c' }), 'DUNNO');
  clock.advance(2 * MIN);
  await plugin.maintain?.(clock.now());
  assert.equal(await ask({ sasl_username: 'c' }), 'DUNNO');
});

test('configured in the service: rules from the config file, over a socket', async (t) => {
  const clock = manualClock(1000 * MIN);
  const svc = await startTestService(t, {
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
