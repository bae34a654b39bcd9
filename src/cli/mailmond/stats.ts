// What `mailmond run` keeps of its probes: every outcome of the last hour
// and counters since start, and what is derived from them: p50 and p99 of
// each stage over the 5-minute and 1-hour windows, and the Prometheus text
// exposition of it all. A probe that did not arrive counts as an infinite
// delay in the windows and sets the last delay to +Inf: an alert, never a
// gap in the graph (a series that just stops is what alerting rules miss).
//
// Exports: ProbeStats, WINDOWS, QUANTILES, percentile, formatMetrics. Pure
// (the clock is passed in); never throws.
import { STAGES, type ProbeOutcome, type ProbeStages } from './probe.js';

export const WINDOWS = [{ name: '5m', ms: 300_000 }, { name: '1h', ms: 3_600_000 }] as const;
export const QUANTILES = [0.5, 0.99] as const;
const LONGEST_MS = Math.max(...WINDOWS.map((w) => w.ms));
const ALL_STAGES = ['total', ...STAGES] as const;
export type Result = 'arrived' | 'slow' | 'lost' | 'unsent';
const RESULTS: readonly Result[] = ['arrived', 'slow', 'lost', 'unsent'];

interface Sample {
  readonly at: number;
  readonly stages: ProbeStages | undefined;
}

/** Nearest-rank percentile of sorted values (q in 0..1); NaN for none. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

/** arrived, or slow when its total is past the threshold; lost and unsent as they are. */
export function classify(o: ProbeOutcome, thresholdMs: number): Result {
  if (o.result !== 'arrived') return o.result;
  return o.stages.total * 1000 > thresholdMs ? 'slow' : 'arrived';
}

export class ProbeStats {
  private samples: Sample[] = [];
  readonly counts: Record<Result, number> = { arrived: 0, slow: 0, lost: 0, unsent: 0 };
  last: { readonly at: number; readonly result: Result; readonly stages?: ProbeStages } | undefined;
  /** Since start, per stage, of the probes that arrived: a summary's _sum and _count. */
  private readonly sums = new Map<string, { sum: number; count: number }>(ALL_STAGES.map((k) => [k, { sum: 0, count: 0 }]));
  /** mailprocd's own count of what its probe addresses ignored, from the last reply that had it. */
  ignored: Readonly<Record<string, number>> = {};

  add(o: ProbeOutcome, result: Result, now: number): void {
    this.counts[result]++;
    const stages = o.result === 'arrived' ? o.stages : undefined;
    if (stages !== undefined) {
      for (const k of ALL_STAGES) {
        const t = this.sums.get(k) as { sum: number; count: number };
        t.sum += stages[k];
        t.count++;
      }
    }
    this.samples.push({ at: now, stages });
    this.last = { at: now, result, ...(stages !== undefined ? { stages } : {}) };
    const oldest = now - LONGEST_MS;
    while ((this.samples[0]?.at ?? Infinity) < oldest) this.samples.shift();
  }

  /** p50/p99 of a stage over a window: a probe that never arrived is +Inf in every stage. */
  quantiles(stage: (typeof ALL_STAGES)[number], windowMs: number, now: number): { n: number; values: number[] } {
    const values = this.samples.filter((s) => s.at >= now - windowMs).map((s) => s.stages?.[stage] ?? Infinity).sort((a, b) => a - b);
    return { n: values.length, values: QUANTILES.map((q) => percentile(values, q)) };
  }

  /** Prometheus text exposition format 0.0.4. */
  formatMetrics(now: number, thresholdMs: number): string {
    const out: string[] = [];
    const num = (v: number): string => (Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : String(Number(v.toFixed(6))));
    out.push('# HELP mailmond_probes_total Probes sent, by what became of them (slow: arrived past the threshold; lost: not arrived within it; unsent: the MTA did not take it).');
    out.push('# TYPE mailmond_probes_total counter');
    for (const r of RESULTS) out.push(`mailmond_probes_total{result="${r}"} ${this.counts[r]}`);
    out.push('# HELP mailmond_last_delay_seconds The last probe\'s delay by stage; +Inf when it did not arrive.');
    out.push('# TYPE mailmond_last_delay_seconds gauge');
    if (this.last !== undefined) for (const s of ALL_STAGES) out.push(`mailmond_last_delay_seconds{stage="${s}"} ${num(this.last.stages?.[s] ?? Infinity)}`);
    out.push('# HELP mailmond_last_probe_timestamp_seconds When the last probe finished (arrived or given up).');
    out.push('# TYPE mailmond_last_probe_timestamp_seconds gauge');
    if (this.last !== undefined) out.push(`mailmond_last_probe_timestamp_seconds ${num(this.last.at / 1000)}`);
    out.push('# HELP mailmond_delay_seconds Probe delay by stage: quantiles over a sliding window (a probe that did not arrive counts as +Inf), sum and count of the arrived ones since start.');
    out.push('# TYPE mailmond_delay_seconds summary');
    for (const w of WINDOWS) {
      for (const s of ALL_STAGES) {
        const q = this.quantiles(s, w.ms, now);
        const labels = `stage="${s}",window="${w.name}"`;
        QUANTILES.forEach((quantile, i) => out.push(`mailmond_delay_seconds{${labels},quantile="${quantile}"} ${num(q.values[i] as number)}`));
        const t = this.sums.get(s) as { sum: number; count: number };
        out.push(`mailmond_delay_seconds_sum{${labels}} ${num(t.sum)}`, `mailmond_delay_seconds_count{${labels}} ${t.count}`);
      }
    }
    out.push('# HELP mailmond_window_probes Probes finished within each window.');
    out.push('# TYPE mailmond_window_probes gauge');
    for (const w of WINDOWS) out.push(`mailmond_window_probes{window="${w.name}"} ${this.quantiles('total', w.ms, now).n}`);
    out.push('# HELP mailmond_threshold_seconds Past this a probe is an alert.');
    out.push('# TYPE mailmond_threshold_seconds gauge');
    out.push(`mailmond_threshold_seconds ${num(thresholdMs / 1000)}`);
    out.push('# HELP mailmond_mailprocd_probes_ignored Messages mailprocd\'s probe addresses ignored since it started (forged, replayed, unkeyed), as it last said.');
    out.push('# TYPE mailmond_mailprocd_probes_ignored gauge');
    for (const [reason, n] of Object.entries(this.ignored)) out.push(`mailmond_mailprocd_probes_ignored{reason="${reason}"} ${n}`);
    return `${out.join('\n')}\n`;
  }
}
