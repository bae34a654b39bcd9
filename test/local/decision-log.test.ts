// The decision log (src/local/decision-log.ts): what `mailproc rules log`
// reads — per address without extension, oldest first, bounded by count and
// age — kept in the real state store (LMDB in a temp directory).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { rulesConfigSchema, type RulesConfig } from '../../src/config/index.js';
import { createDecisionLog } from '../../src/local/index.js';
import { createLogger } from '../../src/log.js';
import type { Decision } from '../../src/mail/outcome.js';
import { openState } from '../../src/state/index.js';

const decision = (subject: string, address = 'alice@example.test'): Decision => ({
  address, sender: 'x@example.org', subject,
  copies: [{ origin: 'yours:1', rule: 'folder:Invoices stop', destination: 'maildir:/var/mail/alice/Maildir folder=Invoices', user: 'alice' }],
});

function setup(t: { after: (fn: () => unknown) => void }, config: Partial<RulesConfig> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-decisions-'));
  const state = openState(dir);
  t.after(async () => {
    await state.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const lines: string[] = [];
  const log = createLogger({ format: 'text', level: 'info', write: (l) => lines.push(l) });
  const c = { ...rulesConfigSchema.parse({}), ...config };
  return { log: createDecisionLog(state, () => c, log), lines };
}

test('decisions are read back per address, oldest first, the newest N when asked for fewer', async (t) => {
  const { log } = setup(t);
  const t0 = Date.UTC(2026, 11, 1);
  // Long queue ids and addresses too: keys of 64 characters and more must sort and range like short ones.
  const long = `${'l'.repeat(70)}@example.test`;
  for (let i = 0; i < 5; i++) await log.record(`Q${i}`, 'alice+tag@example.test', '2.0.0', decision(`m${i}`), new Date(t0 + i * 1000));
  await log.record('QB', 'bob@example.test', '2.0.0', decision('bob', 'bob@example.test'), new Date(t0));
  await log.record('QL', long, '2.0.0', decision('long', long), new Date(t0));
  assert.deepEqual(log.read('alice@example.test', 20).map((e) => e.subject), ['m0', 'm1', 'm2', 'm3', 'm4']);
  assert.deepEqual(log.read('alice@example.test', 2).map((e) => e.subject), ['m3', 'm4']);
  assert.deepEqual(log.read('bob@example.test', 20).map((e) => e.queueId), ['QB']);
  assert.deepEqual(log.read(long, 20).map((e) => e.queueId), ['QL']);
  const [first] = log.read('alice@example.test', 5);
  assert.deepEqual(first, {
    time: new Date(t0).toISOString(), queueId: 'Q0', recipient: 'alice+tag@example.test', sender: 'x@example.org', subject: 'm0', status: '2.0.0',
    copies: decision('m0').copies,
  });
});

test('an address keeps at most rules.log_entries decisions (trimmed every 64 records), and prune drops those past rules.log_max_age', async (t) => {
  const { log } = setup(t, { log_entries: 3, log_max_age: 10 * 86_400_000 });
  const now = Date.now();
  for (let i = 0; i < 65; i++) await log.record(`A${i}`, 'alice@example.test', '2.0.0', decision(`m${i}`), new Date(now - 1000 + i));
  assert.deepEqual(log.read('alice@example.test', 1000).map((e) => e.subject), ['m62', 'm63', 'm64']);

  // bob's first record trims bob (so it goes first here); the two old ones are for prune.
  await log.record('NEW', 'bob@example.test', '2.0.0', decision('new', 'bob@example.test'), new Date(now));
  await log.record('OLD1', 'bob@example.test', '2.0.0', decision('old1', 'bob@example.test'), new Date(now - 20 * 86_400_000));
  await log.record('OLD2', 'bob@example.test', '2.0.0', decision('old2', 'bob@example.test'), new Date(now - 11 * 86_400_000));
  assert.deepEqual(log.read('bob@example.test', 1000).map((e) => e.subject), ['old1', 'old2', 'new']);
  assert.equal(await log.prune(now), 2);
  assert.deepEqual(log.read('bob@example.test', 1000).map((e) => e.subject), ['new']);
  assert.equal(log.read('alice@example.test', 1000).length, 3);
});
