import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createMetrics, TOP_OWNERS } from '../../src/metrics/index.js';
import { parseExposition } from './exposition.js';

test('events move their counters and histograms with bounded labels', async () => {
  const m = createMetrics();
  m.messageAccepted('LMTP');
  m.messageAccepted('ESMTP');
  m.messageAccepted('LMTP');
  const timing = { beforeMs: 2, slotMs: 0, transferMs: 5, workMs: 40 };
  m.recipientLogged({ code: '2.0.0', relay: 'maildir+maildir', timing, delayMs: 50 });
  m.recipientLogged({ code: '4.3.0', relay: 'pipe', timing, delayMs: 3_000 });
  m.recipientLogged({ code: '5.4.7', relay: 'forward', delayMs: 432_000_000 });
  m.policyDecided(undefined, 'DUNNO', 0.0004);
  m.policyDecided('lists', 'REJECT 5.7.1 Not a subscriber', 0.002);
  m.tablesCompiled(true);
  m.tablesCompiled(false);
  m.connectionRefused('policy', 'connections');
  const x = parseExposition(await m.registry.metrics());
  assert.equal(x.value('mailprocd_messages_accepted_total', { protocol: 'lmtp' }), 2);
  assert.equal(x.value('mailprocd_messages_accepted_total', { protocol: 'esmtp' }), 1);
  assert.equal(x.value('mailprocd_recipients_total', { status: 'delivered', relay: 'maildir', dsn_class: '2' }), 1);
  assert.equal(x.value('mailprocd_recipients_total', { status: 'deferred', relay: 'pipe', dsn_class: '4' }), 1);
  assert.equal(x.value('mailprocd_recipients_total', { status: 'bounced', relay: 'forward', dsn_class: '5' }), 1);
  assert.equal(x.value('mailprocd_delivery_delay_seconds_count'), 3);
  assert.equal(x.value('mailprocd_delivery_delay_seconds_bucket', { le: '0.05' }), 1, 'le is inclusive: 50 ms is in the 0.05 s bucket');
  assert.equal(x.value('mailprocd_delivery_stage_seconds_count', { stage: 'work' }), 2, 'an outcome without timing adds no stage');
  assert.equal(x.value('mailprocd_delivery_stage_seconds_sum', { stage: 'work' }), 0.08);
  for (const stage of ['before', 'slot', 'transfer', 'work']) assert.equal(x.value('mailprocd_delivery_stage_seconds_count', { stage }), 2, stage);
  assert.equal(x.value('mailprocd_policy_requests_total', { plugin: 'none', action: 'DUNNO' }), 1);
  assert.equal(x.value('mailprocd_policy_requests_total', { plugin: 'lists', action: 'REJECT' }), 1);
  assert.equal(x.value('mailprocd_policy_request_duration_seconds_count', { plugin: 'lists' }), 1);
  assert.equal(x.value('mailprocd_table_compiles_total', { result: 'ok' }), 1);
  assert.equal(x.value('mailprocd_table_compiles_total', { result: 'error' }), 1);
  assert.equal(x.value('mailprocd_connections_refused_total', { listener: 'policy', limit: 'connections' }), 1);
});

test('without sources the gauges read zero; with them, the queue, the pool and the processes are read on scrape', async () => {
  const m = createMetrics();
  let x = parseExposition(await m.registry.metrics());
  assert.equal(x.value('mailprocd_queue_messages'), 0);
  assert.equal(x.value('mailprocd_workers'), 0);
  assert.ok(x.value('mailprocd_master_resident_bytes') > 0);

  const load = Array.from({ length: TOP_OWNERS + 3 }, (_, i) => ({ key: `${1000 + i}:100`, queued: i, active: 1 }));
  let depth = 7;
  m.watch({
    queue: { depth: () => depth },
    pool: { load: () => load, list: () => [{ pid: process.pid }, { pid: undefined }] },
    spam: { pids: () => [process.pid], parentPid: () => undefined },
    tables: { generation: () => 4 },
  });
  x = parseExposition(await m.registry.metrics());
  assert.equal(x.value('mailprocd_queue_messages'), 7);
  assert.equal(x.value('mailprocd_deliveries', { state: 'queued' }), load.reduce((n, l) => n + l.queued, 0));
  assert.equal(x.value('mailprocd_deliveries', { state: 'active' }), load.length);
  const owners = new Set(x.samples.filter((s) => s.name === 'mailprocd_owner_deliveries').map((s) => s.labels.owner));
  assert.equal(owners.size, TOP_OWNERS);
  assert.ok(owners.has(`${1000 + TOP_OWNERS + 2}:100`), 'the busiest owner is shown');
  assert.ok(!owners.has('1000:100'), 'the idlest is left out');
  assert.equal(x.value('mailprocd_workers'), 1, 'a worker without a pid (not spawned) is not counted');
  assert.ok(x.value('mailprocd_workers_resident_bytes') > 1024 * 1024, 'this process stands in for a worker: its VmRSS is read');
  assert.equal(x.value('mailprocd_spam_checkers'), 1);
  assert.equal(x.value('mailprocd_spam_checkers_resident_bytes', { process: 'parent' }), 0);
  assert.ok(x.value('mailprocd_spam_checkers_resident_bytes', { process: 'children' }) > 0);
  assert.equal(x.value('mailprocd_tables_generation'), 4);

  depth = 0;
  load.length = 1;
  x = parseExposition(await m.registry.metrics());
  assert.equal(x.value('mailprocd_queue_messages'), 0, 'gauges follow their source from scrape to scrape');
  assert.equal(new Set(x.samples.filter((s) => s.name === 'mailprocd_owner_deliveries').map((s) => s.labels.owner)).size, 1, 'an owner gone idle leaves the scrape');
});

test('two daemons in one process do not share counters', async () => {
  const a = createMetrics();
  const b = createMetrics();
  a.messageAccepted('LMTP');
  assert.equal(parseExposition(await b.registry.metrics()).value('mailprocd_messages_accepted_total'), 0);
});
