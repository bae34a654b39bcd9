// The inside of the package install test (test/package/deb.test.ts), run as
// the first process of private mount, network and pid namespaces:
//   unshare --mount --net --pid --fork --kill-child --mount-proc --propagation private \
//     node dist/test/package/installed-run.js WORK DEB
// It is not a test file (no .test.js): it acts as an administrator would and
// asserts with node:assert; exit 0 and one JSON line on stdout ({ ok: true,
// … what it saw }) when everything held, otherwise exit 1 with the reason.
//
// Why the rest of the machine never sees it: before dpkg runs, /etc, /usr and
// /var get an overlay whose upper layer is a tmpfs mounted in this namespace,
// and /run a tmpfs of its own. dpkg writes its files, its database
// (/var/lib/dpkg) and the conffile /etc/mailprocd/mailprocd.yaml into that
// tmpfs only, so tests running beside this one never find the conffile by
// config discovery, and dpkg's real database never records the package. The
// network namespace has only its own loopback: the daemon's ports cannot
// meet another test's. The private /run hides the host's systemd, so the
// maintainer scripts' systemctl calls cannot reach a service on the host.
// When this process ends, however it ends, the kernel kills every process of
// the pid namespace (the daemon included) and drops every mount: nothing is
// left to clean up but WORK, which the outer test removes.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { findProgram } from '../helpers/components.js';
import { onlyMessage, stored } from '../helpers/mailbox.js';
import { dataBlock, RawClient } from '../helpers/raw-client.js';

const [work, deb] = process.argv.slice(2);
if (work === undefined || deb === undefined) throw new Error('usage: installed-run.js WORK DEB');

const report: Record<string, unknown> = {};

function sh(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function mustRun(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv): string {
  const r = sh(cmd, args, env);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Everything dpkg and the daemon write goes into a tmpfs that dies with this namespace. */
function isolate(): void {
  // We are pid 1 of a new pid namespace: /proc is ours (--mount-proc), the mounts are private copies.
  assert.equal(process.pid, 1, 'runs as the first process of its own pid namespace');
  const layers = join(work as string, 'layers');
  mkdirSync(layers, { recursive: true });
  mustRun('mount', ['-t', 'tmpfs', '-o', 'size=1g,mode=0700', 'mailprocd-install-test', layers]);
  for (const dir of ['etc', 'usr', 'var']) {
    const upper = join(layers, 'upper', dir);
    const scratch = join(layers, 'work', dir);
    mkdirSync(upper, { recursive: true });
    mkdirSync(scratch, { recursive: true });
    mustRun('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=/${dir},upperdir=${upper},workdir=${scratch}`, `/${dir}`]);
  }
  mustRun('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'mailprocd-install-run', '/run']);
  // Our own loopback, so that 127.0.0.1 exists in here (it is down in a new network namespace).
  const ip = findProgram('ip');
  if (ip !== undefined) mustRun(ip, ['link', 'set', 'lo', 'up']);
}

function dpkgStatus(): string {
  const r = sh('dpkg-query', ['-W', '-f=${Status}', 'mailprocd']);
  return r.status === 0 ? r.stdout : 'not known';
}

async function deliverThroughInstalledDaemon(): Promise<void> {
  // A config of our own: unix sockets in WORK, every TCP listener off (the
  // embedded defaults' fixed ports, and a milter listener when one comes),
  // no metrics port, no spam checker. Named with --config, never discovered.
  const dir = join(work as string, 'daemon');
  const mail = join(dir, 'mail');
  const sources = join(dir, 'db');
  mkdirSync(sources, { recursive: true });
  // Deliveries run as nobody: WORK and dir must be traversable.
  chmodSync(work as string, 0o755);
  chmodSync(dir, 0o755);
  writeFileSync(join(sources, 'rules'), `alice@example.test  maildir:${mail}/\${user}/Maildir/\n`);
  for (const t of ['uid', 'gid', 'lists', 'spam']) writeFileSync(join(sources, t), '');
  const socket = join(dir, 'lmtp.sock');
  const config = join(dir, 'mailprocd.yaml');
  writeFileSync(config, stringify({
    hostname: 'installed.test',
    paths: { state: join(dir, 'state'), sources, mail, run: join(dir, 'run') },
    lmtp: { listen: [`unix:${socket}`] },
    smtp: { listen: [] },
    policy: { listen: [] },
    milter: { listen: [] },
    metrics: { listen: [] },
    spam: { enabled: false },
    relay: { smtp: '127.0.0.1:25' },
  }));
  const env = { ...process.env };
  delete env.MAILPROCD_CONFIG;
  delete env.MAILPROCD_SYSTEM_CONFIG;
  const child = spawn('/usr/bin/mailprocd', ['--config', config], { stdio: ['ignore', 'ignore', 'pipe'], env });
  const log: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    let partial = '';
    child.stderr.on('data', (d: Buffer) => {
      partial += d.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      log.push(...lines);
      if (lines.some((l) => / ready /.test(l))) resolve();
    });
    void exited.then((code) => reject(new Error(`the installed mailprocd exited (${code}) before it was ready:\n${log.join('\n')}`)));
  });
  try {
    await ready;
    const client = await RawClient.open({ path: socket });
    assert.equal((await client.reply()).code, 220);
    assert.equal((await client.command('LHLO client.test')).code, 250);
    assert.equal((await client.command('MAIL FROM:<sender@example.net>')).code, 250);
    assert.equal((await client.command('RCPT TO:<alice@example.test>')).code, 250);
    assert.equal((await client.command('DATA')).code, 354);
    const message = 'From: sender@example.net\r\nTo: alice@example.test\r\nSubject: installed\r\n\r\nDelivered by the installed package.\r\n';
    client.write(dataBlock(message));
    // A hang detector, not a window: the first delivery starts a worker.
    const reply = await client.reply(120_000);
    report.lmtpReply = reply.line;
    assert.equal(reply.code, 250, reply.line);
    await client.command('QUIT');
    const got = onlyMessage(join(mail, 'alice', 'Maildir'));
    assert.deepEqual(got.rest, stored(message));
    // Started as root, the daemon delivers as nobody, never as root.
    assert.equal(got.uid, Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' })));
    report.delivered = got.path;
    report.deliveryLog = log.find((l) => /status=sent/.test(l));
    assert.match(String(report.deliveryLog), /to=<alice@example\.test>.*dsn=2\.0\.0, status=sent/);
    // The installed mailproc talks to the installed daemon over its control socket.
    const status = mustRun('/usr/bin/mailproc', ['--config', config, 'status'], env);
    assert.match(status, /^delivery delay since start, 1 delivery attempt\(s\)/m);
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, `the installed mailprocd did not stop cleanly:\n${log.join('\n')}`);
}

async function main(): Promise<void> {
  isolate();
  assert.equal(existsSync('/etc/mailprocd/mailprocd.yaml'), false, '/etc/mailprocd/mailprocd.yaml before the install: is mailprocd installed on this machine?');

  report.install = mustRun('dpkg', ['-i', deb as string], { ...process.env, DEBIAN_FRONTEND: 'noninteractive' });
  assert.equal(dpkgStatus(), 'install ok installed');

  // The files where an administrator looks for them.
  for (const c of ['mailprocd', 'mailproc', 'mailmond']) assert.ok(statSync(`/usr/bin/${c}`).mode & 0o111, `/usr/bin/${c} is executable`);
  const conf = statSync('/etc/mailprocd/mailprocd.yaml');
  assert.equal(conf.mode & 0o777, 0o640, 'the config may hold secrets: not world-readable');
  const conffiles = readFileSync('/var/lib/dpkg/info/mailprocd.conffiles', 'utf8').split('\n');
  assert.ok(conffiles.includes('/etc/mailprocd/mailprocd.yaml'), 'mailprocd.yaml is a conffile');
  assert.ok(conffiles.includes('/etc/mailprocd/db/rules'), 'the table sources are conffiles');
  for (const page of ['man8/mailprocd.8.gz', 'man1/mailproc.1.gz', 'man8/mailmond.8.gz', 'man5/mailprocd.yaml.5.gz']) assert.ok(existsSync(`/usr/share/man/${page}`), page);

  report.version = mustRun('/usr/bin/mailprocd', ['--version']).trim();
  assert.match(String(report.version), /^mailprocd \d+\.\d+\.\d+$/);
  assert.match(mustRun('/usr/bin/mailproc', ['--version']), /^mailproc \d+\.\d+\.\d+/);
  assert.match(mustRun('/usr/bin/mailmond', ['--version']), /^mailmond \d+\.\d+\.\d+/);
  assert.match(mustRun('man', ['-w', 'mailprocd.yaml']), /man5\/mailprocd\.yaml\.5\.gz/);

  // --check-config with nothing named: it must find the installed conffile.
  const env = { ...process.env };
  delete env.MAILPROCD_CONFIG;
  delete env.MAILPROCD_SYSTEM_CONFIG;
  const check = sh('/usr/bin/mailprocd', ['--check-config'], env);
  assert.equal(check.status, 0, `mailprocd --check-config on the installed config:\n${check.stderr}`);
  assert.match(check.stderr, /configuration \/etc\/mailprocd\/mailprocd\.yaml is valid/);
  const effective = parse(check.stdout) as { paths: { state: string; run: string }; lmtp: { listen: string[]; socket: { group?: string } } };
  report.checkConfig = { state: effective.paths.state, run: effective.paths.run, lmtp: effective.lmtp.listen, group: effective.lmtp.socket.group };
  assert.equal(effective.paths.state, '/var/lib/mailprocd');
  assert.equal(effective.paths.run, '/run/mailprocd');
  assert.deepEqual(effective.lmtp.listen, ['unix:/run/mailprocd/lmtp']);
  assert.equal(effective.lmtp.socket.group, 'postfix');

  await deliverThroughInstalledDaemon();

  // The installed units, with the installed commands and man pages.
  const analyze = findProgram('systemd-analyze');
  assert.ok(analyze !== undefined, 'systemd-analyze: install the Debian package "systemd"');
  const manCheck = findProgram('man') !== undefined ? [] : ['--man=no'];
  const verify = sh(analyze, ['verify', ...manCheck, '/lib/systemd/system/mailprocd.service', '/lib/systemd/system/mailmond.service', '/lib/systemd/system/mailprocd-db-sync.service']);
  report.verify = { status: verify.status, stderr: verify.stderr, manChecked: manCheck.length === 0 };
  assert.equal(verify.stderr, '', 'systemd-analyze verify: no warnings');
  assert.equal(verify.status, 0);

  // What a daemon run under systemd leaves in /var/lib/mailprocd, one message still queued:
  // the purge forgets the tables and the state database, and never the queued mail.
  const state = '/var/lib/mailprocd';
  for (const d of ['db', 'state-db', 'spool/active']) mkdirSync(join(state, d), { recursive: true });
  writeFileSync(join(state, 'db', 'data.mdb'), 'compiled');
  writeFileSync(join(state, 'state-db', 'data.mdb'), 'state');
  const queued = join(state, 'spool', 'active', '1A2B3C4D5E6F');
  writeFileSync(queued, 'MAILPROC-SPOOL 1\n{}\nSubject: still queued\n\n');

  const purge = sh('dpkg', ['--purge', 'mailprocd'], { ...process.env, DEBIAN_FRONTEND: 'noninteractive' });
  assert.equal(purge.status, 0, `dpkg --purge:\n${purge.stdout}${purge.stderr}`);
  report.purge = purge.stdout + purge.stderr;
  assert.match(String(report.purge), /\/var\/lib\/mailprocd\/spool still holds queued mail; it is kept/);
  assert.equal(readFileSync(queued, 'utf8'), 'MAILPROC-SPOOL 1\n{}\nSubject: still queued\n\n', 'the queued message survives the purge');
  assert.equal(existsSync(join(state, 'db')), false, 'compiled tables purged');
  assert.equal(existsSync(join(state, 'state-db')), false, 'state database purged');
  report.afterPurge = dpkgStatus();
  assert.notEqual(report.afterPurge, 'install ok installed');
  for (const gone of ['/etc/mailprocd', '/usr/lib/mailprocd', '/usr/bin/mailprocd', '/lib/systemd/system/mailprocd.service']) assert.equal(existsSync(gone), false, `${gone} after the purge`);
  report.ok = true;
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(1);
});
