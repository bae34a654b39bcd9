import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../../src/log.js';
import { createMetrics, startMetricsServer } from '../../src/metrics/index.js';

function capture(): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) }) };
}

test('GET and HEAD /metrics answer the registry; other paths 404, other methods 405; a start line per address', async () => {
  const { lines, log } = capture();
  const m = createMetrics();
  m.messageAccepted('LMTP');
  const server = await startMetricsServer(['127.0.0.1:0'], m, log);
  try {
    const port = server.listening[0]?.port ?? 0;
    assert.ok(port > 0);
    assert.ok(lines.some((l) => l.includes(`metrics on http://127.0.0.1:${port}/metrics`)), lines.join('\n'));
    assert.ok(!lines.some((l) => /loopback/.test(l)), 'no warning for a loopback address');
    const got = await fetch(`http://127.0.0.1:${port}/metrics?x=1`);
    assert.equal(got.status, 200);
    assert.match(await got.text(), /^mailprocd_messages_accepted_total\{protocol="lmtp"\} 1$/m);
    const head = await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    assert.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 404);
    assert.equal((await fetch(`http://127.0.0.1:${port}/favicon.ico`)).status, 404);
    const post = await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
  } finally {
    await server.close();
  }
});

test('an address already in use is logged as an error and skipped: the daemon goes on without metrics there', async () => {
  const first = await startMetricsServer(['127.0.0.1:0'], createMetrics(), capture().log);
  const { lines, log } = capture();
  try {
    const busy = `127.0.0.1:${first.listening[0]?.port ?? 0}`;
    const second = await startMetricsServer([busy], createMetrics(), log);
    assert.deepEqual(second.listening, []);
    assert.ok(lines.some((l) => l.includes(`metrics: cannot listen on ${busy}`) && /EADDRINUSE/.test(l)), lines.join('\n'));
    await second.close();
  } finally {
    await first.close();
  }
});
