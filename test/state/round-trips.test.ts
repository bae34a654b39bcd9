// The request path's round trips to a one-statement-at-a-time engine
// (src/state/round-trips.ts), with sends the test settles by hand: a call
// goes out alone while a slot is free; calls that find every slot busy go
// out together, in arrival order, when one frees; the lane that has waited
// longest goes first; every caller gets its own answer, or its batch's error.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RoundTrips } from '../../src/state/round-trips.js';

interface Sent<A> { readonly args: readonly A[]; answer(results: readonly unknown[]): void; fail(err: Error): void }

function recorder<A>(): { sent: Sent<A>[]; send: (args: readonly A[]) => Promise<readonly unknown[]> } {
  const sent: Sent<A>[] = [];
  return {
    sent,
    send: (args) => new Promise((resolve, reject) => sent.push({ args, answer: resolve, fail: reject })),
  };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

test('a call goes out alone while a slot is free; the calls that wait go out together when one frees, each answered with its own result', async () => {
  const trips = new RoundTrips(2);
  const a = recorder<string>();
  const call = trips.lane<string, string>(a.send as (args: readonly string[]) => Promise<readonly string[]>);
  const answers = ['k1', 'k2', 'k3', 'k4', 'k5'].map((k) => call(k));
  assert.deepEqual(a.sent.map((s) => s.args), [['k1'], ['k2']], 'two slots: two calls out, one each');
  assert.equal(trips.busy, 2);
  a.sent[1]?.answer(['r2']);
  await settle();
  assert.deepEqual(a.sent.map((s) => s.args), [['k1'], ['k2'], ['k3', 'k4', 'k5']], 'the three that waited share the freed slot, in arrival order');
  a.sent[0]?.answer(['r1']);
  a.sent[2]?.answer(['r3', 'r4', 'r5']);
  assert.deepEqual(await Promise.all(answers), ['r1', 'r2', 'r3', 'r4', 'r5']);
  await settle();
  assert.equal(trips.busy, 0);
});

test('a batch is at most maxBatch calls; the rest wait for the next free slot', async () => {
  const trips = new RoundTrips(1);
  const a = recorder<number>();
  const call = trips.lane<number, number>(a.send as (args: readonly number[]) => Promise<readonly number[]>, 3);
  const answers = [0, 1, 2, 3, 4, 5, 6].map((n) => call(n));
  a.sent[0]?.answer([0]);
  await settle();
  a.sent[1]?.answer([1, 2, 3]);
  await settle();
  a.sent[2]?.answer([4, 5, 6]);
  assert.deepEqual(a.sent.map((s) => s.args), [[0], [1, 2, 3], [4, 5, 6]]);
  assert.deepEqual(await Promise.all(answers), [0, 1, 2, 3, 4, 5, 6]);
});

test('when a slot frees, the lane whose first waiting call is oldest goes first; lanes share the slots', async () => {
  const trips = new RoundTrips(1);
  const grey = recorder<string>();
  const policy = recorder<string>();
  const g = trips.lane<string, string>(grey.send as (args: readonly string[]) => Promise<readonly string[]>);
  const p = trips.lane<string, string>(policy.send as (args: readonly string[]) => Promise<readonly string[]>);
  const first = g('g1');
  const waiting = [p('p1'), g('g2'), p('p2')];
  assert.equal(grey.sent.length + policy.sent.length, 1, 'one slot: one statement in flight, whatever its lane');
  grey.sent[0]?.answer(['G1']);
  await settle();
  assert.deepEqual(policy.sent.map((s) => s.args), [['p1', 'p2']], 'p1 waited longest: its lane goes, with all its waiting calls');
  assert.equal(grey.sent.length, 1);
  policy.sent[0]?.answer(['P1', 'P2']);
  await settle();
  assert.deepEqual(grey.sent.map((s) => s.args), [['g1'], ['g2']]);
  grey.sent[1]?.answer(['G2']);
  assert.deepEqual([await first, ...(await Promise.all(waiting))], ['G1', 'P1', 'G2', 'P2']);
});

test('a batch that fails, throws, or answers the wrong count rejects each of its calls, and the next batch still goes', async () => {
  const trips = new RoundTrips(1);
  const a = recorder<string>();
  let throwNext = false;
  const call = trips.lane<string, string>((args) => {
    if (throwNext) {
      throwNext = false;
      throw new Error('bad arguments');
    }
    return a.send(args) as Promise<readonly string[]>;
  });
  const x = call('x');
  const rest = [call('y'), call('z')];
  a.sent[0]?.fail(new Error('connection reset'));
  await assert.rejects(x, /connection reset/);
  await settle();
  a.sent[1]?.answer(['only one']);
  for (const r of rest) await assert.rejects(r, /answered 1 results for 2 calls/);
  throwNext = true;
  await assert.rejects(call('w'), /bad arguments/);
  const after = call('v');
  await settle();
  a.sent[2]?.answer(['V']);
  assert.equal(await after, 'V');
  await settle();
  assert.equal(trips.busy, 0);
});

test('slots must be a positive integer', () => {
  assert.throws(() => new RoundTrips(0), /positive integer/);
});
