// What the queue tells a delivery about repeats (src/queue/manager.ts): the
// same redelivery key on every attempt of a recipient; no check on the first
// attempt of an entry this process spooled (nothing can carry its tokens yet),
// a check on every retry and on every entry found in the spool at start (the
// outcome of an earlier attempt may have been lost with the process).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import type { Envelope } from '../../src/mail/envelope.js';
import type { RecipientOutcome } from '../../src/mail/outcome.js';
import { redeliveryKey, type Redelivery } from '../../src/mail/redelivery.js';
import { ok, status } from '../../src/mail/status.js';
import { QueueManager } from '../../src/queue/manager.js';
import { Spool } from '../../src/queue/spool.js';

interface Call { readonly id: string; readonly address: string; readonly redelivery: Redelivery }

function queueOn(spool: Spool, answer: (c: Call, n: number) => RecipientOutcome): { queue: QueueManager; calls: Call[]; next: () => Promise<Call> } {
  const calls: Call[] = [];
  const waiters: ((c: Call) => void)[] = [];
  const config = resolveConfig({ queue: { retry_min: '10ms', retry_max: '20ms' } }, undefined, spool.dir);
  const queue = new QueueManager({
    spool, config: () => config, log: createLogger({ format: 'text', level: 'error', write: () => undefined }),
    relays: {} as never, report: () => undefined,
    deliver: (env: Envelope, _message, address, redelivery) => {
      const c = { id: env.queueId, address, redelivery };
      calls.push(c);
      const o = answer(c, calls.length);
      waiters.shift()?.(c);
      return Promise.resolve(o);
    },
  });
  const next = (): Promise<Call> => new Promise((resolve) => waiters.push(resolve));
  return { queue, calls, next };
}

const entry = (id: string): Parameters<Spool['enqueue']>[0] => ({
  id, sender: 's@remote.test', recipients: ['Bob@Example.test'], helo: 'client.test', clientAddress: '127.0.0.1', protocol: 'ESMTP', arrival: Date.now(),
});
const RAW = Buffer.from('Subject: x\n\nbody\n');

test('a fresh entry is delivered without a check, its retry with one, under the same key', { timeout: 30_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailprocd-redelivery-queue-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const spool = new Spool(dir, false);
  await spool.init();
  const { queue, next } = queueOn(spool, (_c, n) => ({ status: n === 1 ? status('4.3.0', 'worker died') : ok('delivered'), relay: 'maildir' }));
  await spool.enqueue(entry('A1'), RAW);
  const firstCall = next();
  const secondCall = next();
  queue.schedule('A1', 0);
  const first = await firstCall;
  const second = await secondCall;
  assert.deepEqual(first.redelivery, { key: redeliveryKey('A1', 'bob@example.test'), check: false });
  assert.deepEqual(second.redelivery, { key: first.redelivery.key, check: true });
  await queue.stop();
});

test('an entry found in the spool at start is checked on its first attempt', { timeout: 30_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailprocd-redelivery-queue-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const spool = new Spool(dir, false);
  await spool.init();
  await spool.enqueue(entry('B2'), RAW);
  const { queue, next } = queueOn(spool, () => ({ status: ok('delivered'), relay: 'maildir' }));
  const call = next();
  assert.equal(await queue.start(), 1);
  assert.deepEqual((await call).redelivery, { key: redeliveryKey('B2', 'bob@example.test'), check: true });
  await queue.stop();
});
