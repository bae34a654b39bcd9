// The plugin chain (src/policy/chain.ts): order, DUNNO passing on, failing
// plugins answered with their failure action (fail open or closed), the
// per-plugin answer cache and its TTL (with a clock the test moves), and
// maintenance.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../../src/log.js';
import { PolicyChain, type ChainLink } from '../../src/policy/chain.js';
import { policyRequest, type PolicyAction, type PolicyPlugin, type PolicyRequest } from '../../src/policy/index.js';
import { FAIL_CLOSED } from '../../src/policy/types.js';
import { manualClock, rcptRequest, startTestService } from './policy-peer.js';

interface FakePlugin extends PolicyPlugin {
  calls: number;
  maintained: number[];
}

function fake(name: string, answer: (req: PolicyRequest) => PolicyAction | undefined | Promise<PolicyAction | undefined>, extra: Partial<PolicyPlugin> = {}): FakePlugin {
  const p: FakePlugin = {
    name,
    calls: 0,
    maintained: [],
    check: async (req) => {
      p.calls++;
      return answer(req);
    },
    maintain: (now) => {
      p.maintained.push(now);
      return Promise.resolve();
    },
    ...extra,
  };
  return p;
}

function makeChain(links: (PolicyPlugin | ChainLink)[], o: { now?: () => number; cacheSize?: number } = {}): { chain: PolicyChain; lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) });
  const chain = new PolicyChain(links.map((l) => ('plugin' in l ? l : { plugin: l, cacheTtlMs: 0 })), {
    log, now: o.now ?? Date.now, cacheSize: o.cacheSize ?? 100,
  });
  return { chain, lines };
}

const REQ = policyRequest(rcptRequest());

const ORDER_CASES: { name: string; answers: (PolicyAction | undefined)[]; want: string; wantPlugin: string | undefined; asked: number }[] = [
  { name: 'the first decisive answer wins and later plugins are not asked', answers: [undefined, 'REJECT 5.7.1 no', 'OK'], want: 'REJECT 5.7.1 no', wantPlugin: 'p1', asked: 2 },
  { name: 'DUNNO, in any case and spacing, passes on', answers: ['DUNNO', ' dunno ', 'DEFER_IF_PERMIT 4.7.1 later'], want: 'DEFER_IF_PERMIT 4.7.1 later', wantPlugin: 'p2', asked: 3 },
  { name: 'an empty action passes on', answers: ['', 'OK'], want: 'OK', wantPlugin: 'p1', asked: 2 },
  { name: 'nobody objecting is DUNNO', answers: [undefined, 'DUNNO'], want: 'DUNNO', wantPlugin: undefined, asked: 2 },
  { name: 'PREPEND is decisive: Postfix takes one answer', answers: ['PREPEND X-Test: 1', 'REJECT 5.7.1 no'], want: 'PREPEND X-Test: 1', wantPlugin: 'p0', asked: 1 },
];

for (const c of ORDER_CASES) {
  test(`chain: ${c.name}`, async () => {
    const plugins = c.answers.map((a, i) => fake(`p${i}`, () => a));
    const { chain } = makeChain(plugins);
    assert.deepEqual(await chain.decide(REQ), { action: c.want, plugin: c.wantPlugin });
    assert.equal(plugins.reduce((n, p) => n + p.calls, 0), c.asked);
  });
}

const FAILURES: { name: string; check: () => PolicyAction | undefined | Promise<PolicyAction | undefined>; logged: RegExp }[] = [
  { name: 'throws', check: () => { throw new Error('bug in plugin'); }, logged: /Error: bug in plugin/ },
  { name: 'rejects', check: () => Promise.reject(new Error('async bug')), logged: /Error: async bug/ },
  { name: 'returns an action with a line break', check: () => 'REJECT 5.7.1 two\nlines', logged: /cannot be sent/ },
  { name: 'returns no string', check: () => 42 as unknown as PolicyAction, logged: /cannot be sent: 42/ },
];

const ON_ERROR: { name: string; declared?: PolicyAction; configured?: PolicyAction; want: PolicyAction; wantPlugin: string }[] = [
  { name: 'declared DUNNO (fail open): the next plugin decides', declared: 'DUNNO', want: 'REJECT 5.7.1 decided', wantPlugin: 'next' },
  { name: 'declared fail closed: its action ends the chain', declared: FAIL_CLOSED, want: FAIL_CLOSED, wantPlugin: 'broken' },
  { name: 'declared nothing: fails closed', want: FAIL_CLOSED, wantPlugin: 'broken' },
  { name: 'the link\'s (config\'s) on_error wins over the declaration', declared: FAIL_CLOSED, configured: 'DUNNO', want: 'REJECT 5.7.1 decided', wantPlugin: 'next' },
  { name: 'any action can be configured', declared: 'DUNNO', configured: '451 4.3.0 try later', want: '451 4.3.0 try later', wantPlugin: 'broken' },
];

for (const f of FAILURES) {
  for (const c of ON_ERROR) {
    test(`a plugin that ${f.name}, ${c.name}; logged with the answer`, async () => {
      const broken = fake('broken', f.check, c.declared !== undefined ? { onError: c.declared } : {});
      const { chain, lines } = makeChain([{ plugin: broken, cacheTtlMs: 0, onError: c.configured }, fake('next', () => 'REJECT 5.7.1 decided')]);
      assert.deepEqual(await chain.decide(REQ), { action: c.want, plugin: c.wantPlugin });
      const wantLine = new RegExp(`error: policy plugin broken check failed, answered ${JSON.stringify(c.configured ?? c.declared ?? FAIL_CLOSED).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `);
      assert.ok(lines.some((l) => wantLine.test(l) && f.logged.test(l)), `${wantLine} in ${lines.join('')}`);
    });
  }
}

/** A plugin whose check answers at once (no promise), as the lists plugin does. */
function syncFake(name: string, answer: () => PolicyAction | undefined): FakePlugin {
  const p = fake(name, answer);
  p.check = (): PolicyAction | undefined => {
    p.calls++;
    return answer();
  };
  return p;
}

test('plugins that answer at once get an answer at once; an asynchronous one on the way makes it a promise', async () => {
  const dunno = syncFake('first', () => undefined);
  const reject = syncFake('lists', () => 'REJECT 5.7.1 members only');
  const now = makeChain([dunno, reject]).chain.decideNow(REQ);
  assert.ok(!(now instanceof Promise), 'no promise when every plugin asked answered at once');
  assert.deepEqual(now, { action: 'REJECT 5.7.1 members only', plugin: 'lists' });
  assert.deepEqual(makeChain([syncFake('a', () => undefined)]).chain.decideNow(REQ), { action: 'DUNNO', plugin: undefined });

  const later = makeChain([syncFake('a', () => undefined), fake('async', () => undefined), syncFake('b', () => 'OK')]).chain.decideNow(REQ);
  assert.ok(later instanceof Promise);
  assert.deepEqual(await later, { action: 'OK', plugin: 'b' });
});

test('a plugin that throws at once gets its failure action at once; the next plugin still decides after a fail-open one', () => {
  const throws = syncFake('broken', () => {
    throw new Error('sync bug');
  });
  const closed = syncFake('closed', () => {
    throw new Error('sync bug');
  });
  const bad = syncFake('bad', () => 'REJECT 5.7.1 a\r\nb');
  const { chain, lines } = makeChain([{ plugin: throws, cacheTtlMs: 0, onError: 'DUNNO' }, { plugin: bad, cacheTtlMs: 0, onError: 'DUNNO' }, syncFake('next', () => 'REJECT 5.7.1 decided')]);
  assert.deepEqual(chain.decideNow(REQ), { action: 'REJECT 5.7.1 decided', plugin: 'next' });
  assert.ok(lines.some((l) => /error: policy plugin broken check failed, answered "DUNNO": Error: sync bug/.test(l)), lines.join(''));
  assert.ok(lines.some((l) => /policy plugin bad check failed.*cannot be sent/.test(l)), lines.join(''));
  assert.deepEqual(makeChain([closed, syncFake('next', () => 'OK')]).chain.decideNow(REQ), { action: FAIL_CLOSED, plugin: 'closed' });
});

test('a plugin that throws on every request is not logged on every request', async () => {
  const clock = manualClock();
  const { chain, lines } = makeChain([fake('broken', () => Promise.reject(new Error('again')))], { now: clock.now });
  for (let i = 0; i < 50; i++) assert.equal((await chain.decide(REQ)).action, FAIL_CLOSED, 'every one answered, logged or not');
  assert.equal(lines.length, 1);
  clock.advance(10_000);
  await chain.decide(REQ);
  assert.equal(lines.length, 2);
  assert.match(lines[1] ?? '', /\(49 more since the last report\)/);
});

test('a cache hit does not ask the plugin again within the TTL, and does after it', async () => {
  const clock = manualClock();
  const p = fake('cached', (req) => (req.get('sender') === 'bad@x' ? 'REJECT 5.7.1 bad' : undefined), { cacheKey: (req) => req.get('sender') });
  const { chain } = makeChain([{ plugin: p, cacheTtlMs: 30_000 }], { now: clock.now });
  const bad = policyRequest(rcptRequest({ sender: 'bad@x' }));
  const good = policyRequest(rcptRequest({ sender: 'good@x' }));
  assert.equal((await chain.decide(bad)).action, 'REJECT 5.7.1 bad');
  assert.equal((await chain.decide(good)).action, 'DUNNO');
  assert.equal(p.calls, 2);
  clock.advance(29_999);
  assert.equal((await chain.decide(bad)).action, 'REJECT 5.7.1 bad');
  assert.equal((await chain.decide(good)).action, 'DUNNO', 'no opinion is cached too');
  assert.equal(p.calls, 2, 'both answered from the cache');
  clock.advance(1);
  assert.equal((await chain.decide(bad)).action, 'REJECT 5.7.1 bad');
  assert.equal(p.calls, 3, 'expired: asked again');
});

test('no cache key, a TTL of 0 or a throw: nothing is cached', async () => {
  let fail = true;
  const flaky = fake('flaky', () => {
    if (fail) throw new Error('once');
    return 'OK';
  }, { cacheKey: () => 'k' });
  const uncached = fake('uncached', () => undefined, { cacheKey: () => undefined });
  const zero = fake('zero', () => undefined, { cacheKey: () => 'k' });
  const { chain } = makeChain([{ plugin: uncached, cacheTtlMs: 60_000 }, { plugin: zero, cacheTtlMs: 0 }, { plugin: flaky, cacheTtlMs: 60_000 }]);
  assert.equal((await chain.decide(REQ)).action, FAIL_CLOSED);
  fail = false;
  assert.equal((await chain.decide(REQ)).action, 'OK', 'the failure was not cached');
  assert.equal((await chain.decide(REQ)).action, 'OK');
  assert.deepEqual([uncached.calls, zero.calls, flaky.calls], [3, 3, 2]);
});

test('the cache keeps at most cache_size answers per plugin, dropping the oldest', async () => {
  const p = fake('small', () => undefined, { cacheKey: (req) => req.get('sender') });
  const { chain } = makeChain([{ plugin: p, cacheTtlMs: 60_000 }], { cacheSize: 2 });
  for (const s of ['a', 'b', 'c']) await chain.decide(policyRequest({ sender: s }));
  assert.equal(p.calls, 3);
  await chain.decide(policyRequest({ sender: 'c' }));
  await chain.decide(policyRequest({ sender: 'b' }));
  assert.equal(p.calls, 3, 'b and c still cached');
  await chain.decide(policyRequest({ sender: 'a' }));
  assert.equal(p.calls, 4, 'a was dropped');
});

test('maintenance runs every plugin with the time, logs a failing one and goes on', async () => {
  const a = fake('a', () => undefined);
  const broken = fake('broken', () => undefined, { maintain: () => Promise.reject(new Error('disk on fire')) });
  const c = fake('c', () => undefined);
  const { chain, lines } = makeChain([a, broken, c]);
  await chain.maintain(12345);
  assert.deepEqual([a.maintained, c.maintained], [[12345], [12345]]);
  assert.ok(lines.some((l) => /policy plugin broken maintenance failed: Error: disk on fire/.test(l)));
});

test('over a socket, a throwing plugin still leaves the client with a reply', async (t) => {
  const broken = fake('dnsbl', () => {
    throw new Error('resolver exploded');
  }, { onError: 'DUNNO' });
  const svc = await startTestService(t, { config: { chain: ['dnsbl', 'lists'] }, plugins: { dnsbl: broken } });
  const c = await svc.client();
  assert.equal(await c.request(rcptRequest()), 'REJECT 5.7.1 Only subscribers may post to this list');
  assert.equal(await c.request(rcptRequest({ sender: 'alice@example.test' })), 'DUNNO');
  assert.ok(svc.logLines.some((l) => /policy plugin dnsbl check failed, answered "DUNNO"/.test(l)));
  c.destroy();
});

test('a decisive answer is logged with the plugin, client, sender and recipient', async (t) => {
  const svc = await startTestService(t);
  const c = await svc.client();
  await c.request(rcptRequest());
  assert.ok(svc.logLines.some((l) => /lists: action=REJECT 5\.7\.1 Only subscribers may post to this list, client=192\.0\.2\.10, from=<carol@elsewhere\.test>, to=<dev@example\.test>, state=RCPT/.test(l)), svc.logLines.join(''));
  c.destroy();
});
