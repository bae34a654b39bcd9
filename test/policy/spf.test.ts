// The spf plugin (mailauth's evaluator on our resolver) against a DNS server
// on loopback: each SPF result maps to its configured action, include: is
// followed, the null sender is checked by its HELO identity, and DNS trouble
// (SERVFAIL, no answer) is a temperror that adds nothing but a log line.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createLogger, type Level } from '../../src/log.js';
import { spfOptionsSchema } from '../../src/config/index.js';
import { createSpfPlugin } from '../../src/policy/plugins/spf.js';
import type { PolicyPlugin, PolicyRequest } from '../../src/policy/types.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';

let dns: TestDnsServer;
const plugins: PolicyPlugin[] = [];

before(async () => {
  dns = await startDnsServer({
    records: {
      'pass.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'], MX: [{ priority: 10, exchange: 'mx.pass.test' }] },
      'soft.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 ~all'] },
      'neutral.test': { TXT: ['v=spf1 ?all'] },
      'nospf.test': { A: ['192.0.2.7'], TXT: ['some-site-verification=abc'] },
      'broken.test': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all', 'v=spf1 -all'] }, // two records: permerror
      'inc.test': { TXT: ['v=spf1 include:_spf.provider.test -all'] },
      '_spf.provider.test': { TXT: ['v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:5::/48 -all'] },
      'mx.helo.test': { TXT: ['v=spf1 a -all'], A: ['203.0.113.5'] },
      'dnsinc.test': { TXT: ['v=spf1 include:_spf.tempfail.test -all'] },
    },
    servfailZones: ['tempfail.test'],
    timeoutZones: ['slow.test'],
  });
});

after(async () => {
  for (const p of plugins) await p.close?.();
  await dns.close();
});

interface Line {
  level: Level;
  message: string;
  [k: string]: unknown;
}

function plugin(input: Record<string, unknown> = {}): { p: PolicyPlugin; logs: Line[] } {
  const logs: Line[] = [];
  const log = createLogger({ format: 'json', level: 'debug', write: (l) => logs.push(JSON.parse(l) as Line) });
  const p = createSpfPlugin(spfOptionsSchema.parse({ servers: [dns.server], hostname: 'mx.local.test', ...input }), { log });
  plugins.push(p);
  return { p, logs };
}

function request(attrs: Record<string, string>): PolicyRequest {
  const m = new Map(Object.entries({
    request: 'smtpd_access_policy',
    protocol_state: 'RCPT',
    client_address: '192.0.2.1',
    helo_name: 'client.example.test',
    sender: 'alice@pass.test',
    recipient: 'bob@local.test',
    ...attrs,
  }));
  return { attrs: m, get: (name: string) => m.get(name) ?? '' };
}

/** The SPF result the plugin logged for its last check. */
const lastResult = (logs: Line[]): unknown => logs.filter((l) => 'result' in l).at(-1)?.result;

/** Every result mapped to an action that names it, to see which one was taken. */
const LABELLED = {
  actions: Object.fromEntries(['pass', 'fail', 'softfail', 'neutral', 'none', 'permerror', 'temperror']
    .map((r) => [r, `PREPEND X-SPF: ${r} {domain} {ip}`])),
};

describe('spf results and actions', () => {
  test('a permitted client passes, and pass is DUNNO by default', async () => {
    const { p, logs } = plugin();
    assert.equal(await p.check(request({})), undefined);
    assert.equal(lastResult(logs), 'pass');
  });

  test('pass can be mapped to an action, e.g. prepending Received-SPF', async () => {
    const { p } = plugin({ actions: { pass: 'PREPEND Received-SPF: {header}' } });
    const action = await p.check(request({}));
    assert.match(action ?? '', /^PREPEND Received-SPF: pass \(mx\.local\.test: domain of alice@pass\.test designates 192\.0\.2\.1 as permitted sender\) client-ip=192\.0\.2\.1;/);
    assert.doesNotMatch(action ?? '', /[\r\n]/);
  });

  test('fail is rejected with 5.7.23 by default', async () => {
    const { p } = plugin();
    assert.equal(
      await p.check(request({ client_address: '198.51.100.1' })),
      'REJECT 5.7.23 SPF validation failed: pass.test does not designate 198.51.100.1 as permitted sender',
    );
  });

  test('fail takes the configured action', async () => {
    const { p } = plugin({ actions: { fail: 'DEFER_IF_PERMIT 4.7.23 SPF {result} for {sender} from {ip}' } });
    assert.equal(await p.check(request({ client_address: '198.51.100.1' })), 'DEFER_IF_PERMIT 4.7.23 SPF fail for alice@pass.test from 198.51.100.1');
  });

  test('softfail is DUNNO by default and takes the configured action', async () => {
    const a = plugin();
    assert.equal(await a.p.check(request({ sender: 'x@soft.test', client_address: '198.51.100.1' })), undefined);
    assert.equal(lastResult(a.logs), 'softfail');
    const b = plugin(LABELLED);
    assert.equal(await b.p.check(request({ sender: 'x@soft.test', client_address: '198.51.100.1' })), 'PREPEND X-SPF: softfail soft.test 198.51.100.1');
  });

  test('neutral, none (no SPF record, or no such domain) and permerror each take their action', async () => {
    const { p } = plugin(LABELLED);
    assert.equal(await p.check(request({ sender: 'x@neutral.test' })), 'PREPEND X-SPF: neutral neutral.test 192.0.2.1');
    assert.equal(await p.check(request({ sender: 'x@nospf.test' })), 'PREPEND X-SPF: none nospf.test 192.0.2.1');
    assert.equal(await p.check(request({ sender: 'x@nowhere.test' })), 'PREPEND X-SPF: none nowhere.test 192.0.2.1');
    assert.equal(await p.check(request({ sender: 'x@broken.test' })), 'PREPEND X-SPF: permerror broken.test 192.0.2.1');
  });

  test('none and permerror are DUNNO by default', async () => {
    const { p } = plugin();
    assert.equal(await p.check(request({ sender: 'x@nospf.test' })), undefined);
    assert.equal(await p.check(request({ sender: 'x@broken.test' })), undefined);
  });

  test('include: is followed, for IPv4 and IPv6 clients', async () => {
    const { p, logs } = plugin();
    assert.equal(await p.check(request({ sender: 'x@inc.test', client_address: '198.51.100.20' })), undefined);
    assert.equal(lastResult(logs), 'pass');
    assert.equal(await p.check(request({ sender: 'x@inc.test', client_address: '2001:db8:5::25' })), undefined);
    assert.equal(lastResult(logs), 'pass');
    assert.match(await p.check(request({ sender: 'x@inc.test', client_address: '192.0.2.1' })) ?? '', /^REJECT 5\.7\.23 /);
    assert.ok(dns.count('_spf.provider.test', 'TXT') >= 3);
  });
});

describe('spf and the null sender', () => {
  test('the null sender is checked by its HELO identity (postmaster@helo)', async () => {
    const { p, logs } = plugin();
    assert.equal(await p.check(request({ sender: '', helo_name: 'mx.helo.test', client_address: '203.0.113.5' })), undefined);
    assert.equal(lastResult(logs), 'pass');
    assert.equal(
      await p.check(request({ sender: '', helo_name: 'mx.helo.test', client_address: '203.0.113.6' })),
      'REJECT 5.7.23 SPF validation failed: mx.helo.test does not designate 203.0.113.6 as permitted sender',
    );
  });

  test('the null sender with an address-literal HELO has nothing to check: none, without DNS', async () => {
    const { p, logs } = plugin();
    const before = dns.count();
    assert.equal(await p.check(request({ sender: '', helo_name: '[203.0.113.5]' })), undefined);
    assert.equal(lastResult(logs), 'none');
    assert.equal(dns.count(), before);
  });
});

describe('spf and DNS trouble', () => {
  test('SERVFAIL is a temperror: DUNNO and one log line', async () => {
    const { p, logs } = plugin();
    assert.equal(await p.check(request({ sender: 'x@tempfail.test' })), undefined);
    const lines = logs.filter((l) => l.level !== 'debug');
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.level, 'info');
    assert.match(lines[0]?.message ?? '', /^spf temperror/);
    assert.equal(lines[0]?.result, 'temperror');
  });

  test('a SERVFAIL inside an include is a temperror too', async () => {
    const { p, logs } = plugin();
    assert.equal(await p.check(request({ sender: 'x@dnsinc.test' })), undefined);
    assert.equal(lastResult(logs), 'temperror');
  });

  test('a name server that never answers is a temperror within the timeout', async () => {
    // 1 s per query, against evaluation_timeout's 10 s (what a missing per-query
    // deadline would cost): the bound below leaves a loaded machine 4 s of room.
    const { p, logs } = plugin({ timeout: '1s' });
    const t0 = Date.now();
    assert.equal(await p.check(request({ sender: 'x@mail.slow.test' })), undefined);
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    assert.equal(lastResult(logs), 'temperror');
  });

  test('temperror can be mapped to a deferral', async () => {
    const { p } = plugin({ actions: { temperror: 'DEFER_IF_PERMIT 4.7.24 SPF validation error' } });
    assert.equal(await p.check(request({ sender: 'x@tempfail.test' })), 'DEFER_IF_PERMIT 4.7.24 SPF validation error');
  });
});

describe('spf protocol stage and cache key', () => {
  test('only RCPT is judged, and the cache key holds client, whole sender and HELO', async () => {
    const { p } = plugin();
    const before = dns.count();
    assert.equal(await p.check(request({ protocol_state: 'MAIL', client_address: '198.51.100.1' })), undefined);
    assert.equal(dns.count(), before);
    assert.equal(p.cacheKey?.(request({ protocol_state: 'MAIL' })), undefined);
    assert.equal(p.cacheKey?.(request({ helo_name: 'Client.Example.Test' })), '192.0.2.1|alice@pass.test|client.example.test');
    assert.equal(p.cacheTtlMs, 300_000);
  });

  test('a resolver can be injected instead of servers', async () => {
    const logs: Line[] = [];
    const log = createLogger({ format: 'json', level: 'debug', write: (l) => logs.push(JSON.parse(l) as Line) });
    const p = createSpfPlugin(spfOptionsSchema.parse({ servers: ['192.0.2.53'] }), { log, resolver: dns.resolver({ timeout: 5000 }) });
    assert.match(await p.check(request({ client_address: '198.51.100.1' })) ?? '', /^REJECT 5\.7\.23 /);
    await p.close?.();
  });
});
