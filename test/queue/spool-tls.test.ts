// The TLS session of a message taken over STARTTLS travels through the spool
// (src/queue/spool.ts) to the queue's deliveries and their log lines; spool
// entries written before the field existed read and deliver as before, with
// no TLS said.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { logDelivery } from '../../src/local/index.js';
import type { Envelope } from '../../src/mail/envelope.js';
import { ok } from '../../src/mail/status.js';
import { QueueManager, type QueueReport } from '../../src/queue/manager.js';
import { Spool, type SpoolEnvelope } from '../../src/queue/spool.js';
import type { Relays } from '../../src/relay/index.js';
import { waitFor } from '../helpers/wait.js';

const TLS = { protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' };
const RAW = Buffer.from('Subject: x\r\n\r\nbody\r\n');

function base(id: string): SpoolEnvelope {
  return { id, sender: 's@remote.test', recipients: ['alice@example.test'], helo: 'client.test', clientAddress: '127.0.0.1', protocol: 'ESMTP', arrival: 1_700_000_000_000 };
}

test('an entry keeps its TLS session; one written before the field existed reads without it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-spool-tls-'));
  try {
    const spool = new Spool(dir, false);
    await spool.init();
    assert.equal((await spool.enqueue({ ...base('A1'), tls: TLS }, RAW)).code, '2.0.0');
    assert.deepEqual((await spool.read('A1')).envelope.tls, TLS);
    // Exactly what the version before TLS wrote.
    writeFileSync(join(spool.active, 'B2'), Buffer.concat([Buffer.from(`MAILPROC-SPOOL 1\n${JSON.stringify(base('B2'))}\n`), RAW]));
    const old = await spool.read('B2');
    assert.equal(old.envelope.tls, undefined);
    assert.deepEqual(old.raw, RAW);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the queue hands the TLS session to the delivery and to its log line; an old entry gets neither', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-spool-tls-'));
  try {
    const spool = new Spool(dir, false);
    await spool.init();
    await spool.enqueue({ ...base('A1'), tls: TLS }, RAW);
    writeFileSync(join(spool.active, 'B2'), Buffer.concat([Buffer.from(`MAILPROC-SPOOL 1\n${JSON.stringify(base('B2'))}\n`), RAW]));
    const config = resolveConfig({ paths: { state: dir } }, undefined, dir);
    const lines: string[] = [];
    const log = createLogger({ format: 'text', level: 'info', write: (l) => lines.push(l) });
    const envelopes = new Map<string, Envelope>();
    const reports: QueueReport[] = [];
    const queue = new QueueManager({
      spool, config: () => config, log, relays: {} as Relays,
      deliver: (env) => {
        envelopes.set(env.queueId, env);
        return Promise.resolve({ status: ok('Saved'), relay: 'maildir' });
      },
      report: (r) => {
        reports.push(r);
        logDelivery(log, r);
      },
    });
    assert.equal(await queue.start(), 2);
    await waitFor('both entries delivered and removed', async () => ((await spool.list()).length === 0 ? true : undefined));
    await queue.stop();
    assert.deepEqual(envelopes.get('A1')?.tls, TLS);
    assert.equal(envelopes.get('B2')?.tls, undefined);
    assert.deepEqual(reports.find((r) => r.queueId === 'A1')?.tls, TLS);
    assert.equal(reports.find((r) => r.queueId === 'B2')?.tls, undefined);
    assert.match(lines.find((l) => l.includes('A1: to=')) ?? '', /, dsn=2\.0\.0, tls=TLSv1\.3, cipher=TLS_AES_256_GCM_SHA384, status=sent \(Saved\)\n$/);
    assert.match(lines.find((l) => l.includes('B2: to=')) ?? '', /, dsn=2\.0\.0, status=sent \(Saved\)\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
