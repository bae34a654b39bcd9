// The policy server over real sockets: many requests per connection, any
// split of the bytes, garbage, oversized and unfinished requests, clients
// that vanish, shutdown with a request in flight, the unix socket's file,
// and room for Postfix's cached connections under the connection limits.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { lstatSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PolicyPlugin } from '../../src/policy/index.js';
import { formatRequest, PolicyClient, rcptRequest, startTestService } from './policy-peer.js';

const REJECT = 'REJECT 5.7.1 Only subscribers may post to this list';

test('one connection answers 1000 requests one after another, each with the right action', async (t) => {
  const svc = await startTestService(t);
  const c = await svc.client();
  for (let i = 0; i < 1000; i++) {
    const subscriber = i % 2 === 0;
    const got = await c.request(rcptRequest({ sender: subscriber ? 'alice@example.test' : `x${i}@elsewhere.test` }));
    assert.equal(got, subscriber ? 'DUNNO' : REJECT, `request ${i}`);
  }
  c.destroy();
});

test('1000 requests written at once on one connection get 1000 replies in order', async (t) => {
  const svc = await startTestService(t);
  const c = await svc.client();
  const want: string[] = [];
  let all = '';
  for (let i = 0; i < 1000; i++) {
    const subscriber = i % 3 === 0;
    all += formatRequest(rcptRequest({ sender: subscriber ? 'bob@example.test' : `y${i}@elsewhere.test` }));
    want.push(subscriber ? 'DUNNO' : REJECT);
  }
  c.write(all);
  for (let i = 0; i < 1000; i++) assert.equal(await c.reply(), want[i], `reply ${i}`);
  c.destroy();
});

test('a request sent one byte at a time is answered once, whole', async (t) => {
  const svc = await startTestService(t);
  const c = await svc.client();
  await c.writeBytewise(formatRequest(rcptRequest({ sender: 'jörg@elsewhere.test' })) + formatRequest(rcptRequest({ sender: 'alice@example.test' })));
  assert.equal(await c.reply(), REJECT);
  assert.equal(await c.reply(), 'DUNNO');
  assert.equal(c.isClosed, false);
  c.destroy();
});

test('garbage lines make a request malformed: logged, answered DUNNO, and the connection goes on', async (t) => {
  const svc = await startTestService(t);
  const c = await svc.client();
  c.write('GET / HTTP/1.0\r\nHost: example\r\n\r\n');
  assert.equal(await c.reply(), 'DUNNO');
  c.write('\x00\x01\x02 binary\n\xff\xfe\n\n');
  assert.equal(await c.reply(), 'DUNNO');
  assert.equal(await c.request(rcptRequest()), REJECT);
  assert.ok(svc.logLines.some((l) => /warn: policy .*malformed request \(line 1 has no "=": "GET \/ HTTP\/1\.0"\), answered DUNNO/.test(l)), svc.logLines.join(''));
  c.destroy();
});

test('an oversized request closes its connection without a reply; other connections are served', async (t) => {
  const svc = await startTestService(t, { config: { limits: { request_size: '2k' } } });
  const other = await svc.client();
  const c = await svc.client();
  c.write(`request=smtpd_access_policy\nsender=${'a'.repeat(4000)}\n\n`);
  assert.equal((await c.closed()).length, 0, 'no bytes at all');
  assert.equal(await other.request(rcptRequest()), REJECT);
  assert.ok(svc.logLines.some((l) => /request larger than 2048 bytes; connection closed/.test(l)));
  other.destroy();
});

test('a client that disconnects mid-request does not disturb the others', async (t) => {
  const svc = await startTestService(t);
  const others = await Promise.all([svc.client(), svc.client(), svc.client()]);
  for (let i = 0; i < 20; i++) {
    const c = await svc.client();
    c.write(formatRequest(rcptRequest()).slice(0, 50 + i * 7));
    if (i % 2 === 0) c.destroy();
    else c.end();
  }
  for (const o of others) assert.equal(await o.request(rcptRequest({ sender: 'alice@example.test' })), 'DUNNO');
  for (const o of others) o.destroy();
});

test('a request without its blank line within request_timeout: connection closed, no half reply', async (t) => {
  const svc = await startTestService(t, { config: { limits: { request_timeout: '200ms' } } });
  const c = await svc.client();
  const started = Date.now();
  c.write('request=smtpd_access_policy\nprotocol_state=RCPT\nsender=alice@example.test\n');
  assert.equal((await c.closed(3000)).length, 0);
  assert.ok(Date.now() - started >= 150, 'not before the timeout');
  assert.ok(svc.logLines.some((l) => /request not finished within 200 ms; connection closed/.test(l)));
});

test('a request trickled in byte by byte still has only request_timeout to finish', async (t) => {
  const svc = await startTestService(t, { config: { limits: { request_timeout: '300ms' } } });
  const c = await svc.client();
  for (let i = 0; i < 20 && !c.isClosed; i++) {
    c.write('x');
    await sleep(50);
  }
  assert.equal((await c.closed(3000)).length, 0);
});

test('a connection idle for idle_timeout is closed; one that keeps asking is not', async (t) => {
  // The busy client asks back to back until the idle one is closed: its gaps
  // are one round trip (milliseconds, even on a loaded machine), 1 s is the
  // timeout; a sleep between requests would race the timer under load.
  const svc = await startTestService(t, { config: { limits: { idle_timeout: '1s' } } });
  const idle = await svc.client();
  const busy = await svc.client();
  let asked = 0;
  while (!idle.isClosed) {
    assert.equal(await busy.request(rcptRequest()), REJECT);
    asked++;
  }
  assert.equal((await idle.closed()).length, 0);
  assert.ok(asked > 1, `the busy client asked ${asked} times while the other idled`);
  assert.equal(busy.isClosed, false);
  busy.destroy();
});

test('the unix socket answers too, replaces a stale socket file and gets the configured mode', async (t) => {
  const first = await startTestService(undefined);
  const path = first.socketPath;
  await first.close();
  // A stale socket, as a daemon killed with SIGKILL leaves behind (Node unlinks its socket on a clean close).
  mkdirSync(dirname(path), { recursive: true });
  t.after(() => rmSync(dirname(dirname(path)), { recursive: true, force: true }));
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  assert.ok(lstatSync(path).isSocket(), 'the stale socket is there');
  const svc = await startTestService(t, { config: { listen: [`unix:${path}`], socket: { mode: '0660' } } });
  assert.equal(lstatSync(path).mode & 0o777, 0o660);
  const c = await PolicyClient.open({ path });
  assert.equal(await c.request(rcptRequest({ sender: 'alice@example.test' })), 'DUNNO');
  c.destroy();
  assert.deepEqual(svc.service.listening.map((l) => l.kind), ['unix']);
});

test('a TCP address in use makes start fail naming the address', async (t) => {
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => busy.close(() => resolve())));
  const port = (busy.address() as { port: number }).port;
  await assert.rejects(startTestService(t, { config: { listen: [`127.0.0.1:${port}`] } }), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}`));
});

test('close() lets a request in flight get its reply, then closes the connection', async (t) => {
  // Hooks, not sleeps: close() is called once the plugin holds the request,
  // and the answer is released once close() has shut the idle connection.
  let release: () => void = () => undefined;
  let asked: () => void = () => undefined;
  const inFlight = new Promise<void>((resolve) => { asked = resolve; });
  const slow: PolicyPlugin = {
    name: 'dnsbl',
    check: () => new Promise((resolve) => {
      release = () => resolve('DEFER_IF_PERMIT 4.7.1 slow answer');
      asked();
    }),
  };
  const svc = await startTestService(t, { config: { chain: ['dnsbl'] }, plugins: { dnsbl: slow } });
  const idle = await svc.client();
  const c = await svc.client();
  c.write(formatRequest(rcptRequest()));
  await inFlight;
  const closing = svc.service.close();
  await idle.closed();
  assert.equal(c.isClosed, false, 'the connection with a request in flight is kept');
  release();
  assert.equal(await c.reply(), 'DEFER_IF_PERMIT 4.7.1 slow answer');
  assert.equal((await c.closed()).length, 0);
  await closing;
});

test('16 connections asking at once all get the right answers', async (t) => {
  const svc = await startTestService(t);
  const clients = await Promise.all(Array.from({ length: 16 }, () => svc.client()));
  await Promise.all(clients.map(async (c, n) => {
    for (let i = 0; i < 200; i++) {
      const subscriber = (i + n) % 2 === 0;
      assert.equal(await c.request(rcptRequest({ sender: subscriber ? 'alice@example.test' : `z${n}.${i}@elsewhere.test` })), subscriber ? 'DUNNO' : REJECT);
    }
    c.destroy();
  }));
});

/** One request on a new connection from another loopback address (another client to the server); its action, or the error. */
function askFrom(port: number, from: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = connect({ port, host: '127.0.0.1', localAddress: from }, () => s.write(formatRequest(rcptRequest())));
    s.on('data', (d: Buffer) => {
      got += d.toString();
      const m = /^action=([^\n]*)\n\n/.exec(got);
      if (m) {
        s.destroy();
        resolve(m[1] as string);
      }
    });
    s.on('error', (err) => resolve(`error: ${err.message}`));
    s.on('close', () => resolve(`closed; got ${JSON.stringify(got)}`));
  });
}

test('a client address at connections_per_client: its longest-idle connection makes room for the new one, as for Postfix\'s cached connections', async (t) => {
  const svc = await startTestService(t, { config: { limits: { connections_per_client: 3 } } });
  const cached = [await svc.client(), await svc.client(), await svc.client()];
  for (const c of cached) assert.equal(await c.request(rcptRequest()), REJECT); // each used once, then idle, the first the longest
  const fresh = await svc.client();
  assert.equal(await fresh.request(rcptRequest()), REJECT, 'the new connection is served');
  assert.equal((await cached[0]?.closed(3000))?.length, 0, 'the longest idle was closed, without a byte');
  for (const c of cached.slice(1)) assert.equal(await c.request(rcptRequest()), REJECT, 'the others still work');
  assert.ok(svc.logLines.some((l) => /policy 127\.0\.0\.1:\d+: idle \d+ ms, closed to make room \(127\.0\.0\.1 has 3 connections, limits\.connections_per_client\)/.test(l)), svc.logLines.join(''));
  for (const c of [...cached, fresh]) c.destroy();
});

test('a client address whose connections are all in the middle of a request gets no more: the new one is closed and logged; another address is served', async (t) => {
  const svc = await startTestService(t, { config: { limits: { connections_per_client: 3 } } });
  const busy = [await svc.client(), await svc.client(), await svc.client()];
  for (const c of busy) c.write('request=smtpd_access_policy\nprotocol_state=RCPT\n'); // no blank line yet
  await sleep(100);
  const extra = await svc.client();
  assert.equal((await extra.closed(3000)).length, 0, 'closed without a reply');
  assert.ok(svc.logLines.some((l) => /3 connections from 127\.0\.0\.1 \(limits\.connections_per_client\), all in the middle of a request; new connection closed/.test(l)), svc.logLines.join(''));
  assert.equal(await askFrom(svc.port, '127.0.0.2'), REJECT, 'another client address has its own room');
  for (const c of busy) assert.equal(c.isClosed, false, 'the busy ones are kept');
  for (const c of busy) c.destroy();
});

test('a listener at limits.connections lets a new connection in by closing the longest-idle one (before: the kernel-level limit dropped it)', async (t) => {
  const svc = await startTestService(t, { config: { limits: { connections: 3 } } });
  const cached = [await svc.client(), await svc.client(), await svc.client()];
  for (const c of cached) assert.equal(await c.request(rcptRequest()), REJECT);
  assert.equal(await askFrom(svc.port, '127.0.0.3'), REJECT);
  assert.equal((await cached[0]?.closed(3000))?.length, 0);
  for (const c of cached) c.destroy();
});
