// The `policy:` config section (src/config/policy.ts): its defaults are the
// embedded default, units parse like the rest of the file, every problem
// names its key, and the plugins' options are part of it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { policyConfigSchema } from '../../src/config/index.js';

test('no section at all is the embedded default', () => {
  const { dnsbl: _dnsbl, spf: _spf, ...rest } = policyConfigSchema.parse(undefined);
  assert.deepEqual(rest, {
    listen: ['unix:./var/run/policy.sock', '127.0.0.1:10040'],
    socket: { mode: 0o660 },
    chain: ['lists', 'userpolicy'],
    limits: { request_size: 32 * 1024, request_timeout: 10_000, idle_timeout: 300_000, connections: 200, connections_per_client: 150 },
    cache_size: 10_000,
    maintenance_interval: 300_000,
    lists: { reject_text: 'Only subscribers may post to this list', cache_ttl: 0 },
    userpolicy: {}, // on_error left out everywhere: each plugin's own declaration applies
    greylist: {
      delay: 300_000, retry_window: 86_400_000, expire: 35 * 86_400_000, auto_whitelist: 5,
      text: 'Greylisted, please try again later', header: false, ipv4_prefix: 24, ipv6_prefix: 64,
    },
    ratelimit: { rules: [], max_keys: 100_000 },
  });
});

test('embedded in a parent schema, a missing policy key gets the defaults too', () => {
  const parent = z.object({ policy: policyConfigSchema }).strict();
  assert.deepEqual(parent.parse({}).policy.listen, ['unix:./var/run/policy.sock', '127.0.0.1:10040']);
});

test('sizes and durations take the units the rest of the file takes', () => {
  const c = policyConfigSchema.parse({
    limits: { request_size: '64k', request_timeout: '500ms', idle_timeout: 60 },
    greylist: { delay: '2m', retry_window: '4h', expire: '1w' },
    ratelimit: { rules: [{ key: 'sasl_username', limit: 100, window: '1h' }] },
    chain: ['lists', 'ratelimit'],
  });
  assert.deepEqual(c.limits, { request_size: 65536, request_timeout: 500, idle_timeout: 60_000, connections: 200, connections_per_client: 150 });
  assert.deepEqual([c.greylist.delay, c.greylist.retry_window, c.greylist.expire], [120_000, 14_400_000, 604_800_000]);
  assert.deepEqual(c.ratelimit.rules[0], {
    key: 'sasl_username', limit: 100, window: 3_600_000, mode: 'sliding', count: 'recipients', action: 'DEFER_IF_PERMIT 4.7.1 Rate limit exceeded, try again later',
  });
});

const PROBLEMS: { name: string; input: unknown; want: string[] }[] = [
  { name: 'an unknown key', input: { greylist: { delay_s: 3 } }, want: ['greylist: Unrecognized key: "delay_s"'] },
  { name: 'a bad listen address', input: { listen: ['localhost'] }, want: ['listen.0: expected "unix:PATH" or "HOST:PORT"'] },
  { name: 'a port out of range', input: { listen: ['127.0.0.1:70000'] }, want: ['listen.0: port out of range in "127.0.0.1:70000"'] },
  { name: 'an unknown plugin', input: { chain: ['lists', 'spamhaus'] }, want: ['chain.1: Invalid option: expected one of "lists"|"userpolicy"|"greylist"|"ratelimit"|"dnsbl"|"spf"'] },
  { name: 'a plugin twice', input: { chain: ['lists', 'lists'] }, want: ['chain.1: plugin "lists" is in the chain twice'] },
  { name: 'a bad duration', input: { greylist: { delay: '5 minutes' } }, want: ['greylist.delay: expected a duration like 30s, 5m, 2h or a number of seconds, got "5 minutes"'] },
  { name: 'a retry window not longer than the delay', input: { greylist: { delay: '1h', retry_window: '1h' } }, want: ['greylist.retry_window: must be longer than greylist.delay'] },
  { name: 'ratelimit chained without rules', input: { chain: ['ratelimit'] }, want: ['ratelimit.rules: ratelimit is in the chain but has no rules'] },
  { name: 'a rule action Postfix would not understand', input: { ratelimit: { rules: [{ key: 'sender', limit: 1, window: 60, action: 'REJECTED too many' }] } }, want: ['ratelimit.rules.0.action: expected an access(5) action such as "REJECT 5.7.1 text", "DEFER_IF_PERMIT 4.7.1 text" or "451 4.7.1 text"'] },
  { name: 'a reply text with a line break', input: { lists: { reject_text: 'two\nlines' } }, want: ['lists.reject_text: must be one line (no line breaks)'] },
  { name: 'a zero window', input: { ratelimit: { rules: [{ key: 'sender', limit: 1, window: 0 }] } }, want: ['ratelimit.rules.0.window: must be more than 0'] },
  { name: 'a tiny request size', input: { limits: { request_size: 10 } }, want: ['limits.request_size: must be at least 256 bytes'] },
];

for (const c of PROBLEMS) {
  test(`a problem names its key: ${c.name}`, () => {
    const r = policyConfigSchema.safeParse(c.input);
    assert.equal(r.success, false);
    assert.deepEqual(r.error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`), c.want);
  });
}

test('the dnsbl and spf plugins\' options are part of the section, with their defaults, and the cross-key checks still run', () => {
  const c = policyConfigSchema.parse(undefined);
  assert.equal(c.dnsbl.threshold, 5);
  assert.deepEqual(c.dnsbl.zones, []);
  assert.match(c.spf.actions.fail, /^REJECT 5\.7\.23 /);
  assert.equal(policyConfigSchema.safeParse({ chain: ['dnsbl', 'dnsbl'] }).error?.issues[0]?.message, 'plugin "dnsbl" is in the chain twice');
  assert.deepEqual(policyConfigSchema.safeParse({ dnsbl: { threshhold: 3 } }).error?.issues[0]?.path, ['dnsbl'], 'an unknown dnsbl key is named');
});
