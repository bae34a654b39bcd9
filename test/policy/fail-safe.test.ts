// Plugins fail safe (issue 8, point 7), through a real policy service (real
// compiled tables, real LMDB state, the TCP listener): a plugin that throws
// gets its declared failure action, not DUNNO for everything; a failure is
// logged and never cached; and keys longer than LMDB takes (a sender of
// 4076+ characters made the subscriber lookup throw, and a non-subscriber
// passed a closed list) are answered without an exception — lists,
// greylist triplets, rate-limit keys, user policies.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tables } from '../../src/db/index.js';
import { createLogger } from '../../src/log.js';
import { policyRequest, type PolicyPlugin } from '../../src/policy/index.js';
import { policyConfigSchema } from '../../src/config/index.js';
import { dnsblOptionsSchema } from '../../src/config/index.js';
import { createDnsblPlugin } from '../../src/policy/plugins/dnsbl.js';
import { createGreylistPlugin } from '../../src/policy/plugins/greylist.js';
import { createListsPlugin } from '../../src/policy/plugins/lists.js';
import { createRatelimitPlugin } from '../../src/policy/plugins/ratelimit.js';
import { createUserPolicyPlugin, type UserPolicyStore } from '../../src/policy/plugins/user-policy.js';
import { spfOptionsSchema } from '../../src/config/index.js';
import { createSpfPlugin } from '../../src/policy/plugins/spf.js';
import type { PolicyState } from '../../src/state/index.js';
import { manualClock, rcptRequest, startTestService, type TestService } from './policy-peer.js';

const REJECT = 'REJECT 5.7.1 Only subscribers may post to this list';
const FAIL_CLOSED = 'DEFER_IF_PERMIT 4.3.0 Temporary lookup failure, try again later';
const GREYLISTED = 'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again later';

/** Log lines that report trouble: an exception in a plugin, or anything at warn or error. */
const troubleIn = (svc: TestService): string[] => svc.logLines.filter((l) => /failed|error:|warn:|Error/.test(l));

/** Tables whose lookups throw while `broken.on` (as LMDB does on a bad disk), for the tables named. */
function failingTables(broken: { on: boolean }, only?: string): (t: Tables) => Tables {
  return (real) => ({
    ...real,
    lookup: ((table: string, keys: readonly string[]) => {
      if (broken.on && (only === undefined || table === only)) throw new Error(`MDB_PANIC: simulated failure reading ${table}`);
      return (real.lookup as (t: string, k: readonly string[]) => unknown)(table, keys);
    }) as Tables['lookup'],
  });
}

const LONG_SENDERS: { name: string; sender: string }[] = [
  { name: '4076 characters before the domain', sender: `${'a'.repeat(4076)}@elsewhere.test` },
  { name: 'exactly 4076 characters', sender: `${'b'.repeat(4076 - '@elsewhere.test'.length)}@elsewhere.test` },
  { name: '20 000 characters', sender: `${'c'.repeat(20_000)}@elsewhere.test` },
  { name: '3000 three-byte characters (9000 bytes)', sender: `${'€'.repeat(3000)}@elsewhere.test` },
  { name: 'a subscriber\'s address padded to 5000 characters', sender: `${'x'.repeat(5000)}alice@example.test` },
];

test('a sender of 4076+ characters posting to a closed list is refused over the socket, with no exception logged', async (t) => {
  const svc = await startTestService(t);
  const c = await svc.client();
  for (const s of LONG_SENDERS) {
    assert.equal(await c.request(rcptRequest({ sender: s.sender })), REJECT, s.name);
    assert.equal(await c.request(rcptRequest({ sender: s.sender, recipient: 'announce@example.test' })), 'DUNNO', `${s.name}, open list`);
  }
  assert.equal(await c.request(rcptRequest({ sender: 'alice@example.test' })), 'DUNNO', 'a subscriber still posts');
  assert.deepEqual(troubleIn(svc), []);
  c.destroy();
});

test('a recipient of 5000 characters is no list and has no policy: DUNNO from lists and userpolicy, no exception; a long extension still finds its list', async (t) => {
  const svc = await startTestService(t);
  const c = await svc.client();
  for (const recipient of [`${'d'.repeat(5000)}@example.test`, `dev@${'f'.repeat(5000)}.test`, `${'€'.repeat(2000)}@example.test`]) {
    assert.equal(await c.request(rcptRequest({ recipient })), 'DUNNO', recipient.slice(0, 20));
  }
  // user+ext@domain is too long for a key, user@domain is not: the list is found by the shorter key, as delivery finds it.
  assert.equal(await c.request(rcptRequest({ recipient: `dev+${'e'.repeat(5000)}@example.test` })), REJECT, 'a long extension of a closed list');
  assert.equal(await c.request(rcptRequest()), REJECT, 'the list is still closed to a normal non-subscriber');
  assert.deepEqual(troubleIn(svc), []);
  c.destroy();
});

test('greylisting works for long senders and clients: deferred first, passed after the delay, each triplet its own', async (t) => {
  const clock = manualClock();
  const svc = await startTestService(t, { config: { chain: ['greylist'], greylist: { auto_whitelist: 1 } }, now: clock.now });
  const ask = (over: Record<string, string>): Promise<string> =>
    svc.service.decide(policyRequest(rcptRequest({ recipient: 'alice@example.test', ...over }))).then((d) => d.action);
  const long = 'g'.repeat(5000);
  const cases = [
    { sender: `${long}1@elsewhere.test`, client_address: '192.0.2.1' },
    { sender: `${long}2@elsewhere.test`, client_address: '198.51.100.1' }, // shares 5000 characters with the first
    { sender: `${'€'.repeat(880)}@elsewhere.test`, client_address: '203.0.113.1' }, // 880 characters, 2655 bytes
    { sender: 'short@elsewhere.test', client_address: `unknown-${'h'.repeat(3000)}` }, // a client "network" too long for a key
  ];
  for (const c of cases) assert.equal(await ask(c), GREYLISTED, `first attempt: ${c.sender.slice(-20)} from ${c.client_address.slice(0, 20)}`);
  clock.advance(6 * 60_000);
  for (const c of cases) assert.equal(await ask(c), 'DUNNO', `retried after the delay: ${c.sender.slice(-20)}`);
  assert.equal(await ask({ sender: `${long}3@elsewhere.test`, client_address: '192.0.2.9' }), 'DUNNO', 'a network is whitelisted after its pass (auto_whitelist 1)');
  assert.equal(await ask({ sender: 'other@elsewhere.test', client_address: `unknown-${'h'.repeat(3000)}` }), 'DUNNO', 'the too-long client "network" too');
  assert.equal(await ask({ sender: `${long}3@elsewhere.test`, client_address: '233.252.0.1' }), GREYLISTED, 'another long sender is another triplet');
  assert.deepEqual(troubleIn(svc), []);
});

test('rate limits count long keys apart and correctly', async (t) => {
  const svc = await startTestService(t, {
    config: { chain: ['ratelimit'], ratelimit: { rules: [{ key: 'sender', limit: 2, window: '1h', action: 'DEFER_IF_PERMIT 4.7.1 slow down' }] } },
  });
  const ask = (sender: string): Promise<string> => svc.service.decide(policyRequest(rcptRequest({ sender }))).then((d) => d.action);
  const long = 'r'.repeat(6000);
  assert.deepEqual([await ask(`${long}1@x.test`), await ask(`${long}1@x.test`), await ask(`${long}1@x.test`)], ['DUNNO', 'DUNNO', 'DEFER_IF_PERMIT 4.7.1 slow down']);
  assert.equal(await ask(`${long}2@x.test`), 'DUNNO', 'a sender that shares 6000 characters is another key');
  assert.equal(await ask(`${long}1@X.TEST`), 'DEFER_IF_PERMIT 4.7.1 slow down', 'compared in lower case, as short keys are');
  assert.deepEqual(troubleIn(svc), []);
});

test('lists fails closed: a table failure answers DEFER_IF_PERMIT 4.3.0, logged, not cached; the next request is judged again', async (t) => {
  const broken = { on: true };
  // A cache TTL, so a cached failure would show.
  const svc = await startTestService(t, { config: { lists: { cache_ttl: '1h' } }, wrapTables: failingTables(broken, 'lists') });
  const c = await svc.client();
  assert.equal(await c.request(rcptRequest()), FAIL_CLOSED, 'a non-subscriber does not get through while the lookup fails');
  assert.equal(await c.request(rcptRequest({ sender: 'alice@example.test' })), FAIL_CLOSED, 'nor does anyone');
  assert.ok(svc.logLines.some((l) => /error: policy plugin lists check failed, answered "DEFER_IF_PERMIT 4\.3\.0 [^"]*": Error: MDB_PANIC/.test(l)), svc.logLines.join(''));
  broken.on = false;
  assert.equal(await c.request(rcptRequest()), REJECT, 'the failure was not cached');
  assert.equal(await c.request(rcptRequest({ sender: 'alice@example.test' })), 'DUNNO');
  c.destroy();
});

test('userpolicy fails closed; greylist fails open; on_error changes either', async (t) => {
  const broken = { on: true };
  // The uid table is read only for a recipient with a stored policy (is it still the owner's?).
  const withPolicies = async (svc: TestService): Promise<TestService> => {
    for (const address of ['alice@example.test', 'dev@example.test']) {
      await svc.service.userPolicies.put(address, { allow: [], deny: ['*@spam.test'], onlyAllowed: false, owner: 'mpt-alice', uid: 1000, updatedAt: new Date(0).toISOString() });
    }
    return svc;
  };
  const svc = await withPolicies(await startTestService(t, { config: { chain: ['userpolicy'] }, wrapTables: failingTables(broken, 'uid') }));
  assert.equal((await svc.service.decide(policyRequest(rcptRequest({ recipient: 'alice@example.test' })))).action, FAIL_CLOSED);
  assert.ok(svc.logLines.some((l) => /policy plugin userpolicy check failed, answered "DEFER_IF_PERMIT 4\.3\.0/.test(l)), svc.logLines.join(''));

  // With userpolicy in the chain, the greylist link asks the user-policy store whether the recipient opted out: that lookup failing is greylist's failure.
  const open = await withPolicies(await startTestService(t, {
    config: { chain: ['userpolicy', 'greylist', 'lists'], userpolicy: { on_error: 'DUNNO' } }, wrapTables: failingTables(broken, 'uid'),
  }));
  assert.equal((await open.service.decide(policyRequest(rcptRequest()))).action, REJECT, 'both failed open; lists still decides');
  assert.ok(open.logLines.some((l) => /policy plugin greylist check failed, answered "DUNNO"/.test(l)), open.logLines.join(''));

  const closed = await withPolicies(await startTestService(t, {
    config: { chain: ['userpolicy', 'greylist'], userpolicy: { on_error: 'DUNNO' }, greylist: { on_error: '451 4.3.0 Greylist unavailable' } },
    wrapTables: failingTables(broken, 'uid'),
  }));
  assert.equal((await closed.service.decide(policyRequest(rcptRequest()))).action, '451 4.3.0 Greylist unavailable');
});

test('a plugin handed in fails with its own declared action; one that declares none fails closed', async (t) => {
  const thrower = (name: string, extra: Partial<PolicyPlugin> = {}): PolicyPlugin => ({
    name, check: () => {
      throw new Error(`${name} bug`);
    }, ...extra,
  });
  const svc = await startTestService(t, {
    config: { chain: ['dnsbl', 'spf', 'lists'] },
    plugins: { dnsbl: thrower('dnsbl', { onError: 'DUNNO' }), spf: thrower('spf') },
  });
  assert.deepEqual(await svc.service.decide(policyRequest(rcptRequest())), { action: FAIL_CLOSED, plugin: 'spf' });
  assert.ok(svc.logLines.some((l) => /policy plugin dnsbl check failed, answered "DUNNO": Error: dnsbl bug/.test(l)));
});

test('each plugin declares its failure action: lists and userpolicy fail closed, the others open; dnsbl and spf take on_error from their options', async () => {
  const log = createLogger({ format: 'text', level: 'error', write: () => undefined });
  const unused = {} as never; // the plugins are built, not asked
  const dnsbl = createDnsblPlugin(dnsblOptionsSchema.parse({ servers: ['127.0.0.1:53'] }), { log });
  const spf = createSpfPlugin(spfOptionsSchema.parse({ servers: ['127.0.0.1:53'] }), { log });
  const dnsblClosed = createDnsblPlugin(dnsblOptionsSchema.parse({ servers: ['127.0.0.1:53'], on_error: FAIL_CLOSED }), { log });
  const spfClosed = createSpfPlugin(spfOptionsSchema.parse({ servers: ['127.0.0.1:53'], on_error: '451 4.3.0 later' }), { log });
  const plugins: [PolicyPlugin, string][] = [
    [createListsPlugin({ tables: unused, isSubscriber: () => false, recipientDelimiter: '+', rejectText: 'x', cacheTtlMs: 0 }), FAIL_CLOSED],
    [createUserPolicyPlugin({ store: unused as UserPolicyStore }), FAIL_CLOSED],
    [createGreylistPlugin({ state: unused as PolicyState, settings: unused, now: Date.now }), 'DUNNO'],
    [createRatelimitPlugin({ rules: [], maxKeys: 1, now: Date.now }), 'DUNNO'],
    [dnsbl, 'DUNNO'], [spf, 'DUNNO'], [dnsblClosed, FAIL_CLOSED], [spfClosed, '451 4.3.0 later'],
  ];
  try {
    for (const [p, want] of plugins) assert.equal(p.onError, want, p.name);
    assert.equal(dnsblOptionsSchema.safeParse({ on_error: 'NOPE' }).success, false, 'dnsbl.on_error is checked as an action');
    assert.equal(spfOptionsSchema.safeParse({ on_error: 'DUNNO\r\nOK' }).success, false, 'spf.on_error too');
  } finally {
    for (const [p] of plugins) await p.close?.();
  }
});

const ON_ERROR_CONFIG: { name: string; input: unknown; ok: boolean; path?: string }[] = [
  { name: 'lists.on_error takes an access(5) action', input: { lists: { on_error: 'DEFER 4.3.0 try later' } }, ok: true },
  { name: 'userpolicy.on_error too', input: { userpolicy: { on_error: 'DUNNO' } }, ok: true },
  { name: 'greylist.on_error too', input: { greylist: { on_error: '450 4.3.0 later' } }, ok: true },
  { name: 'ratelimit.on_error too', input: { ratelimit: { on_error: 'DEFER_IF_PERMIT 4.3.0 later' } }, ok: true },
  { name: 'a word Postfix does not know is refused, naming the key', input: { lists: { on_error: 'REFUSE 5.7.1 no' } }, ok: false, path: 'lists.on_error' },
  { name: 'a line break is refused', input: { greylist: { on_error: 'DUNNO\nOK' } }, ok: false, path: 'greylist.on_error' },
  { name: 'an unknown key beside it is still refused', input: { userpolicy: { on_eror: 'DUNNO' } }, ok: false, path: 'userpolicy' },
];

for (const c of ON_ERROR_CONFIG) {
  test(`config: ${c.name}`, () => {
    const r = policyConfigSchema.safeParse(c.input);
    assert.equal(r.success, c.ok, JSON.stringify(r.error?.issues));
    if (!c.ok) assert.ok(r.error?.issues.some((i) => i.path.join('.') === c.path), JSON.stringify(r.error?.issues));
  });
}
