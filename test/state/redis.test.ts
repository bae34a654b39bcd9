// The Redis policy state when the network swallows its connection: a real
// redis-server (test/helpers/engines.ts; skipped naming the package when
// missing, failed under CI=true) behind a TCP proxy on 127.0.0.1 that can
// black-hole the connections it carries — they stay open, nothing more
// passes, no error ever comes — while new ones go through. The node must
// not stay in its outage for good: the silent connection is given up and a
// new one made, and greylisting answers again.
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { stateConfigSchema } from '../../src/config/index.js';
import { createLogger } from '../../src/log.js';
import { openPolicyState, type StateStore } from '../../src/state/index.js';
import { testEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait.js';

const engine = testEngine('redis');
after(() => engine.dispose());

interface Proxy { readonly port: number; blackHole(): void; close(): Promise<void> }

/** TCP on 127.0.0.1 to the Redis unix socket; blackHole() silences the connections open now. */
async function proxyTo(path: string): Promise<Proxy> {
  const pairs: { client: Socket; server: Socket; silent: boolean }[] = [];
  const proxy = createServer((client) => {
    const server = connect(path);
    const pair = { client, server, silent: false };
    pairs.push(pair);
    client.on('data', (d: Buffer) => void (pair.silent || server.write(d)));
    server.on('data', (d: Buffer) => void (pair.silent || client.write(d)));
    for (const [a, b] of [[client, server], [server, client]] as const) {
      a.on('error', () => b.destroy());
      a.on('close', () => b.destroy());
    }
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    port: (proxy.address() as AddressInfo).port,
    blackHole: () => {
      for (const p of pairs) p.silent = true;
    },
    close: () => {
      for (const p of pairs) p.client.destroy();
      return new Promise<void>((resolve) => proxy.close(() => resolve()));
    },
  };
}

test('a connection the network swallows is given up and made anew: greylisting answers again', async (t) => {
  const backend = await engine.use(t);
  if (backend === undefined) return;
  const proxy = await proxyTo(backend.replace(/^unix:\/\//, ''));
  t.after(() => proxy.close());
  const lines: string[] = [];
  const ps = await openPolicyState({
    config: stateConfigSchema.parse({ backend: `redis://127.0.0.1:${proxy.port}`, timeout: '200ms', retry_interval: '200ms' }),
    store: undefined as unknown as StateStore,
    log: createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) }),
  });
  t.after(() => ps.close());
  const p = { delayMs: 300_000, retryWindowMs: 86_400_000, expireMs: 35 * 86_400_000, autoWhitelist: 0 };
  const now = Date.UTC(2026, 0, 5);
  assert.deepEqual(await ps.greylist('192.0.2.0/24', 'before', now, p), { kind: 'defer' });

  proxy.blackHole();
  await assert.rejects(ps.greylist('192.0.2.0/24', 'swallowed', now, p), /no answer within 200 ms/);
  let n = 0;
  await waitFor('a greylist answer over a new connection', async () => {
    try {
      return (await ps.greylist('192.0.2.0/24', `after-${n++}`, now, p)).kind === 'defer' ? true : undefined;
    } catch {
      return undefined;
    }
  }, 30_000);
  assert.ok(lines.some((l) => /reachable again after/.test(l)), lines.join('\n'));
});
