// Greylisting (src/policy/plugins/greylist.ts): the pure triplet decision and
// client network as tables, then the plugin in a real service with a clock
// the test moves — deferral, delay, pass, retry window, auto-whitelist and
// expiry — once on each state backend: local LMDB, a real PostgreSQL and a
// real Redis (test/helpers/engines.ts; skipped naming the package when
// missing, failed under CI=true). Expiry is the maintenance job's on LMDB and
// PostgreSQL, the keys' TTLs on Redis.
import assert from 'node:assert/strict';
import { after, before, describe, test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { policyRequest } from '../../src/policy/index.js';
import { type PolicyConfigInput } from '../../src/config/index.js';
import { clientNetwork, decideTriplet, type GreylistSettings } from '../../src/policy/plugins/greylist.js';
import { openState } from '../../src/state/index.js';
import { ENGINE_KINDS, testEngine, type TestEngine } from '../helpers/engines.js';
import { manualClock, rcptRequest, startTestService, type TestService } from './policy-peer.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const S: GreylistSettings = {
  delayMs: 5 * MIN, retryWindowMs: DAY, expireMs: 35 * DAY, autoWhitelist: 5,
  text: 'Greylisted', header: false, ipv4Prefix: 24, ipv6Prefix: 64,
};
const T0 = 1_000_000_000;

const DECISIONS: { name: string; rec: readonly [number, number, number] | undefined; now: number; want: unknown }[] = [
  { name: 'first attempt: deferred and recorded', rec: undefined, now: T0, want: { kind: 'defer', write: [T0, T0, 0] } },
  { name: 'retry before the delay: deferred, the clock not restarted', rec: [T0, T0, 0], now: T0 + 4 * MIN, want: { kind: 'defer', write: undefined } },
  { name: 'retry at the delay: passes, delayed by the wait', rec: [T0, T0, 0], now: T0 + 5 * MIN, want: { kind: 'pass', write: [T0, T0 + 5 * MIN, T0 + 5 * MIN], delayedMs: 5 * MIN } },
  { name: 'retry at the end of the window: passes', rec: [T0, T0, 0], now: T0 + DAY, want: { kind: 'pass', write: [T0, T0 + DAY, T0 + DAY], delayedMs: DAY } },
  { name: 'retry after the window: starts over', rec: [T0, T0, 0], now: T0 + DAY + 1, want: { kind: 'defer', write: [T0 + DAY + 1, T0 + DAY + 1, 0] } },
  { name: 'a passed triplet passes without a write within the hour', rec: [T0, T0 + 10 * MIN, T0 + 10 * MIN], now: T0 + 30 * MIN, want: { kind: 'pass', write: undefined, delayedMs: undefined } },
  { name: 'a passed triplet refreshes its last-seen hourly', rec: [T0, T0, T0], now: T0 + 2 * HOUR, want: { kind: 'pass', write: [T0, T0 + 2 * HOUR, T0], delayedMs: undefined } },
  { name: 'a passed triplet unused past expire starts over', rec: [T0, T0, T0], now: T0 + 35 * DAY + 1, want: { kind: 'defer', write: [T0 + 35 * DAY + 1, T0 + 35 * DAY + 1, 0] } },
];

for (const c of DECISIONS) {
  test(`triplet: ${c.name}`, () => assert.deepEqual(decideTriplet(c.rec, c.now, S), c.want));
}

const NETWORKS: [string, number, number, string][] = [
  ['192.0.2.77', 24, 64, '192.0.2.0/24'],
  ['192.0.2.77', 32, 64, '192.0.2.77/32'],
  ['192.0.2.77', 16, 64, '192.0.0.0/16'],
  ['255.255.255.255', 0, 64, '0.0.0.0/0'],
  ['::ffff:198.51.100.9', 24, 64, '198.51.100.0/24'],
  ['2001:db8:1:2:3:4:5:6', 24, 64, '2001:db8:1:2::/64'],
  ['2001:DB8::1', 24, 64, '2001:db8::/64'],
  ['2001:db8:1:2:3:4:5:6', 24, 56, '2001:db8:1::/56'],
  ['2001:db8:1:2ff:3:4:5:6', 24, 60, '2001:db8:1:2f0::/60'],
  ['::1', 24, 128, '::1/128'],
  ['64:ff9b::192.0.2.1', 24, 128, '64:ff9b::c000:201/128'],
  ['unknown', 24, 64, 'unknown'],
];

for (const [address, v4, v6, want] of NETWORKS) {
  test(`client network of ${address} (/${v4}, /${v6}) is ${want}`, () => assert.equal(clientNetwork(address, v4, v6), want));
}

let engine: TestEngine;

async function greylistService(t: TestContext, clock: { now: () => number }, greylist: PolicyConfigInput['greylist'] = {}): Promise<TestService | undefined> {
  const backend = await engine.use(t);
  if (backend === undefined) return undefined;
  return startTestService(t, { backend, config: { chain: ['greylist'], greylist }, now: clock.now });
}

function attempt(svc: TestService, over: Record<string, string> = {}): Promise<string> {
  return svc.service.decide(policyRequest(rcptRequest({ recipient: 'alice@example.test', ...over }))).then((d) => d.action);
}

const DEFER = 'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again later';


for (const kind of ENGINE_KINDS) {
  const mine = testEngine(kind);
  describe(`greylist on ${kind}`, () => {
    before(() => {
      engine = mine;
    });
    after(() => mine.dispose());

    test('first try is deferred, a retry before the delay still is, a retry after it passes and stays passed', async (t) => {
      const clock = manualClock();
      const svc = await greylistService(t, clock);
      if (svc === undefined) return;
      assert.equal(await attempt(svc), DEFER);
      clock.advance(299_000);
      assert.equal(await attempt(svc), DEFER);
      clock.advance(1_000);
      assert.equal(await attempt(svc), 'DUNNO');
      clock.advance(DAY * 3);
      assert.equal(await attempt(svc), 'DUNNO', 'a passed triplet is remembered');
      assert.equal(await attempt(svc, { sender: 'someone-else@elsewhere.test' }), DEFER, 'another sender is another triplet');
      assert.equal(await attempt(svc, { recipient: 'bob@example.test' }), DEFER, 'another recipient too');
      assert.equal(await attempt(svc, { client_address: '192.0.2.200' }), 'DUNNO', 'the same /24 is the same client');
      assert.equal(await attempt(svc, { client_address: '198.51.100.10' }), DEFER, 'another network is not');
    });

    test('only the RCPT stage is greylisted', async (t) => {
      const svc = await greylistService(t, manualClock());
      if (svc === undefined) return;
      assert.equal(await attempt(svc, { protocol_state: 'DATA' }), 'DUNNO');
      assert.equal(await attempt(svc, { protocol_state: 'END-OF-MESSAGE' }), 'DUNNO');
    });

    test('a retry after the retry window starts over', async (t) => {
      const clock = manualClock();
      const svc = await greylistService(t, clock, { retry_window: '4h' });
      if (svc === undefined) return;
      assert.equal(await attempt(svc), DEFER);
      clock.advance(4 * HOUR + 1);
      assert.equal(await attempt(svc), DEFER, 'too late: a new first attempt');
      clock.advance(5 * MIN - 1);
      assert.equal(await attempt(svc), DEFER, 'the new delay counts from the new first attempt');
      clock.advance(1);
      assert.equal(await attempt(svc), 'DUNNO');
    });

    test('with header on, the passing retry is answered with an X-Greylist PREPEND, later ones with DUNNO', async (t) => {
      const clock = manualClock();
      const svc = await greylistService(t, clock, { header: true, delay: '1m' });
      if (svc === undefined) return;
      assert.equal(await attempt(svc), DEFER);
      clock.advance(7 * MIN);
      assert.equal(await attempt(svc), 'PREPEND X-Greylist: delayed 420 seconds by mailprocd');
      assert.equal(await attempt(svc), 'DUNNO');
    });

    test('a client network that passed auto_whitelist triplets is no longer greylisted', async (t) => {
      const clock = manualClock();
      const svc = await greylistService(t, clock, { auto_whitelist: 3 });
      if (svc === undefined) return;
      for (let i = 0; i < 3; i++) {
        const triplet = { sender: `s${i}@elsewhere.test`, client_address: `192.0.2.${10 + i}` };
        assert.equal(await attempt(svc, triplet), DEFER);
        clock.advance(6 * MIN);
        assert.equal(await attempt(svc, triplet), 'DUNNO');
        if (i < 2) assert.equal(await attempt(svc, { sender: `new${i}@elsewhere.test` }), DEFER, `not whitelisted after ${i + 1} passes`);
      }
      assert.equal(await attempt(svc, { sender: 'brand-new@elsewhere.test' }), 'DUNNO', 'whitelisted after 3 passes');
      assert.equal(await attempt(svc, { sender: 'brand-new@elsewhere.test', client_address: '198.51.100.1' }), DEFER, 'only that network');
    });

    test('auto_whitelist 0 never whitelists', async (t) => {
      const clock = manualClock();
      const svc = await greylistService(t, clock, { auto_whitelist: 0 });
      if (svc === undefined) return;
      for (let i = 0; i < 10; i++) {
        assert.equal(await attempt(svc, { sender: `s${i}@elsewhere.test` }), DEFER);
        clock.advance(6 * MIN);
        assert.equal(await attempt(svc, { sender: `s${i}@elsewhere.test` }), 'DUNNO');
      }
      assert.equal(await attempt(svc, { sender: 'next@elsewhere.test' }), DEFER);
    });

    test('unpassed triplets expire after the retry window, passed ones and whitelisted clients after expire (maintenance job, or the keys\' TTLs on Redis)', async (t) => {
      const clock = manualClock();
      const svc = await greylistService(t, clock, { auto_whitelist: 1, expire: '10d' });
      if (svc === undefined) return;
      const passed = { sender: 'passed@elsewhere.test' };
      const pending = { sender: 'pending@elsewhere.test', client_address: '198.51.100.7' };
      assert.equal(await attempt(svc, passed), DEFER);
      assert.equal(await attempt(svc, pending), DEFER);
      clock.advance(6 * MIN);
      assert.equal(await attempt(svc, passed), 'DUNNO');
      const count = async (): Promise<[number, number]> => {
        const c = await svc.policyState.counts();
        return [c.triplets, c.clients];
      };
      assert.deepEqual(await count(), [2, 1]);
      if (kind === 'redis') {
        // Redis forgets by itself: each key's TTL is its life (its decisions compare the stored times with the clock, so the test's clock still applies).
        const r = new Redis({ path: new URL(svc.policyState.label).pathname, lazyConnect: true });
        await r.connect();
        t.after(() => r.disconnect());
        const ttl = async (pattern: string): Promise<number[]> => Promise.all((await r.keys(pattern)).map((k) => r.pttl(k)));
        const pendingTtl = await ttl('mailproc:g:198.51.100.0/24*');
        assert.equal(pendingTtl.length, 1);
        assert.ok((pendingTtl[0] as number) > DAY - HOUR && (pendingTtl[0] as number) <= DAY, `unpassed: the retry window, got ${String(pendingTtl)}`);
        for (const v of [...(await ttl('mailproc:g:192.0.2.0/24*')), ...(await ttl('mailproc:c:*'))]) {
          assert.ok(v > 9 * DAY && v <= 10 * DAY, `passed triplet and client: expire, got ${v}`);
        }
        clock.advance(10 * DAY + 1);
        assert.equal(await attempt(svc, passed), DEFER, 'unused past expire: greylisted again');
        return;
      }
      clock.advance(DAY);
      await svc.service.maintain();
      assert.deepEqual(await count(), [1, 1], 'the unpassed triplet is gone after the retry window');
      clock.advance(10 * DAY - DAY);
      await svc.service.maintain();
      assert.deepEqual(await count(), [1, 1], 'not yet expired');
      clock.advance(DAY);
      await svc.service.maintain();
      assert.deepEqual(await count(), [0, 0], 'expired');
      assert.equal(await attempt(svc, passed), DEFER, 'forgotten: greylisted again');
    });

    // Redis expires keys by their TTLs: it has no sweep, so no such case (not a skip: nothing is missing).
    if (kind !== 'redis') test('maintenance goes through a database larger than one sweep chunk', async (t) => {
      const clock = manualClock();
      const svc = await greylistService(t, clock);
      if (svc === undefined) return;
      for (let i = 0; i < 2500; i++) await attempt(svc, { sender: `bulk${i}@elsewhere.test` });
      clock.advance(DAY + 1);
      await attempt(svc, { sender: 'fresh@elsewhere.test' });
      await svc.service.maintain();
      assert.deepEqual(await svc.policyState.counts(), { triplets: 1, clients: 0 });
      if (kind !== 'lmdb') return;
      const s = openState(svc.stateDir);
      t.after(() => s.close());
      assert.deepEqual([...s.greylist.getKeys({})].map((k) => k.split('\0')[1]), ['fresh@elsewhere.test']);
    });
  });
}
