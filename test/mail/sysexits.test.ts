// The exit status → Status table: every row's code and text, the qmail
// conventions, unknown codes under both settings, and signals.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SYSEXITS_TABLE, statusFromExit, statusFromSignal } from '../../src/mail/sysexits.js';

const rows: { exit: number; code: string; text: string }[] = [
  { exit: 0, code: '2.0.0', text: 'command /x exited with status 0 (EX_OK: success)' },
  { exit: 64, code: '5.3.0', text: 'command /x exited with status 64 (EX_USAGE: command line usage error)' },
  { exit: 65, code: '5.6.0', text: 'command /x exited with status 65 (EX_DATAERR: data format error)' },
  { exit: 66, code: '5.3.0', text: 'command /x exited with status 66 (EX_NOINPUT: cannot open input)' },
  { exit: 67, code: '5.1.1', text: 'command /x exited with status 67 (EX_NOUSER: addressee unknown)' },
  { exit: 68, code: '5.1.2', text: 'command /x exited with status 68 (EX_NOHOST: host name unknown)' },
  { exit: 69, code: '5.3.0', text: 'command /x exited with status 69 (EX_UNAVAILABLE: service unavailable)' },
  { exit: 70, code: '5.3.0', text: 'command /x exited with status 70 (EX_SOFTWARE: internal software error)' },
  { exit: 71, code: '4.3.0', text: 'command /x exited with status 71 (EX_OSERR: system error)' },
  { exit: 72, code: '5.3.0', text: 'command /x exited with status 72 (EX_OSFILE: critical OS file missing)' },
  { exit: 73, code: '5.2.0', text: "command /x exited with status 73 (EX_CANTCREAT: can't create output file)" },
  { exit: 74, code: '5.3.0', text: 'command /x exited with status 74 (EX_IOERR: input/output error)' },
  { exit: 75, code: '4.3.0', text: 'command /x exited with status 75 (EX_TEMPFAIL: temporary failure)' },
  { exit: 76, code: '5.5.0', text: 'command /x exited with status 76 (EX_PROTOCOL: remote error in protocol)' },
  { exit: 77, code: '5.7.0', text: 'command /x exited with status 77 (EX_NOPERM: permission denied)' },
  { exit: 78, code: '5.3.5', text: 'command /x exited with status 78 (EX_CONFIG: local configuration error)' },
  { exit: 99, code: '2.0.0', text: 'command /x exited with status 99 (qmail 99: success, stop)' },
  { exit: 100, code: '5.3.0', text: 'command /x exited with status 100 (qmail 100: permanent failure)' },
  { exit: 111, code: '4.3.0', text: 'command /x exited with status 111 (qmail 111: temporary failure)' },
];

for (const r of rows) {
  test(`exit ${r.exit} is ${r.code} whatever the unknown-exit setting`, () => {
    for (const unknown of ['temporary', 'permanent'] as const) {
      const got = statusFromExit(r.exit, 'command /x', unknown);
      assert.equal(got.code, r.code);
      assert.equal(got.text, r.text);
    }
  });
}

test('the table has exactly the rows tested here', () => {
  assert.deepEqual(Object.keys(SYSEXITS_TABLE).map(Number).sort((a, b) => a - b), rows.map((r) => r.exit));
  assert.ok(Object.isFrozen(SYSEXITS_TABLE));
});

const unknown: { exit: number; setting?: 'temporary' | 'permanent'; code: string }[] = [
  { exit: 1, code: '4.3.0' },
  { exit: 1, setting: 'temporary', code: '4.3.0' },
  { exit: 1, setting: 'permanent', code: '5.3.0' },
  { exit: 2, code: '4.3.0' },
  { exit: 63, setting: 'permanent', code: '5.3.0' },
  { exit: 79, code: '4.3.0' },
  { exit: 112, code: '4.3.0' },
  { exit: 255, setting: 'permanent', code: '5.3.0' },
];
for (const u of unknown) {
  test(`exit ${u.exit} (no row) is ${u.code} when unknown exits are ${u.setting ?? 'left at the default'}`, () => {
    const got = statusFromExit(u.exit, 'command /x', u.setting);
    assert.equal(got.code, u.code);
    assert.equal(got.text, `command /x died with status ${u.exit}`);
  });
}

test('a signal is temporary and named with its number', () => {
  assert.deepEqual(statusFromSignal('SIGKILL', 'command /x'), { code: '4.3.0', text: 'command /x was killed by signal 9 (SIGKILL)' });
  assert.deepEqual(statusFromSignal(15, 'command /x'), { code: '4.3.0', text: 'command /x was killed by signal 15 (SIGTERM)' });
  assert.equal(statusFromSignal('SIGSEGV', 'c').code, '4.3.0');
});
