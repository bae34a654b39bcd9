// The strict reader the metrics tests rely on refuses what Prometheus would.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseExposition } from './exposition.js';

const GOOD = `# HELP a_total Things.
# TYPE a_total counter
a_total{kind="x\\"y\\\\z\\n"} 3

# TYPE h_seconds histogram
h_seconds_bucket{le="0.1",stage="a"} 1
h_seconds_bucket{le="+Inf",stage="a"} 2
h_seconds_sum{stage="a"} 0.5
h_seconds_count{stage="a"} 2
`;

test('a well-formed exposition is read, escapes and all', () => {
  const x = parseExposition(GOOD);
  assert.equal(x.value('a_total', { kind: 'x"y\\z\n' }), 3);
  assert.equal(x.value('h_seconds_count'), 2);
});

test('malformed expositions are refused, naming what is wrong', () => {
  const cases: { name: string; text: string; want: RegExp }[] = [
    { name: 'a sample without TYPE', text: 'b 1\n', want: /no TYPE/ },
    { name: 'a bad value', text: '# TYPE b gauge\nb one\n', want: /not a sample|bad value/ },
    { name: 'an unquoted label', text: '# TYPE b gauge\nb{x=1} 1\n', want: /not quoted/ },
    { name: 'a bad escape', text: '# TYPE b gauge\nb{x="\\t"} 1\n', want: /bad escape/ },
    { name: 'a stray comment', text: '# hello\n', want: /neither HELP nor TYPE/ },
    { name: 'no final line break', text: '# TYPE b gauge\nb 1', want: /line break/ },
    { name: 'buckets not cumulative', text: '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', want: /cumulative/ },
    { name: 'no +Inf bucket', text: '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', want: /\+Inf/ },
    { name: '_count differs from +Inf', text: '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 2\n', want: /_count/ },
  ];
  for (const c of cases) assert.throws(() => parseExposition(c.text), c.want, c.name);
});
