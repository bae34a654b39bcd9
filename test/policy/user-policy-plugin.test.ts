// The userpolicy plugin and its store inside a real policy service (real
// compiled tables, real LMDB state), written directly as the per-user
// sockets would: which policy a recipient gets, that a policy follows its
// address's owner, greylisting on and off beside the chain's greylist, the
// size at end of message, and that a write applies to the next request —
// with the policies in LMDB, on a real PostgreSQL and on a real Redis
// (test/helpers/engines.ts; skipped naming the package when missing, failed
// under CI=true).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { openPolicyState, openState } from '../../src/state/index.js';
import { compileTables, openTables } from '../../src/db/index.js';
import { createLogger } from '../../src/log.js';
import { policyRequest, startPolicyService, type PolicyService, type UserPolicyRecord } from '../../src/policy/index.js';
import { policyConfigSchema, stateConfigSchema, type PolicyConfigInput } from '../../src/config/index.js';
import { ENGINE_KINDS, testEngine, type TestEngine } from '../helpers/engines.js';
import { rcptRequest } from './policy-peer.js';

const UID = `
alice@users.test   mpt-alice
bob@users.test     mpt-bob
@catchall.test     vmail
`;

async function start(t: TestContext, engine: TestEngine, config: PolicyConfigInput = {}): Promise<PolicyService | undefined> {
  const backend = await engine.use(t);
  if (backend === undefined) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-userpolicy-'));
  mkdirSync(join(dir, 'src'));
  writeFileSync(join(dir, 'src', 'rules'), '@users.test  discard\n@catchall.test  discard\n');
  writeFileSync(join(dir, 'src', 'uid'), UID);
  const report = await compileTables({ sourceDir: join(dir, 'src'), dbDir: join(dir, 'db') });
  assert.ok(report.ok, JSON.stringify(report));
  const tables = openTables(join(dir, 'db'));
  const state = openState(join(dir, 'state-db'));
  const log = createLogger({ format: 'text', level: 'error', write: () => undefined });
  const policyState = await openPolicyState({ config: stateConfigSchema.parse({ backend }), store: state, log });
  const service = await startPolicyService({
    config: policyConfigSchema.parse({ listen: [], ...config }), tables, state, policyState, baseDir: dir, recipientDelimiter: '+', log,
  });
  t.after(async () => {
    await service.close();
    await policyState.close();
    await state.close();
    await tables.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return service;
}

const policy = (p: Partial<UserPolicyRecord>): UserPolicyRecord => ({
  allow: [], deny: [], onlyAllowed: false, owner: 'mpt-alice', uid: 1000, updatedAt: new Date(0).toISOString(), ...p,
});

const ask = (svc: PolicyService, over: Record<string, string>): Promise<string> => svc.decide(policyRequest(rcptRequest(over))).then((d) => d.action);
const DENY = "REJECT 5.7.1 Sender refused by the recipient's policy";


const suite = (engine: TestEngine): void => {
  after(() => engine.dispose());

  test('userpolicy is in the default chain, after lists', async (t) => {
    const svc = await start(t, engine);
    if (svc === undefined) return;
    assert.deepEqual(policyConfigSchema.parse(undefined).chain, ['lists', 'userpolicy']);
    assert.equal(svc.userPoliciesApplied, true);
  });

  test('a recipient gets its own address\'s policy, else its address without the extension', async (t) => {
    const svc = await start(t, engine);
    if (svc === undefined) return;
    await svc.userPolicies.put('alice@users.test', policy({ deny: ['*@spam.test'] }));
    await svc.userPolicies.put('alice+lists@users.test', policy({ deny: ['*@lists.test'] }));
    assert.equal(await ask(svc, { sender: 'x@spam.test', recipient: 'alice@users.test' }), DENY);
    assert.equal(await ask(svc, { sender: 'x@spam.test', recipient: 'Alice+Other@Users.Test' }), DENY, 'no policy of its own: the base address\'s');
    assert.equal(await ask(svc, { sender: 'x@spam.test', recipient: 'alice+lists@users.test' }), 'DUNNO', 'its own policy, not the base one');
    assert.equal(await ask(svc, { sender: 'x@lists.test', recipient: 'alice+lists@users.test' }), DENY);
    assert.equal(await ask(svc, { sender: 'x@spam.test', recipient: 'bob@users.test' }), 'DUNNO', 'another address is untouched');
    assert.equal(await ask(svc, { sender: 'x@spam.test', recipient: 'alice@users.test', protocol_state: 'MAIL' }), 'DUNNO', 'only at RCPT');
  });

  test('a policy is in force only while the uid table gives the address to the user who set it', async (t) => {
    const svc = await start(t, engine);
    if (svc === undefined) return;
    await svc.userPolicies.put('bob@users.test', policy({ deny: ['*@spam.test'], owner: 'mpt-alice' }));
    assert.equal(await ask(svc, { sender: 'x@spam.test', recipient: 'bob@users.test' }), 'DUNNO');
    assert.equal(await svc.userPolicies.get('bob@users.test'), undefined);
    assert.deepEqual(await svc.userPolicies.listByUid(1000), []);
    assert.equal(svc.userPolicies.ownerEntry('bob+x@users.test')?.value, 'mpt-bob', 'owner by the user@domain key');
    assert.equal(svc.userPolicies.ownerEntry('carol@catchall.test'), undefined, 'a catch-all makes nobody an owner');
    assert.equal(await svc.userPolicies.remove('bob@users.test'), true, 'a stale record can still be removed');
  });

  test('a change applies to the very next request, and removing it too', async (t) => {
    const svc = await start(t, engine);
    if (svc === undefined) return;
    const req = { sender: 'x@spam.test', recipient: 'alice@users.test' };
    assert.equal(await ask(svc, req), 'DUNNO');
    await svc.userPolicies.put('alice@users.test', policy({ deny: ['*@spam.test'] }));
    assert.equal(await ask(svc, req), DENY);
    await svc.userPolicies.remove('alice@users.test');
    assert.equal(await ask(svc, req), 'DUNNO');
  });

  test('greylisting turned on by a user works without greylist in the chain, for that user only', async (t) => {
    const svc = await start(t, engine);
    if (svc === undefined) return;
    await svc.userPolicies.put('alice@users.test', policy({ greylist: true }));
    assert.equal(await ask(svc, { recipient: 'alice@users.test' }), 'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again later');
    assert.equal(await ask(svc, { recipient: 'bob@users.test' }), 'DUNNO');
  });

  test('with greylist in the chain, a user who turned it off is not greylisted, the others are', async (t) => {
    const svc = await start(t, engine, { chain: ['lists', 'userpolicy', 'greylist'] });
    if (svc === undefined) return;
    await svc.userPolicies.put('alice@users.test', policy({ greylist: false }));
    assert.equal(await ask(svc, { recipient: 'alice@users.test' }), 'DUNNO');
    assert.equal(await ask(svc, { recipient: 'alice+x@users.test' }), 'DUNNO', 'her extensions too');
    assert.equal(await ask(svc, { recipient: 'bob@users.test' }), 'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again later');
  });

  test('the size limit is checked at RCPT with SIZE= and at end of message with one recipient', async (t) => {
    const svc = await start(t, engine);
    if (svc === undefined) return;
    await svc.userPolicies.put('alice@users.test', policy({ maxSize: 1024 }));
    const TOO_BIG = '552 5.2.3 Message too large for the recipient (limit 1024 bytes)';
    assert.equal(await ask(svc, { recipient: 'alice@users.test', size: '2048' }), TOO_BIG);
    assert.equal(await ask(svc, { recipient: 'alice@users.test', size: '0' }), 'DUNNO', 'no SIZE= at RCPT');
    assert.equal(await ask(svc, { recipient: 'alice@users.test', size: '2048', protocol_state: 'END-OF-MESSAGE' }), TOO_BIG);
    assert.equal(await ask(svc, { recipient: '', size: '2048', protocol_state: 'END-OF-MESSAGE' }), 'DUNNO', 'several recipients: Postfix names none');
  });

  test('without userpolicy in the chain, policies are stored but not applied', async (t) => {
    const svc = await start(t, engine, { chain: ['lists'] });
    if (svc === undefined) return;
    assert.equal(svc.userPoliciesApplied, false);
    await svc.userPolicies.put('alice@users.test', policy({ deny: ['*@spam.test'] }));
    assert.equal(await ask(svc, { sender: 'x@spam.test', recipient: 'alice@users.test' }), 'DUNNO');
  });
};

for (const kind of ENGINE_KINDS) describe(`user policies on ${kind}`, () => suite(testEngine(kind)));
