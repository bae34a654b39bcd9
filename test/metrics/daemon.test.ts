// The metrics endpoint of a real mailprocd: the counters move by exactly what
// the deliveries did — one LMTP message delivered to a Maildir, one deferred
// by a pipe exiting 75 (EX_TEMPFAIL), one taken in over SMTP and bounced by a
// pipe exiting 67 (EX_NOUSER) — and a policy request; the scrape is read by
// a strict line-format check and by Prometheus's own `promtool check metrics`
// (Debian package prometheus). Every wait is for a log line or a reply, never
// for time to pass: the counters move before the log line is written.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { test } from 'node:test';
import { createTransport } from 'nodemailer';
import { requireProgram } from '../helpers/components.js';
import { startDaemon } from '../helpers/daemon.js';
import { RawClient, lmtpDeliver } from '../helpers/raw-client.js';
import { startSmtpSink } from '../helpers/smtp-sink.js';
import { parseExposition, type Exposition } from './exposition.js';

const RULES = (mail: string): string => `
alice@example.test  maildir:${mail}/alice/Maildir/
temp@q.test   pipe:"/bin/sh -c 'cat >/dev/null; exit 75'"
perm@q.test   pipe:"/bin/sh -c 'cat >/dev/null; echo 5.1.1 no such mailbox here; exit 67'"
`;

async function get(port: number, path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
}

async function scrape(port: number): Promise<{ text: string; x: Exposition }> {
  const r = await get(port, '/metrics');
  assert.equal(r.status, 200);
  return { text: r.body, x: parseExposition(r.body) };
}

/** One policy request over TCP; the reply's action. */
function policyRequest(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.endsWith('\n\n')) {
        s.end();
        resolve(got.trim());
      }
    });
    s.on('error', reject);
    s.write('request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nsender=s@remote.test\nrecipient=alice@example.test\n\n');
  });
}

test('delivered, deferred and bounced recipients, accepted messages and policy requests move their counters by exactly one each', { timeout: 120_000 }, async (t) => {
  const sink = await startSmtpSink();
  const d = await startDaemon({
    rules: RULES('${MAIL}'),
    config: {
      metrics: { listen: ['127.0.0.1:0'] },
      // No retry during the test: the deferred LMTP recipient is the client's to retry, and nothing else is queued twice.
      queue: { retry_min: '1h', retry_max: '2h' },
      relay: { smtp: `127.0.0.1:${sink.port}` },
      log: { level: 'info' },
    },
  }).catch(async (err: unknown) => { await sink.close(); throw err; });
  try {
    assert.ok(d.metricsPort > 0, `the start line names the metrics port:\n${d.logs.join('\n')}`);
    const before = await scrape(d.metricsPort);
    assert.ok(before.x.value('mailprocd_table_compiles_total', { result: 'ok' }) >= 1, 'the tables compiled at start are counted');
    assert.ok(before.x.value('mailprocd_tables_generation') >= 1);

    assert.match(await lmtpDeliver(d.lmtpPort, 'alice@example.test'), /^250 /);
    assert.match(await lmtpDeliver(d.lmtpPort, 'temp@q.test'), /^4\d\d /);
    const smtp = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test' } as never);
    await smtp.sendMail({ envelope: { from: 'sender@remote.test', to: ['perm@q.test'] }, raw: 'From: sender@remote.test\r\nSubject: bounce me\r\n\r\nbody\r\n' });
    smtp.close();
    await d.waitForLog(/to=<perm@q\.test>.*status=bounced/);
    assert.match(await policyRequest(d.policyPort), /^action=DUNNO$/);

    const after = await scrape(d.metricsPort);
    const delta = (name: string, labels?: Record<string, string>): number => after.x.value(name, labels) - before.x.value(name, labels);
    assert.equal(delta('mailprocd_messages_accepted_total', { protocol: 'lmtp' }), 2);
    assert.equal(delta('mailprocd_messages_accepted_total', { protocol: 'esmtp' }), 1);
    assert.equal(delta('mailprocd_recipients_total', { status: 'delivered', relay: 'maildir', dsn_class: '2' }), 1);
    assert.equal(delta('mailprocd_recipients_total', { status: 'deferred', relay: 'pipe', dsn_class: '4' }), 1);
    assert.equal(delta('mailprocd_recipients_total', { status: 'bounced', relay: 'pipe', dsn_class: '5' }), 1);
    assert.equal(delta('mailprocd_recipients_total'), 3, 'one count per delivery log line, no more');
    assert.equal(delta('mailprocd_delivery_delay_seconds_count'), 3);
    for (const stage of ['before', 'slot', 'transfer', 'work']) assert.equal(delta('mailprocd_delivery_stage_seconds_count', { stage }), 3, stage);
    assert.equal(delta('mailprocd_policy_requests_total', { plugin: 'none', action: 'DUNNO' }), 1);
    assert.equal(delta('mailprocd_policy_request_duration_seconds_count', { plugin: 'none' }), 1);
    for (const [name, type] of [['mailprocd_queue_messages', 'gauge'], ['mailprocd_workers', 'gauge'], ['mailprocd_owner_deliveries', 'gauge'], ['mailprocd_workers_resident_bytes', 'gauge']] as const) {
      assert.equal(after.x.types.get(name), type, name);
    }
    assert.ok(after.x.value('mailprocd_master_resident_bytes') > 0);

    const page = await get(d.metricsPort, '/metrics');
    assert.match(page.type, /^text\/plain; version=0\.0\.4/);
    assert.equal((await get(d.metricsPort, '/')).status, 404);
    assert.equal((await get(d.metricsPort, '/metrics/x')).status, 404);
    assert.equal((await get(d.metricsPort, '/metrics', 'POST')).status, 405);

    await t.test('the scrape passes Prometheus\'s own check (promtool check metrics)', (st) => {
      const promtool = requireProgram(st, 'promtool', 'prometheus');
      if (promtool === undefined) return;
      const r = spawnSync(promtool, ['check', 'metrics'], { input: after.text, encoding: 'utf8' });
      assert.equal(r.status, 0, `promtool check metrics: ${r.stdout}${r.stderr}`);
    });
  } finally {
    await d.stop();
    d.cleanup();
    await sink.close();
  }
});

test('a connection refused by limits.connections_per_client is counted for its listener', { timeout: 120_000 }, async () => {
  const d = await startDaemon({ config: { metrics: { listen: ['127.0.0.1:0'] }, limits: { connections_per_client: 1 }, policy: { listen: [] } } });
  const held = await RawClient.open({ port: d.smtpPort });
  try {
    assert.equal((await held.reply()).code, 220, 'the first connection is let in');
    const second = await RawClient.open({ port: d.smtpPort });
    assert.equal((await second.reply()).code, 421, 'the second is turned away');
    second.close();
    const { x } = await scrape(d.metricsPort);
    assert.equal(x.value('mailprocd_connections_refused_total', { listener: 'smtp', limit: 'connections_per_client' }), 1);
    assert.equal(x.value('mailprocd_connections_refused_total'), 1);
  } finally {
    held.close();
    await d.stop();
    d.cleanup();
  }
});

test('metrics.listen: [] serves nothing and says nothing of metrics', { timeout: 120_000 }, async () => {
  const d = await startDaemon({ config: { policy: { listen: [] } } });
  try {
    assert.equal(d.metricsPort, 0);
    assert.ok(!d.logs.some((l) => /metrics/.test(l)), d.logs.join('\n'));
  } finally {
    await d.stop();
    d.cleanup();
  }
});
