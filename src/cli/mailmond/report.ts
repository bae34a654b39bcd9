// What mailmond prints: the stage table of one probe (`check`), one log
// line per probe (`run` without a terminal) and the live screen (`run` in a
// terminal). Pure: strings in, strings out.
//
// Exports: STAGE_TEXT, formatCheck, formatProbeLine, formatScreen.
import { STAGES, type ProbeOutcome } from './probe.js';
import { QUANTILES, WINDOWS, type ProbeStats, type Result } from './stats.js';

/** What each stage measures, for the tables and docs/mailmond.md. */
export const STAGE_TEXT: Readonly<Record<(typeof STAGES)[number] | 'total', string>> = {
  mta: 'MTA: earliest Received (or the send) to mailprocd\'s end of DATA',
  before: 'mailprocd: lookups, spam check, planning',
  slot: 'waiting for one of the owner\'s delivery slots',
  transfer: 'to a worker (none for a probe)',
  work: 'writing (nothing for a probe)',
  total: 'sent to recorded',
};

const sec = (v: number): string => (v === Infinity ? 'inf' : Number.isNaN(v) ? '-' : v.toFixed(3));

/** `check`'s output: a Nagios-style status line with performance data, then the table. */
export function formatCheck(o: ProbeOutcome, thresholdMs: number, target: string): string {
  const limit = thresholdMs / 1000;
  if (o.result !== 'arrived') {
    return `CRITICAL: probe ${o.id} to ${target} ${o.result === 'unsent' ? 'not sent' : 'did not arrive'}: ${o.reason}\n`;
  }
  const s = o.stages;
  const perf = ['total', ...STAGES].map((k) => `${k}=${sec(s[k as keyof typeof s])}s${k === 'total' ? `;;${limit}` : ''}`).join(' ');
  const lines = [`OK: probe ${o.id} to ${target} arrived in ${sec(s.total)} s (threshold ${limit} s, mailprocd queue id ${o.queueId}) | ${perf}`];
  lines.push(`${'stage'.padEnd(9)}${'seconds'.padStart(9)}  what`);
  for (const k of [...STAGES, 'total'] as const) lines.push(`${k.padEnd(9)}${sec(s[k]).padStart(9)}  ${STAGE_TEXT[k]}`);
  return `${lines.join('\n')}\n`;
}

/** One line per probe for the log. */
export function formatProbeLine(o: ProbeOutcome, result: Result): string {
  if (o.result !== 'arrived') return `probe ${o.id} ${result}: ${o.reason}`;
  const s = o.stages;
  return `probe ${o.id} ${result} total=${sec(s.total)}s ${STAGES.map((k) => `${k}=${sec(s[k])}s`).join(' ')} queue_id=${o.queueId}`;
}

/** The live screen: windows by stage, then the last probes, newest first. */
export function formatScreen(stats: ProbeStats, recent: readonly string[], header: string, now: number): string {
  const cols = WINDOWS.flatMap((w) => QUANTILES.map((q) => `${w.name} p${q * 100}`));
  const lines = ['\x1b[H\x1b[2J' + header, ''];
  lines.push(`${'stage'.padEnd(9)}${cols.map((c) => c.padStart(10)).join('')}${'last'.padStart(10)}`);
  for (const k of ['total', ...STAGES] as const) {
    const values = WINDOWS.flatMap((w) => stats.quantiles(k, w.ms, now).values);
    const last = stats.last === undefined ? NaN : stats.last.stages?.[k] ?? Infinity;
    lines.push(`${k.padEnd(9)}${values.map((v) => sec(v).padStart(10)).join('')}${sec(last).padStart(10)}`);
  }
  const c = stats.counts;
  lines.push('', `probes: ${c.arrived} arrived, ${c.slow} slow, ${c.lost} lost, ${c.unsent} unsent`, '', ...recent);
  return `${lines.join('\n')}\n`;
}
