// Three policy nodes on one shared state engine (state.backend), as three MX
// hosts would run them: each its own policy service, state directory and
// loopback address (127.0.0.1, .2, .3), all on one real PostgreSQL and, in
// a second run, one real Redis (test/helpers/engines.ts; skipped naming the
// package when missing, failed under CI=true). The clock is the test's, so
// the greylist delay passes without sleeping.
//   - a triplet deferred by node 1 passes on node 2 after the delay, and is known on node 3;
//   - a rate limit of N per hour across the nodes refuses the N+1st request wherever it lands;
//   - the engine stopped: every node still answers, with the failure actions (greylist and
//     ratelimit open, lists from its local tables), logs the outage once, counts it in
//     metrics; the engine back: every node says so in its log and greylists again;
//   - an engine without the schema is refused, naming `mailproc state migrate`, which makes it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { stateConfigSchema } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { openPolicyState, type StateStore } from '../../src/state/index.js';
import { createMetrics, type Metrics } from '../../src/metrics/index.js';
import { testEngine, type EngineKind } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait.js';
import { manualClock, rcptRequest, startTestService, type PolicyClient, type TestService } from './policy-peer.js';

const HOUR = 3_600_000;
const DEFER = 'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again later';
const RATE = 'REJECT 5.7.1 Too many recipients for this account';
const N = 7;

const suite = (kind: EngineKind): void => {
  const engine = testEngine(kind);
  after(() => engine.dispose());

  test(`three nodes share greylisting and rate limits on ${kind}, and ride out the engine going away`, async (t) => {
    const backend = await engine.use(t);
    if (backend === undefined) return;
    const clock = manualClock();
    const nodes: { svc: TestService; client: PolicyClient; metrics: Metrics }[] = [];
    for (const host of ['127.0.0.1', '127.0.0.2', '127.0.0.3']) {
      const metrics = createMetrics();
      const svc = await startTestService(t, {
        backend, host, now: clock.now, metrics,
        // A deadline far above a loopback round trip, far below Postfix's smtpd_policy_service_timeout (100 s).
        stateConfig: { timeout: '2s', retry_interval: '200ms' },
        config: {
          chain: ['lists', 'ratelimit', 'greylist'],
          ratelimit: { rules: [{ name: 'per-account', key: 'sasl_username', limit: N, window: '1h', mode: 'fixed', action: RATE }] },
        },
      });
      const client = await svc.client();
      t.after(() => client.destroy());
      nodes.push({ svc, client, metrics });
    }
    const [n1, n2, n3] = nodes as [typeof nodes[0], typeof nodes[0], typeof nodes[0]];
    const triplet = { sender: 'carol@elsewhere.test', recipient: 'alice@example.test' };

    // Greylisting: one triplet, three nodes.
    assert.equal(await n1.client.request(rcptRequest(triplet)), DEFER, 'node 1: first attempt deferred');
    clock.advance(4 * 60_000);
    assert.equal(await n2.client.request(rcptRequest(triplet)), DEFER, 'node 2: before the delay, still deferred (node 1\'s first attempt counts)');
    clock.advance(60_000);
    assert.equal(await n2.client.request(rcptRequest(triplet)), 'DUNNO', 'node 2: after the delay it passes');
    assert.equal(await n3.client.request(rcptRequest(triplet)), 'DUNNO', 'node 3: the passed triplet is known');

    // Rate limit across nodes: N per hour, wherever the requests land.
    const passed = { ...triplet, sasl_username: 'bulk-sender' };
    const answers: string[] = [];
    for (let i = 0; i < N + 2; i++) answers.push(await (nodes[i % 3] as typeof n1).client.request(rcptRequest(passed)));
    assert.deepEqual(answers, [...Array<string>(N).fill('DUNNO'), RATE, RATE], `${N} pass across the three nodes, then every node refuses`);
    assert.equal(await n1.client.request(rcptRequest({ ...passed, sasl_username: 'someone-else' })), 'DUNNO', 'another account has its own count');
    clock.advance(HOUR);
    assert.equal(await n3.client.request(rcptRequest(passed)), 'DUNNO', 'a new hour, a new count');

    // The engine goes away: every node still answers, with the failure actions.
    await engine.stop();
    const fresh = { sender: 'dave@elsewhere.test', recipient: 'alice@example.test', sasl_username: 'bulk-sender' };
    for (let round = 0; round < 3; round++) {
      for (const n of nodes) {
        assert.equal(await n.client.request(rcptRequest(fresh)), 'DUNNO', 'greylist and ratelimit fail open');
        assert.equal(await n.client.request(rcptRequest({ recipient: 'dev@example.test', sender: 'stranger@elsewhere.test' })),
          'REJECT 5.7.1 Only subscribers may post to this list', 'lists answers from the local tables');
      }
    }
    for (const n of nodes) {
      const down = n.svc.logLines.filter((l) => /state engine .* unreachable/.test(l));
      assert.equal(down.length, 1, `one log line per outage on each node, got ${down.length}: ${down.join(' | ')}`);
      assert.ok(!n.svc.logLines.some((l) => /policy plugin (greylist|ratelimit) check failed/.test(l)), 'the chain does not log each failed request');
      const text = await n.metrics.registry.metrics();
      assert.match(text, new RegExp(`mailprocd_state_engine_outages_total\\{engine="${kind}"\\} 1\\b`));
      assert.match(text, new RegExp(`mailprocd_state_engine_refused_calls_total\\{engine="${kind}"\\} [1-9]`));
    }

    // Back again: each node finds it by itself and greylists as before.
    await engine.start();
    for (const n of nodes) {
      await waitFor('the node to see the engine back', () => (n.svc.logLines.some((l) => /state engine .* reachable again/.test(l)) ? true : undefined), 60_000);
    }
    const newer = { sender: 'erin@elsewhere.test', recipient: 'alice@example.test' };
    assert.equal(await n3.client.request(rcptRequest(newer)), DEFER, 'node 3 greylists again');
    clock.advance(5 * 60_000);
    assert.equal(await n1.client.request(rcptRequest(newer)), 'DUNNO', 'and node 1 lets the retry through');
  });
};

for (const kind of ['postgresql', 'redis'] as const) describe(`three nodes on ${kind}`, () => suite(kind));

test('a daemon refuses an engine without the schema, naming mailproc state migrate, which makes it (once), never printing the password', async (t) => {
  const engine = testEngine('postgresql');
  t.after(() => engine.dispose());
  const backend = await engine.use(t);
  if (backend === undefined) return;
  const admin = new pg.Client({ connectionString: backend });
  await admin.connect();
  await admin.query('CREATE DATABASE fresh');
  await admin.end();
  // Trust authentication ignores the password: it is here to be hidden.
  const url = backend.replace('mailproc@localhost/postgres', 'mailproc:topsecret@localhost/fresh');
  const log = createLogger({ format: 'text', level: 'error', write: () => undefined });
  await assert.rejects(openPolicyState({ config: stateConfigSchema.parse({ backend: url }), store: undefined as unknown as StateStore, log }),
    (err: Error) => /no policy state schema in this database: run `mailproc state migrate`/.test(err.message) && !err.message.includes('topsecret'));

  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-migrate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'mailprocd.yaml'), `state:\n  backend: ${JSON.stringify(url)}\n`);
  const migrate = (): { status: number | null; stdout: string; stderr: string } =>
    spawnSync(process.execPath, [join(process.cwd(), 'dist/src/cli/mailproc.js'), 'state', 'migrate', '--config', join(dir, 'mailprocd.yaml')], { cwd: dir, encoding: 'utf8' });
  const first = migrate();
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stdout, /^postgresql:\/\/mailproc:\*\*\*@localhost\/fresh\?host=\S+: policy state schema migrated from version 0 to 2\n$/);
  const again = migrate();
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /policy state schema already at version 2\n$/);
  assert.ok(!`${first.stdout}${first.stderr}${again.stdout}${again.stderr}`.includes('topsecret'));
  // A database a version-1 mailprocd made (version 2 added the batch functions and the change trigger).
  const old = new pg.Client({ connectionString: url });
  await old.connect();
  await old.query(`DROP TRIGGER mailproc_user_policy_changed ON mailproc_user_policy; DROP TRIGGER mailproc_user_policy_truncated ON mailproc_user_policy;
    DROP FUNCTION mailproc_user_policy_notify(); DROP FUNCTION mailproc_greylist_batch; DROP FUNCTION mailproc_rate_batch;
    UPDATE mailproc_schema SET version = 1`);
  await old.end();
  await assert.rejects(openPolicyState({ config: stateConfigSchema.parse({ backend: url }), store: undefined as unknown as StateStore, log }),
    /policy state schema version 1, this mailprocd needs 2: run `mailproc state migrate`/);
  const upgrade = migrate();
  assert.equal(upgrade.status, 0, upgrade.stderr);
  assert.match(upgrade.stdout, /policy state schema migrated from version 1 to 2\n$/);
  const ps = await openPolicyState({ config: stateConfigSchema.parse({ backend: url }), store: undefined as unknown as StateStore, log });
  t.after(() => ps.close());
  assert.deepEqual(await ps.greylist('192.0.2.0/24', 'k', Date.UTC(2026, 0, 1), { delayMs: 1, retryWindowMs: 10, expireMs: 100, autoWhitelist: 0 }), { kind: 'defer' });
});

for (const kind of ['postgresql', 'redis'] as const) {
  test(`a node started while its ${kind} is down answers with the failure actions and recovers when the engine comes`, async (t) => {
    const engine = testEngine(kind);
    t.after(() => engine.dispose());
    const backend = await engine.use(t);
    if (backend === undefined) return;
    await engine.stop();
    const svc = await startTestService(t, {
      backend, stateConfig: { timeout: '2s', retry_interval: '200ms' }, config: { chain: ['lists', 'userpolicy', 'greylist'] },
    });
    const c = await svc.client();
    t.after(() => c.destroy());
    const req = rcptRequest({ sender: 'frank@elsewhere.test', recipient: 'alice@example.test' });
    assert.equal(await c.request(req), 'DEFER_IF_PERMIT 4.3.0 Temporary lookup failure, try again later', 'userpolicy fails closed');
    assert.equal(svc.logLines.filter((l) => /state engine .* unreachable/.test(l)).length, 1);
    const down = svc.policyState.outage?.();
    assert.ok(down !== undefined, 'the outage is there for mailproc status');
    assert.ok(down.refused >= 1 && down.since <= Date.now() && down.reason.length > 0, JSON.stringify(down));
    await engine.start();
    await waitFor('the node to find the engine', () => (svc.logLines.some((l) => /state engine .* reachable again/.test(l)) ? true : undefined), 60_000);
    assert.equal(svc.policyState.outage?.(), undefined, 'no outage once the engine answers');
    assert.equal(await c.request(req), DEFER, 'greylisting works once the engine is there');
  });
}
