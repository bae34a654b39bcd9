import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_METRICS_LISTEN, isLoopbackListen, metricsConfigSchema } from '../../src/config/index.js';
import { configSchema } from '../../src/config/schema.js';

test('the embedded default serves metrics on 127.0.0.1:9742', () => {
  assert.equal(DEFAULT_METRICS_LISTEN, '127.0.0.1:9742');
  assert.deepEqual(configSchema.parse({}).metrics, { listen: ['127.0.0.1:9742'] });
  assert.deepEqual(metricsConfigSchema.parse({}), { listen: ['127.0.0.1:9742'] });
});

test('metrics.listen: [] turns the endpoint off, and other addresses are taken as written', () => {
  assert.deepEqual(metricsConfigSchema.parse({ listen: [] }), { listen: [] });
  assert.deepEqual(metricsConfigSchema.parse({ listen: ['[::1]:9742', '192.0.2.10:9742'] }), { listen: ['[::1]:9742', '192.0.2.10:9742'] });
});

test('metrics.listen refuses a unix socket, a bad address and unknown keys, naming the key', () => {
  const cases: { input: unknown; want: RegExp }[] = [
    { input: { listen: ['unix:/run/metrics.sock'] }, want: /TCP only/ },
    { input: { listen: ['localhost'] }, want: /HOST:PORT/ },
    { input: { listen: ['127.0.0.1:70000'] }, want: /port out of range/ },
    { input: { listen: '127.0.0.1:9742' }, want: /array/ },
    { input: { port: 9742 }, want: /port/ },
  ];
  for (const c of cases) {
    const r = configSchema.safeParse({ metrics: c.input });
    assert.equal(r.success, false, JSON.stringify(c.input));
    const text = r.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') ?? '';
    assert.match(text, /^metrics/, text);
    assert.match(text, c.want, text);
  }
});

test('loopback addresses are told from the others', () => {
  const cases = [
    { spec: '127.0.0.1:9742', want: true },
    { spec: '127.1.2.3:0', want: true },
    { spec: 'localhost:9742', want: true },
    { spec: '[::1]:9742', want: true },
    { spec: '[::ffff:127.0.0.1]:9742', want: true },
    { spec: '0.0.0.0:9742', want: false },
    { spec: '[::]:9742', want: false },
    { spec: '192.0.2.10:9742', want: false },
    { spec: 'metrics.example.test:9742', want: false },
  ];
  for (const c of cases) assert.equal(isLoopbackListen(c.spec), c.want, c.spec);
});
