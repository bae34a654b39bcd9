// The dnsbl plugin against a DNS server on loopback (test/helpers/dns-server):
// zone scoring and the reject text, IPv6 nibble queries, RHSBL on the sender
// domain, HELO and MAIL FROM checks, the cache (counted at the server), and
// DNS trouble — a zone that never answers, SERVFAIL, "query refused" codes —
// which must never turn into a REJECT.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createLogger, type Level } from '../../src/log.js';
import { dnsblOptionsSchema } from '../../src/config/index.js';
import { createDnsblPlugin } from '../../src/policy/plugins/dnsbl.js';
import { reverseIpQuery } from '../../src/policy/plugins/dns-lookup.js';
import type { PolicyPlugin, PolicyRequest } from '../../src/policy/types.js';
import { startDnsServer, type TestDnsServer } from '../helpers/dns-server.js';

const CLIENT = '192.0.2.1';
/** Deadline for tests with a zone that never answers (see 'dnsbl and DNS failures'). */
const DEADLINE = '1s';
const DEADLINE_MS = 1000;
const CLIENT6 = '2001:db8::1';
const NIBBLES6 = '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2';

let dns: TestDnsServer;
const plugins: PolicyPlugin[] = [];

before(async () => {
  dns = await startDnsServer({
    records: {
      // 192.0.2.1 is listed in zen.test and bl.test; 192.0.2.66 gets a "query refused" code.
      '1.2.0.192.zen.test': { A: ['127.0.0.2'] },
      '1.2.0.192.bl.test': { A: ['127.0.0.4'] },
      '66.2.0.192.zen.test': { A: ['127.255.255.254'] },
      [`${NIBBLES6}.zen.test`]: { A: ['127.0.0.3'] },
      'spammer.test.dbl.test': { A: ['127.0.1.2'] },
      // A well-run sender: HELO resolves to the client, which is the domain's MX.
      'mail.good.test': { A: [CLIENT], AAAA: [CLIENT6] },
      'good.test': { MX: [{ priority: 10, exchange: 'mail.good.test' }], TXT: ['v=spf1 mx -all'] },
      'elsewhere.test': { A: ['198.51.100.7'] },
      'nullmx.test': { MX: [{ priority: 0, exchange: '.' }], A: ['198.51.100.8'] },
      'mail.forged.test': { A: ['198.51.100.9'] },
      'forged.test': { A: ['198.51.100.9'] },
    },
    timeoutZones: ['slow.test'],
    servfailZones: ['broken.test'],
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

/** A plugin on the test server, its options parsed by the real schema, its log captured. */
function plugin(input: Record<string, unknown>, now?: () => number): { p: PolicyPlugin; logs: Line[] } {
  const logs: Line[] = [];
  const log = createLogger({ format: 'json', level: 'debug', write: (l) => logs.push(JSON.parse(l) as Line) });
  const p = createDnsblPlugin(dnsblOptionsSchema.parse({ servers: [dns.server], ...input }), { log, now });
  plugins.push(p);
  return { p, logs };
}

/** HELO and sender checks off: only the zones score. */
const ZONES_ONLY = {
  helo: { literal_mismatch: 0, localhost: 0, not_fqdn: 0, address_match: 0, address_mismatch: 0, no_address: 0 },
  sender: { no_mx_or_address: 0, client_is_mx: 0, helo_claims_domain: 0 },
};

function request(attrs: Record<string, string> = {}): PolicyRequest {
  const m = new Map(Object.entries({
    request: 'smtpd_access_policy',
    protocol_state: 'RCPT',
    protocol_name: 'ESMTP',
    client_address: CLIENT,
    helo_name: 'mail.good.test',
    sender: 'alice@good.test',
    recipient: 'bob@local.test',
    ...attrs,
  }));
  return { attrs: m, get: (name: string) => m.get(name) ?? '' };
}

describe('dnsbl zones', () => {
  test('a client listed in zones whose weights reach the threshold is rejected, naming the zones', async () => {
    const { p, logs } = plugin({
      ...ZONES_ONLY,
      threshold: 5,
      zones: [{ zone: 'zen.test', weight: 3.5 }, { zone: 'bl.test', weight: 2 }],
    });
    const action = await p.check(request());
    assert.ok(action?.startsWith('REJECT 5.7.1 '), `got ${action}`);
    assert.match(action ?? '', /client 192\.0\.2\.1 listed in zen\.test/);
    assert.match(action ?? '', /listed in bl\.test/);
    assert.match(action ?? '', /score 5\.5/);
    assert.ok(logs.some((l) => l.message === 'dnsbl reject' && l.score === 5.5));
  });

  test('a listing whose weight stays under the threshold is not rejected', async () => {
    const { p } = plugin({ ...ZONES_ONLY, threshold: 5, zones: [{ zone: 'zen.test', weight: 3.5 }] });
    assert.equal(await p.check(request()), undefined);
  });

  test('an unlisted client is not rejected and scores the miss weights', async () => {
    const { p } = plugin({
      ...ZONES_ONLY,
      threshold: 1,
      prepend_header: true,
      zones: [{ zone: 'zen.test', weight: 3.5, miss_weight: -1.5, name: 'ZEN' }, { zone: 'bl.test', weight: 2 }],
    });
    assert.equal(await p.check(request({ client_address: '192.0.2.99' })), 'PREPEND X-policy-weight: NOT_IN_ZEN=-1.5; rate: -1.5');
  });

  test('an IPv6 client is looked up by its 32 reversed nibbles', async () => {
    assert.equal(reverseIpQuery(CLIENT6, 'zen.test'), `${NIBBLES6}.zen.test`);
    assert.equal(reverseIpQuery('::ffff:192.0.2.1', 'zen.test'), '1.2.0.192.zen.test', 'IPv4-mapped is looked up as IPv4');
    const { p } = plugin({ ...ZONES_ONLY, threshold: 5, zones: [{ zone: 'zen.test', weight: 5 }] });
    const before = dns.count(`${NIBBLES6}.zen.test`, 'A');
    const action = await p.check(request({ client_address: CLIENT6 }));
    assert.match(action ?? '', /^REJECT 5\.7\.1 .*client 2001:db8::1 listed in zen\.test/);
    assert.equal(dns.count(`${NIBBLES6}.zen.test`, 'A'), before + 1);
  });

  test('an RHSBL zone looks up the sender domain, and a 127.0.1.x answer counts as listed', async () => {
    const { p } = plugin({ ...ZONES_ONLY, threshold: 5, zones: [{ zone: 'dbl.test', type: 'rhs', weight: 5 }] });
    const action = await p.check(request({ sender: 'x@spammer.test', helo_name: 'spammer.test' }));
    assert.match(action ?? '', /^REJECT 5\.7\.1 .*sender domain spammer\.test listed in dbl\.test/);
    assert.equal(await p.check(request({ sender: 'x@good.test' })), undefined);
    assert.equal(await p.check(request({ sender: '' })), undefined, 'the null sender has no domain to look up');
  });

  test('a "query refused" answer (127.255.255.x) is neither a listing nor a miss', async () => {
    const { p, logs } = plugin({
      ...ZONES_ONLY,
      threshold: 0.5,
      zones: [{ zone: 'zen.test', weight: 5, miss_weight: -1 }, { zone: 'bl.test', weight: 1 }],
    });
    // bl.test says not listed (1 → 0); zen.test's refusal could at best have been -1, so 0 stays under 0.5.
    assert.equal(await p.check(request({ client_address: '192.0.2.66' })), undefined);
    assert.ok(logs.every((l) => l.message !== 'dnsbl reject'));
  });
});

describe('dnsbl and DNS failures', () => {
  // Deadlines here are 1 s: the zones that do answer (this process's own DNS
  // server, milliseconds away even under load) must answer within them, and
  // "not much later than the deadline" is checked against bugs that wait for
  // c-ares' own retries or no deadline at all (seconds more), with room for a
  // loaded machine in between.
  test('a zone that never answers does not hold up the answer of a listed zone', async () => {
    const { p, logs } = plugin({
      ...ZONES_ONLY,
      threshold: 5,
      timeout: DEADLINE,
      zones: [{ zone: 'slow.test', weight: 4 }, { zone: 'zen.test', weight: 5 }],
    });
    const t0 = Date.now();
    const action = await p.check(request());
    const ms = Date.now() - t0;
    assert.match(action ?? '', /^REJECT 5\.7\.1 .*listed in zen\.test/);
    assert.doesNotMatch(action ?? '', /slow\.test/);
    assert.ok(ms >= DEADLINE_MS - 50 && ms < DEADLINE_MS + 4000, `took ${ms} ms`);
    assert.ok(logs.some((l) => l.level === 'debug' && l.message === 'dnsbl lookup failed' && String(l.name).endsWith('.slow.test')));
  });

  test('a zone that fails cannot be what pushes a request over the threshold', async () => {
    // Had slow.test answered "not listed" (-2), the score would be 3 < 5.
    const { p, logs } = plugin({
      ...ZONES_ONLY,
      threshold: 5,
      timeout: DEADLINE,
      zones: [{ zone: 'slow.test', weight: 4, miss_weight: -2 }, { zone: 'zen.test', weight: 5 }],
    });
    assert.equal(await p.check(request()), undefined);
    assert.ok(logs.some((l) => l.level === 'info' && /only because lookups failed/.test(l.message)));
  });

  test('when every zone times out or SERVFAILs the request is never rejected, and quickly', async () => {
    const { p } = plugin({
      threshold: 1,
      timeout: DEADLINE,
      zones: [{ zone: 'slow.test', weight: 10 }, { zone: 'broken.test', weight: 10 }, { zone: 'slow.test', type: 'rhs', weight: 10 }],
    });
    const t0 = Date.now();
    assert.equal(await p.check(request({ helo_name: 'x.slow.test', sender: 'a@broken.test' })), undefined);
    assert.ok(Date.now() - t0 < DEADLINE_MS + 4000);
  });

  test('a HELO whose lookup times out scores nothing', async () => {
    const { p } = plugin({ threshold: 1, timeout: DEADLINE, helo: { no_address: 10, address_mismatch: 10 } });
    assert.equal(await p.check(request({ helo_name: 'mx.slow.test', sender: '' })), undefined);
  });
});

describe('dnsbl cache', () => {
  test('a second identical request is answered without asking DNS again, until the TTL passes', async () => {
    let clock = 1_000_000;
    const { p } = plugin({ threshold: 5, cache_ttl: '60s', zones: [{ zone: 'zen.test', weight: 3.5 }] }, () => clock);
    const req = request({ client_address: '192.0.2.1', helo_name: 'mail.good.test', sender: 'a@good.test' });
    assert.equal(p.cacheKey?.(req), '192.0.2.1|mail.good.test|good.test');
    assert.equal(p.cacheTtlMs, 60_000);
    const first = await p.check(req);
    const queries = dns.count();
    assert.ok(queries > 0);
    assert.equal(await p.check(req), first);
    assert.equal(dns.count(), queries, 'no query reached the server the second time');
    // Another sender from the same client reuses the client's zone answers.
    await p.check(request({ sender: 'b@good.test' }));
    assert.equal(dns.count(), queries);
    clock += 61_000;
    await p.check(req);
    assert.ok(dns.count() > queries, 'asked again after the TTL');
  });

  test('failed lookups are not cached', async () => {
    // A SERVFAIL comes back at once; a deadline far from it keeps c-ares from retrying a slow answer (a third query).
    const { p } = plugin({ ...ZONES_ONLY, timeout: '5s', zones: [{ zone: 'broken.test', weight: 1 }] });
    const name = '1.2.0.192.broken.test';
    const before = dns.count(name);
    await p.check(request());
    await p.check(request());
    assert.equal(dns.count(name), before + 2);
  });
});

describe('dnsbl HELO and MAIL FROM checks', () => {
  // Scores read off the PREPEND header; threshold out of reach.
  const cases: { name: string; attrs: Record<string, string>; want: string }[] = [
    { name: 'a HELO that resolves to the client, from the sender domain\'s MX, scores as trustworthy', attrs: {}, want: 'HELO_IS_CLIENT=-2 CLIENT_IS_SENDER_MX=-3.1' },
    { name: 'HELO localhost', attrs: { helo_name: 'localhost', sender: '' }, want: 'HELO_LOCALHOST=3' },
    { name: 'an address literal that is not the client', attrs: { helo_name: '[10.0.0.1]', sender: '' }, want: 'HELO_LITERAL_MISMATCH=2.5' },
    { name: 'the client\'s own address literal is fine', attrs: { helo_name: `[${CLIENT}]`, sender: '' }, want: 'no findings' },
    { name: 'a HELO without a dot', attrs: { helo_name: 'desktop', sender: '' }, want: 'HELO_NOT_FQDN=1.5' },
    { name: 'a HELO that resolves elsewhere', attrs: { helo_name: 'elsewhere.test', sender: '' }, want: 'HELO_NOT_CLIENT=1.5' },
    { name: 'a HELO that does not resolve', attrs: { helo_name: 'nowhere.test', sender: '' }, want: 'HELO_NO_ADDRESS=1.5' },
    { name: 'a sender domain with neither MX nor address', attrs: { sender: 'a@nowhere.test' }, want: 'BOGUS_MX=2.1 HELO_IS_CLIENT=-2' },
    { name: 'a sender domain with a null MX', attrs: { sender: 'a@nullmx.test' }, want: 'SENDER_NULL_MX=2.1 HELO_IS_CLIENT=-2' },
    {
      name: 'a HELO that claims the sender domain but is not the client',
      attrs: { helo_name: 'mail.forged.test', sender: 'a@forged.test' },
      want: 'HELO_CLAIMS_SENDER_DOMAIN=2.5 HELO_NOT_CLIENT=1.5',
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const { p } = plugin({ threshold: 100, prepend_header: true });
      assert.equal(await p.check(request(c.attrs)), `PREPEND X-policy-weight: ${c.want}; rate: ${sumOf(c.want)}`);
    });
  }

  test('HELO and sender findings add up to a reject with readable reasons', async () => {
    const { p } = plugin({ threshold: 4 });
    const action = await p.check(request({ helo_name: 'mail.forged.test', sender: 'a@forged.test', client_address: '192.0.2.200' }));
    assert.equal(action, 'REJECT 5.7.1 Mail appeared to be SPAM or forged: '
      + 'HELO mail.forged.test claims the sender\'s domain but is not 192.0.2.200; '
      + 'HELO mail.forged.test does not resolve to 192.0.2.200 (score 4)');
  });
});

describe('dnsbl protocol stage', () => {
  test('only the RCPT stage is judged; other stages ask no DNS and are not cached', async () => {
    const { p } = plugin({ threshold: 1, zones: [{ zone: 'zen.test', weight: 5 }] });
    const before = dns.count();
    for (const state of ['CONNECT', 'MAIL', 'DATA', 'END-OF-MESSAGE']) {
      assert.equal(await p.check(request({ protocol_state: state })), undefined);
      assert.equal(p.cacheKey?.(request({ protocol_state: state })), undefined);
    }
    assert.equal(dns.count(), before);
  });
});

function sumOf(scores: string): number {
  const n = [...scores.matchAll(/=(-?[\d.]+)/g)].reduce((s, m) => s + Number(m[1]), 0);
  return Math.round(n * 100) / 100;
}
