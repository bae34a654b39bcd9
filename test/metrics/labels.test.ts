import assert from 'node:assert/strict';
import { test } from 'node:test';
import { dsnClass, parseVmRss, pluginLabel, policyActionLabel, protocolLabel, relayLabel, statusLabel, topOwners } from '../../src/metrics/labels.js';

test('a status code gives its DSN class and status word; an unreadable code counts as temporary', () => {
  const cases = [
    { code: '2.0.0', cls: '2', word: 'delivered' },
    { code: '4.2.2', cls: '4', word: 'deferred' },
    { code: '5.4.7', cls: '5', word: 'bounced' },
    { code: '', cls: '4', word: 'deferred' },
    { code: 'x.y.z', cls: '4', word: 'deferred' },
  ];
  for (const c of cases) {
    assert.equal(dsnClass(c.code), c.cls, c.code);
    assert.equal(statusLabel(c.code), c.word, c.code);
  }
});

test('the relay label names each destination kind once, in a fixed order, and nothing a sender chose', () => {
  const cases = [
    { relay: 'maildir', want: 'maildir' },
    { relay: 'maildir+maildir+pipe', want: 'maildir+pipe' },
    { relay: 'pipe+maildir', want: 'maildir+pipe' },
    { relay: 'forward', want: 'forward' },
    { relay: 'list', want: 'list' },
    { relay: 'Maildir:/home/x', want: 'other' },
    { relay: '', want: 'other' },
  ];
  for (const c of cases) assert.equal(relayLabel(c.relay), c.want, c.relay);
});

test('protocols are lower case; anything odd is "other"', () => {
  assert.equal(protocolLabel('LMTP'), 'lmtp');
  assert.equal(protocolLabel('ESMTP'), 'esmtp');
  assert.equal(protocolLabel('E SMTP'), 'other');
});

test('a policy action is reduced to its action word, a numeric reply to its class, and anything else to OTHER', () => {
  const cases = [
    { action: 'DUNNO', want: 'DUNNO' },
    { action: 'REJECT Not a subscriber of dev@example.test', want: 'REJECT' },
    { action: 'defer_if_permit Greylisted', want: 'DEFER_IF_PERMIT' },
    { action: '450 4.7.1 Greylisted, try again', want: '4XX' },
    { action: '554', want: '5XX' },
    { action: 'PREPEND X-Greylist: delayed', want: 'PREPEND' },
    { action: 'permit_mynetworks', want: 'OTHER' },
    { action: '', want: 'OTHER' },
    { action: '250 ok', want: 'OTHER' },
  ];
  for (const c of cases) assert.equal(policyActionLabel(c.action), c.want, c.action);
  assert.equal(pluginLabel(undefined), 'none');
  assert.equal(pluginLabel('lists'), 'lists');
});

test('the busiest owners come first, ties by key, at most n', () => {
  const load = [
    { key: '1002:1002', queued: 0, active: 1 },
    { key: '1000:1000', queued: 5, active: 2 },
    { key: '1001:1001', queued: 0, active: 1 },
    { key: '1003:1003', queued: 3, active: 0 },
  ];
  assert.deepEqual(topOwners(load, 3).map((l) => l.key), ['1000:1000', '1003:1003', '1001:1001']);
  assert.deepEqual(topOwners(load, 0), []);
  assert.equal(load[0]?.key, '1002:1002', 'the input is not reordered');
});

test('VmRSS is read from /proc/PID/status text in bytes; absent for a process without one', () => {
  assert.equal(parseVmRss('Name:\tnode\nVmPeak:\t  999 kB\nVmRSS:\t   51200 kB\nThreads:\t7\n'), 51200 * 1024);
  assert.equal(parseVmRss('Name:\tkthreadd\nState:\tS (sleeping)\n'), undefined);
});
