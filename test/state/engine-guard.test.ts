// The shared state engine's guard (src/state/engine-guard.ts), with ops the
// test controls: a missed deadline or a connection error opens an outage
// (logged once, counted), during which calls are refused at once without
// touching the engine; the probe ends it by itself; an answer the engine
// refused (a SQL error) is not an outage.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../../src/log.js';
import { StateUnavailableError } from '../../src/state/index.js';
import { EngineGuard } from '../../src/state/engine-guard.js';
import { waitFor } from '../helpers/wait.js';

class QueryRefused extends Error {}

function guardWith(probeOk: () => boolean): { guard: EngineGuard; lines: string[]; counts: { down: number; refused: number } } {
  const lines: string[] = [];
  const counts = { down: 0, refused: 0 };
  const guard = new EngineGuard({
    label: 'redis://db.test', kind: 'redis', timeoutMs: 50, retryMs: 10,
    log: createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) }),
    metrics: {
      messageAccepted: () => undefined, recipientLogged: () => undefined, policyDecided: () => undefined, tablesCompiled: () => undefined, connectionRefused: () => undefined,
      stateEngineDown: () => void counts.down++, stateEngineRefused: () => void counts.refused++,
    },
    probe: () => (probeOk() ? Promise.resolve() : Promise.reject(new Error('ECONNREFUSED'))),
    isOutage: (err) => !(err instanceof QueryRefused),
  });
  return { guard, lines, counts };
}

test('an engine that does not answer within the deadline opens an outage: refused at once, logged once, then found again', async (t) => {
  let up = false;
  const { guard, lines, counts } = guardWith(() => up);
  t.after(() => guard.close());
  await assert.rejects(guard.run(() => new Promise<never>(() => undefined)), StateUnavailableError);
  assert.equal(guard.available, false);
  let asked = 0;
  for (let i = 0; i < 5; i++) {
    await assert.rejects(guard.run(() => {
      asked++;
      return Promise.resolve(1);
    }), StateUnavailableError);
  }
  assert.equal(asked, 0, 'during the outage the engine is not asked');
  assert.equal(lines.filter((l) => /unreachable/.test(l)).length, 1, lines.join('\n'));
  assert.deepEqual(counts, { down: 1, refused: 5 });
  up = true;
  await waitFor('the guard to find the engine again', () => (guard.available ? true : undefined));
  assert.equal(await guard.run(() => Promise.resolve('answer')), 'answer');
  assert.match(lines.find((l) => /reachable again/.test(l)) ?? '', /5 calls were answered with failure actions/);
});

test('a connection error opens an outage; an answer the engine refused does not', async (t) => {
  const { guard, counts } = guardWith(() => false);
  t.after(() => guard.close());
  await assert.rejects(guard.run(() => Promise.reject(new QueryRefused('relation "mailproc_greylist" does not exist'))), QueryRefused);
  assert.equal(guard.available, true);
  await assert.rejects(guard.run(() => Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))), StateUnavailableError);
  assert.equal(guard.available, false);
  assert.equal(counts.down, 1);
});
