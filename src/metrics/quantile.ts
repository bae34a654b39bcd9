// Delay percentiles read back from the daemon's own histograms, for
// `mailproc status`: the same estimate Prometheus's histogram_quantile()
// makes (linear inside the bucket the rank falls in; a rank in the +Inf
// bucket reports the highest finite bound), so the status and a dashboard
// agree. Since the daemon started; a restart starts from zero.
//
// Exports: histogramQuantile (pure), summarisePercentiles (pure: one
// histogram's cumulative buckets → count, p50, p90, p99), Percentiles,
// DelaySummary. Never throws: no observations gives count 0 and no
// percentiles.

/** One histogram's percentiles, in seconds (bucket estimates, not exact values). */
export interface Percentiles {
  readonly count: number;
  readonly p50?: number;
  readonly p90?: number;
  readonly p99?: number;
}

/** The delivery delay (delay=) and each stage of delays=a/b/c/d. */
export interface DelaySummary {
  readonly total: Percentiles;
  readonly stages: Readonly<Record<'before' | 'slot' | 'transfer' | 'work', Percentiles>>;
}

/** A cumulative bucket: observations ≤ le (le may be +Infinity). */
export interface Bucket {
  readonly le: number;
  readonly count: number;
}

/** The q-quantile (0 ≤ q ≤ 1) of cumulative buckets, or undefined with no observations. */
export function histogramQuantile(q: number, buckets: readonly Bucket[]): number | undefined {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted[sorted.length - 1]?.count ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const b of sorted) {
    if (b.count >= rank && b.count > 0) {
      if (b.le === Infinity) return lower;
      const inBucket = b.count - below;
      return inBucket <= 0 ? b.le : lower + (b.le - lower) * ((rank - below) / inBucket);
    }
    if (b.le !== Infinity) lower = b.le;
    below = b.count;
  }
  return lower;
}

export function summarisePercentiles(buckets: readonly Bucket[]): Percentiles {
  const count = buckets.reduce((n, b) => Math.max(n, b.count), 0);
  if (count === 0) return { count };
  const at = (q: number): number => histogramQuantile(q, buckets) ?? 0;
  return { count, p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}
