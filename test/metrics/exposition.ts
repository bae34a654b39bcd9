// A strict reader of the Prometheus text exposition format (0.0.4), for the
// metrics tests: every line is a HELP, a TYPE, a blank line or a sample of a
// family declared by TYPE before it; names and label names are valid, label
// values properly escaped, values numbers; a histogram's buckets are
// cumulative, end at le="+Inf" and equal its _count. Throws naming the line
// on anything else, and returns the samples for the tests to read.
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Exposition {
  readonly types: ReadonlyMap<string, string>;
  readonly samples: readonly Sample[];
  /** The sum of a series' samples whose labels include `labels` (0 when none). */
  value(name: string, labels?: Record<string, string>): number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const VALUE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$/;
const SUFFIXES: Record<string, readonly string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['', '_sum', '_count'] };

function parseLabels(text: string, where: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`${where}: label without "="`);
    const name = text.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`);
    if (text[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`);
    let j = eq + 2;
    let value = '';
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') {
        const next = text[++j];
        if (next === 'n') value += '\n';
        else if (next === '\\' || next === '"') value += next;
        else throw new Error(`${where}: bad escape \\${next ?? ''}`);
      } else if (text[j] === '\n') throw new Error(`${where}: raw line break in a label value`);
      else value += text[j];
    }
    if (j >= text.length) throw new Error(`${where}: unterminated label value`);
    if (name in out) throw new Error(`${where}: label ${name} given twice`);
    out[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (i < text.length) throw new Error(`${where}: expected "," between labels`);
  }
  return out;
}

export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  if (!text.endsWith('\n')) throw new Error('the exposition does not end with a line break');
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, n) => {
    const where = `line ${n + 1} ${JSON.stringify(line)}`;
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (m === null) throw new Error(`${where}: a comment that is neither HELP nor TYPE`);
      const [, kind, name = '', rest = ''] = m;
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name`);
      if (kind === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: unknown type`);
        if (types.has(name)) throw new Error(`${where}: TYPE given twice`);
        types.set(name, rest);
      } else if (/\\[^n\\]/.test(rest)) throw new Error(`${where}: bad escape in HELP`);
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (m === null) throw new Error(`${where}: not a sample line`);
    const [, name = '', labelText = '', valueText = ''] = m;
    if (!VALUE.test(valueText)) throw new Error(`${where}: bad value`);
    const family = [...types.keys()].find((f) => (SUFFIXES[types.get(f) ?? ''] ?? ['']).some((s) => f + s === name));
    if (family === undefined) throw new Error(`${where}: sample of a family with no TYPE before it`);
    samples.push({ name, labels: parseLabels(labelText, where), value: Number(valueText) });
  });
  checkHistograms(types, samples);
  const value = (name: string, labels: Record<string, string> = {}): number => samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
  return { types, samples, value };
}

function checkHistograms(types: ReadonlyMap<string, string>, samples: readonly Sample[]): void {
  for (const [family, type] of types) {
    if (type !== 'histogram') continue;
    const series = new Map<string, Sample[]>();
    for (const s of samples.filter((x) => x.name === `${family}_bucket`)) {
      const { le, ...rest } = s.labels;
      if (le === undefined) throw new Error(`${family}: a bucket without le`);
      const key = JSON.stringify(rest);
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    for (const [key, buckets] of series) {
      let last = -Infinity;
      let count = 0;
      for (const b of buckets) {
        const le = b.labels.le === '+Inf' ? Infinity : Number(b.labels.le);
        if (!(le > last)) throw new Error(`${family}${key}: buckets not in increasing le order`);
        if (b.value < count) throw new Error(`${family}${key}: buckets not cumulative`);
        last = le;
        count = b.value;
      }
      if (last !== Infinity) throw new Error(`${family}${key}: no le="+Inf" bucket`);
      const total = samples.find((s) => s.name === `${family}_count` && JSON.stringify(s.labels) === key);
      if (total?.value !== count) throw new Error(`${family}${key}: +Inf bucket ${count} but _count ${String(total?.value)}`);
    }
  }
}
