// The systemd units in docs/ (mailprocd.service, mailmond.service: the Debian
// package installs them as they are, README "Running as a service") must be
// ones systemd accepts: `systemd-analyze verify` with no complaint at all
// (unknown keys are only warnings, so stderr must be empty), and their
// commands must be the real ones (--check-config and --config exist). The
// installed copies, man pages included, are verified by test/package.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { DAEMON } from '../helpers/daemon.js';

const MAILMOND = join(process.cwd(), 'dist/src/cli/mailmond.js');
import { requireProgram } from '../helpers/components.js';

const UNIT = join(process.cwd(), 'docs', 'mailprocd.service');
const MONITOR_UNIT = join(process.cwd(), 'docs', 'mailmond.service');
const SYNC_UNIT = join(process.cwd(), 'docs', 'mailprocd-db-sync.service');
const MAILPROC = join(process.cwd(), 'dist/src/cli/mailproc.js');

test('docs/mailprocd.service, docs/mailmond.service and docs/mailprocd-db-sync.service pass systemd-analyze verify without a warning', (t) => {
  const analyze = requireProgram(t, 'systemd-analyze', 'systemd');
  if (analyze === undefined) return;
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-unit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // The commands the package links into /usr/bin, here from the build, so that
  // verify's "is the command executable" check is about the unit. The man
  // pages named in Documentation= exist only once the package is installed.
  const unit = readFileSync(UNIT, 'utf8').replaceAll('/usr/bin/mailprocd ', `${process.execPath} ${DAEMON} `);
  const monitor = readFileSync(MONITOR_UNIT, 'utf8').replaceAll('/usr/bin/mailmond ', `${process.execPath} ${MAILMOND} `);
  const sync = readFileSync(SYNC_UNIT, 'utf8').replaceAll('/usr/bin/mailproc ', `${process.execPath} ${MAILPROC} `);
  assert.notEqual(unit, readFileSync(UNIT, 'utf8'));
  assert.notEqual(monitor, readFileSync(MONITOR_UNIT, 'utf8'));
  assert.notEqual(sync, readFileSync(SYNC_UNIT, 'utf8'));
  const path = join(dir, 'mailprocd.service');
  writeFileSync(path, unit);
  writeFileSync(join(dir, 'mailmond.service'), monitor);
  writeFileSync(join(dir, 'mailprocd-db-sync.service'), sync);
  const r = spawnSync(analyze, ['verify', '--man=no', path, join(dir, 'mailmond.service'), join(dir, 'mailprocd-db-sync.service')], { encoding: 'utf8' });
  assert.equal(r.stderr, '', 'no warnings');
  assert.equal(r.status, 0);
});

test('the unit starts the daemon with options it has, and checks the config first', () => {
  const unit = readFileSync(UNIT, 'utf8');
  const exec = (key: string): string => unit.match(new RegExp(`^${key}=(.*)$`, 'm'))?.[1] ?? '';
  assert.match(exec('ExecStartPre'), /^\/usr\/bin\/mailprocd --check-config --config \S+$/);
  assert.match(exec('ExecStart'), /^\/usr\/bin\/mailprocd --config \S+$/);
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
  // The log lines are on stderr: whatever happens to stdout, stderr goes to the journal.
  assert.ok(value('StandardError') === 'journal' || (value('StandardError') === '' && value('StandardOutput') === ''), `StandardError=${value('StandardError')}`);
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
  // Enabled, Debian's Postfix master pulls it in.
  assert.ok(value('WantedBy').split(/\s+/).includes('postfix@-.service'), `WantedBy=${value('WantedBy')}`);
});

test('mailmond.service starts after mailprocd and either Postfix master, logs to mail, and keeps no capability', () => {
  const unit = readFileSync(MONITOR_UNIT, 'utf8');
  const value = (key: string): string => unit.match(new RegExp(`^${key}=(.*)$`, 'm'))?.[1] ?? '';
  const after = value('After').split(/\s+/);
  for (const u of ['mailprocd.service', 'postfix@-.service', 'postfix.service']) assert.ok(after.includes(u), `After=${value('After')}`);
  assert.ok(value('Wants').split(/\s+/).includes('mailprocd.service'), `Wants=${value('Wants')}`);
  assert.match(value('ExecStart'), /^\/usr\/bin\/mailmond run --config \/etc\/mailprocd\/mailprocd\.yaml \$MAILMOND_OPTS$/);
  assert.equal(value('SyslogIdentifier'), 'mailmond');
  assert.equal(value('SyslogFacility'), 'mail');
  assert.match(unit, /^CapabilityBoundingSet=$/m);
});

test('mailprocd-db-sync.service runs db sync --watch with options mailproc has, before mailprocd, writing only the state directory and keeping no capability', () => {
  const unit = readFileSync(SYNC_UNIT, 'utf8');
  const value = (key: string): string => unit.match(new RegExp(`^${key}=(.*)$`, 'm'))?.[1] ?? '';
  assert.equal(value('ExecStart'), '/usr/bin/mailproc --config /etc/mailprocd/mailprocd.yaml db sync --watch --from ${DB_SYNC_URL} $DB_SYNC_OPTS');
  assert.ok(value('Before').split(/\s+/).includes('mailprocd.service'));
  assert.equal(value('ProtectSystem'), 'strict');
  assert.equal(value('ReadWritePaths'), '/var/lib/mailprocd');
  assert.equal(value('CapabilityBoundingSet'), '');
  // The options exist: with a URL that is not PostgreSQL's, mailproc says so (64), not "unknown option".
  const r = spawnSync(process.execPath, [MAILPROC, 'db', 'sync', '--watch', '--from', 'mysql://x', '--interval', '60s'], { encoding: 'utf8' });
  assert.equal(r.status, 64);
  assert.match(r.stderr, /--from wants a postgresql:\/\/ URL/);
});
