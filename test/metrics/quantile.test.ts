// Percentiles read back from cumulative histogram buckets, as Prometheus's
// histogram_quantile() estimates them: linear inside the bucket, the highest
// finite bound for a rank in +Inf, nothing for an empty histogram.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { histogramQuantile, summarisePercentiles } from '../../src/metrics/index.js';

const B = (pairs: [number, number][]): { le: number; count: number }[] => pairs.map(([le, count]) => ({ le, count }));

const CASES: { why: string; q: number; buckets: [number, number][]; want: number | undefined }[] = [
  { why: 'no observations: no percentile', q: 0.5, buckets: [[0.1, 0], [1, 0], [Infinity, 0]], want: undefined },
  { why: 'one observation in the first bucket: the median is half way up it', q: 0.5, buckets: [[0.1, 1], [1, 1], [Infinity, 1]], want: 0.05 },
  { why: 'ten observations, half ≤ 0.1 and half in (0.1, 1]: the median is the first bound', q: 0.5, buckets: [[0.1, 5], [1, 10], [Infinity, 10]], want: 0.1 },
  { why: 'p90 of the same: 4/5 of the way through the second bucket', q: 0.9, buckets: [[0.1, 5], [1, 10], [Infinity, 10]], want: 0.82 },
  { why: 'a rank in +Inf reports the highest finite bound', q: 0.99, buckets: [[0.1, 5], [1, 9], [Infinity, 10]], want: 1 },
  { why: 'the buckets may come unsorted', q: 0.5, buckets: [[Infinity, 10], [1, 10], [0.1, 5]], want: 0.1 },
];

for (const c of CASES) {
  test(`histogramQuantile: ${c.why}`, () => {
    const got = histogramQuantile(c.q, B(c.buckets));
    if (c.want === undefined) assert.equal(got, undefined);
    else assert.ok(got !== undefined && Math.abs(got - c.want) < 1e-9, `got ${got}, want ${c.want}`);
  });
}

test('summarisePercentiles gives the count and p50 ≤ p90 ≤ p99, or the count alone when empty', () => {
  assert.deepEqual(summarisePercentiles(B([[1, 0], [Infinity, 0]])), { count: 0 });
  const s = summarisePercentiles(B([[0.01, 50], [0.1, 90], [1, 99], [Infinity, 100]]));
  assert.equal(s.count, 100);
  assert.ok(s.p50 !== undefined && s.p90 !== undefined && s.p99 !== undefined);
  assert.ok(s.p50 <= s.p90 && s.p90 <= s.p99, JSON.stringify(s));
  assert.equal(s.p99, 1);
});
