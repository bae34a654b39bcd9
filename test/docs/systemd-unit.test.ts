// The systemd unit shipped in docs/ (README "Running as a service") must be
// one systemd accepts: `systemd-analyze verify` with no complaint at all
// (unknown keys are only warnings, so stderr must be empty), and its commands
// must be the daemon's real ones (--check-config and --config exist).
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { DAEMON } from '../helpers/daemon.js';
import { requireProgram } from '../helpers/components.js';

const UNIT = join(process.cwd(), 'docs', 'mailprocd.service');

test('docs/mailprocd.service passes systemd-analyze verify without a warning', (t) => {
  const analyze = requireProgram(t, 'systemd-analyze', 'systemd');
  if (analyze === undefined) return;
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-unit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Node where this machine has it, so that verify's "is the command executable" check is about the unit.
  const unit = readFileSync(UNIT, 'utf8').replaceAll('/usr/bin/node ', `${process.execPath} `);
  const path = join(dir, 'mailprocd.service');
  writeFileSync(path, unit);
  const r = spawnSync(analyze, ['verify', path], { encoding: 'utf8' });
  assert.equal(r.stderr, '', 'no warnings');
  assert.equal(r.status, 0);
});

test('the unit starts the daemon with options it has, and checks the config first', () => {
  const unit = readFileSync(UNIT, 'utf8');
  const exec = (key: string): string => unit.match(new RegExp(`^${key}=(.*)$`, 'm'))?.[1] ?? '';
  assert.match(exec('ExecStartPre'), /mailprocd\.js --check-config --config \S+$/);
  assert.match(exec('ExecStart'), /mailprocd\.js --config \S+$/);
  assert.equal(exec('ExecReload'), '/bin/kill -HUP $MAINPID');
  // The same options against the built daemon: exit 0 and the configuration it read (execFileSync throws otherwise).
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-unit-'));
  try {
    const cfg = join(dir, 'mailprocd.yaml');
    writeFileSync(cfg, 'hostname: unit.test\n');
    const out = execFileSync(process.execPath, [DAEMON, '--check-config', '--config', cfg], { encoding: 'utf8', cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    assert.equal((parse(out) as { hostname: string }).hostname, 'unit.test');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the unit logs as mailprocd to the mail facility, creates its working directory and is ordered before either Postfix master', () => {
  const unit = readFileSync(UNIT, 'utf8');
  const value = (key: string): string => unit.match(new RegExp(`^${key}=(.*)$`, 'm'))?.[1] ?? '';
  assert.equal(value('SyslogIdentifier'), 'mailprocd');
  assert.equal(value('SyslogFacility'), 'mail');
  // WorkingDirectory must exist before the start: StateDirectory= makes /var/lib/<name>.
  assert.equal(value('WorkingDirectory'), `/var/lib/${value('StateDirectory')}`);
  assert.notEqual(value('RuntimeDirectory'), '');
  const before = value('Before').split(/\s+/);
  assert.ok(before.includes('postfix@-.service') && before.includes('postfix.service'), `Before=${value('Before')}`);
  // A root master that changes to users' ids, hands them directories and signals their workers.
  const caps = value('CapabilityBoundingSet').split(/\s+/);
  for (const cap of ['CAP_SETUID', 'CAP_SETGID', 'CAP_CHOWN', 'CAP_FOWNER', 'CAP_DAC_OVERRIDE', 'CAP_KILL']) assert.ok(caps.includes(cap), cap);
  assert.ok(!caps.includes('CAP_SYS_ADMIN') && !caps.includes('CAP_SYS_PTRACE'));
  assert.equal(value('User'), '', 'runs as root: the workers drop to each user');
});
