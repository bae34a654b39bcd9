// The fair scheduler's promises, with tasks that finish when the test says so.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FairScheduler } from '../../src/workers/scheduler.js';

/** A task that records when it starts and finishes when release() is called. */
function gate(log: string[], name: string): { task: () => Promise<void>; release: () => void } {
  let release = (): void => undefined;
  const done = new Promise<void>((r) => { release = r; });
  return { task: async () => { log.push(name); await done; }, release: () => release() };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('a key never runs more tasks at once than its cap', async () => {
  const log: string[] = [];
  const s = new FairScheduler({ perKey: () => 2, global: 10 });
  const gates = Array.from({ length: 5 }, (_, i) => gate(log, `a${i}`));
  for (const g of gates) s.submit('a', g.task);
  assert.deepEqual(log, ['a0', 'a1']);
  assert.equal(s.queued('a'), 3);
  gates[0]?.release();
  await tick();
  assert.deepEqual(log, ['a0', 'a1', 'a2']);
});

test('a backlog of one key does not hold up another key', async () => {
  const log: string[] = [];
  const s = new FairScheduler({ perKey: () => 1, global: 10 });
  const a = Array.from({ length: 100 }, (_, i) => gate(log, `a${i}`));
  for (const g of a) s.submit('a', g.task);
  const b = gate(log, 'b0');
  s.submit('b', b.task);
  assert.deepEqual(log, ['a0', 'b0'], 'b starts at once although a has 99 queued');
});

test('slots go round robin across keys with work when the global cap is reached', async () => {
  const log: string[] = [];
  const s = new FairScheduler({ perKey: () => 10, global: 2 });
  const gates = new Map<string, ReturnType<typeof gate>>();
  // Two long tasks fill both slots while the backlog is submitted.
  for (const [i, k] of ['x', 'x', 'a', 'a', 'a', 'a', 'b', 'b', 'c'].entries()) {
    const g = gate(log, `${k}${i}`);
    gates.set(`${k}${i}`, g);
    s.submit(k, g.task);
  }
  assert.deepEqual(log, ['x0', 'x1']);
  for (let i = 0; i < 7; i++) {
    gates.get(log[i] as string)?.release();
    await tick();
  }
  assert.deepEqual(log, ['x0', 'x1', 'a2', 'b6', 'c8', 'a3', 'b7', 'a4', 'a5']);
});

test('a failing task releases its slot and is reported', async () => {
  const errors: unknown[] = [];
  const s = new FairScheduler({ perKey: () => 1, global: 1 }, (e) => errors.push(e));
  let second = false;
  s.submit('a', () => Promise.reject(new Error('boom')));
  s.submit('a', async () => { second = true; });
  await tick();
  await tick();
  assert.equal(second, true);
  assert.equal((errors[0] as Error).message, 'boom');
  assert.equal(s.active(), 0);
});
