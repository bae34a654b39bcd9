// The lists plugin against real compiled tables and a real policy state:
// closed lists take subscribers only, open and moderated lists take anyone,
// other recipients and other protocol states are no business of it.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { policyRequest, syncListSubscribers } from '../../src/policy/index.js';
import { rcptRequest, startTestService } from './policy-peer.js';

const REJECT = 'REJECT 5.7.1 Only subscribers may post to this list';

const CASES: { name: string; sender: string; recipient: string; state?: string; want: string }[] = [
  { name: 'a subscriber of a closed list is accepted', sender: 'alice@example.test', recipient: 'dev@example.test', want: 'DUNNO' },
  { name: 'the other subscriber too', sender: 'bob@example.test', recipient: 'dev@example.test', want: 'DUNNO' },
  { name: 'a non-subscriber is rejected with 5.7.1', sender: 'carol@elsewhere.test', recipient: 'dev@example.test', want: REJECT },
  { name: 'the sender is compared without regard to case', sender: 'ALICE@Example.Test', recipient: 'dev@example.test', want: 'DUNNO' },
  { name: 'the recipient is looked up without regard to case', sender: 'carol@elsewhere.test', recipient: 'DEV@EXAMPLE.TEST', want: REJECT },
  { name: 'a recipient extension still finds the list (user@domain key)', sender: 'carol@elsewhere.test', recipient: 'dev+digest@example.test', want: REJECT },
  { name: 'a subscriber with an extension is another address', sender: 'alice+lists@example.test', recipient: 'dev@example.test', want: REJECT },
  { name: 'the null sender is nobody\'s subscriber', sender: '', recipient: 'dev@example.test', want: REJECT },
  { name: 'an open list takes anyone', sender: 'carol@elsewhere.test', recipient: 'announce@example.test', want: 'DUNNO' },
  { name: 'a moderated list takes a non-subscriber (the manager holds it for moderation)', sender: 'carol@elsewhere.test', recipient: 'mods@example.test', want: 'DUNNO' },
  { name: 'a recipient that is no list is no business of the plugin', sender: 'carol@elsewhere.test', recipient: 'alice@example.test', want: 'DUNNO' },
  { name: 'other protocol states are ignored', sender: 'carol@elsewhere.test', recipient: 'dev@example.test', state: 'END-OF-MESSAGE', want: 'DUNNO' },
  { name: 'a closed list with no subscribers takes nobody', sender: 'alice@example.test', recipient: 'synced@example.test', want: REJECT },
];

test('lists: the table of senders and recipients', async (t) => {
  const svc = await startTestService(t);
  for (const c of CASES) {
    const req = policyRequest(rcptRequest({ sender: c.sender, recipient: c.recipient, ...(c.state ? { protocol_state: c.state } : {}) }));
    assert.equal((await svc.service.decide(req)).action, c.want, c.name);
  }
});

test('the shipped db/lists closes dev@example.test to all but alice and bob', async (t) => {
  const shipped = readFileSync(fileURLToPath(new URL('../../../db/lists', import.meta.url)), 'utf8');
  const svc = await startTestService(t, { lists: shipped });
  const c = await svc.client();
  assert.equal(await c.request(rcptRequest({ sender: 'alice@example.test' })), 'DUNNO');
  assert.equal(await c.request(rcptRequest({ sender: 'bob@example.test' })), 'DUNNO');
  assert.equal(await c.request(rcptRequest({ sender: 'carol@example.test' })), REJECT);
  c.destroy();
});

test('the reject text is configurable', async (t) => {
  const svc = await startTestService(t, { config: { lists: { reject_text: 'Members only; see https://lists.example.test/' } } });
  assert.equal((await svc.service.decide(policyRequest(rcptRequest()))).action, 'REJECT 5.7.1 Members only; see https://lists.example.test/');
});

test('subscribers synced from the list manager may post beside the table\'s own', async (t) => {
  const svc = await startTestService(t); // lists.cache_ttl 0 by default: a sync applies to the next request
  const post = (sender: string, recipient = 'synced@example.test'): Promise<string> =>
    svc.service.decide(policyRequest(rcptRequest({ sender, recipient }))).then((d) => d.action);
  assert.equal(await post('dave@elsewhere.test'), REJECT);
  const file = `${svc.dir}/synced.txt`;
  writeFileSync(file, '# synced\nDave@Elsewhere.test\n');
  assert.deepEqual(await syncListSubscribers({ list: 'synced@example.test', source: { kind: 'file', path: file }, dbDir: svc.stateDir }), {
    ok: true, list: 'synced@example.test', subscribers: 1, added: 1, removed: 0, skipped: [],
  });
  await new Promise((r) => setTimeout(r, 5)); // the daemon's read snapshot is renewed on the next timer turn
  assert.equal(await post('dave@elsewhere.test'), 'DUNNO');
  assert.equal(await post('DAVE@elsewhere.test'), 'DUNNO');
  assert.equal(await post('dave@elsewhere.test', 'dev@example.test'), REJECT, 'a roster belongs to one list');
  assert.equal(await post('alice@example.test', 'dev@example.test'), 'DUNNO', 'the table\'s subscribers still count');
});

test('answers are cached for cache_ttl: a table change shows after it, not before', async (t) => {
  let now = 1_000_000;
  const svc = await startTestService(t, { config: { lists: { cache_ttl: '30s' } }, now: () => now });
  const req = policyRequest(rcptRequest({ sender: 'dave@elsewhere.test', recipient: 'synced@example.test' }));
  assert.equal((await svc.service.decide(req)).action, REJECT);
  const file = `${svc.dir}/r.txt`;
  writeFileSync(file, 'dave@elsewhere.test\n');
  assert.equal((await syncListSubscribers({ list: 'synced@example.test', source: { kind: 'file', path: file }, dbDir: svc.stateDir })).ok, true);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal((await svc.service.decide(req)).action, REJECT, 'still the cached answer');
  now += 30_000;
  assert.equal((await svc.service.decide(req)).action, 'DUNNO');
});
