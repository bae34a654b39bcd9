// The command-line conventions of mailproc and mailprocd: --version, help on
// stdout with exit 0, unknown commands, options and subcommands named on
// stderr with exit 64 and the usage (golden files under
// test/cli/golden/conventions/, one per command line: the exit code, stdout
// and stderr; MAILPROC_UPDATE_GOLDEN=1 rewrites them from the current code);
// config discovery (--config, $MAILPROCD_CONFIG, the system file, the
// embedded default under the package, never the caller's directory); read-only
// commands that create nothing; queue show for people and --json for tools.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { discoverConfig, loadDiscoveredConfig, packageRoot, packageVersion } from '../../src/config/index.js';
import { DAEMON, MAILPROC } from '../helpers/daemon.js';

const GOLDEN = fileURLToPath(new URL('../../../test/cli/golden/conventions/', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'mailproc-cli-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** No system file and no $MAILPROCD_CONFIG unless a test says so; UTC for the local times. */
const baseEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, MAILPROCD_SYSTEM_CONFIG: join(scratch, 'no-such-system.yaml'), TZ: 'UTC', ...extra };
  if (extra.MAILPROCD_CONFIG === undefined) delete env.MAILPROCD_CONFIG;
  return env;
};

interface Run { readonly status: number | null; readonly stdout: string; readonly stderr: string }

function run(cli: string, args: readonly string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Run {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: baseEnv(opts.env), cwd: opts.cwd ?? scratch, timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const MAILMOND = join(process.cwd(), 'dist/src/cli/mailmond.js');
const CLIS = { mailproc: MAILPROC, mailprocd: DAEMON, mailmond: MAILMOND } as const;

const GOLDEN_CASES: readonly { readonly name: string; readonly cli: keyof typeof CLIS; readonly args: readonly string[] }[] = [
  { name: 'mailproc-help', cli: 'mailproc', args: ['--help'] },
  { name: 'mailproc-help-command', cli: 'mailproc', args: ['help'] },
  { name: 'mailproc-version', cli: 'mailproc', args: ['--version'] },
  { name: 'mailproc-help-queue', cli: 'mailproc', args: ['help', 'queue'] },
  { name: 'mailproc-queue-show-help', cli: 'mailproc', args: ['queue', 'show', '--help'] },
  { name: 'mailproc-unknown-command', cli: 'mailproc', args: ['frobnicate'] },
  { name: 'mailproc-unknown-option', cli: 'mailproc', args: ['--frobnicate'] },
  { name: 'mailproc-unknown-subcommand', cli: 'mailproc', args: ['queue', 'bogus'] },
  { name: 'mailproc-queue-list-unknown-option', cli: 'mailproc', args: ['queue', 'list', '--bogus'] },
  { name: 'mailprocd-help', cli: 'mailprocd', args: ['--help'] },
  { name: 'mailprocd-version', cli: 'mailprocd', args: ['--version'] },
  { name: 'mailprocd-unknown-option', cli: 'mailprocd', args: ['--frobnicate'] },
  { name: 'mailprocd-bad-log-format', cli: 'mailprocd', args: ['--log-format', 'xml'] },
  { name: 'mailmond-version', cli: 'mailmond', args: ['--version'] },
  { name: 'mailmond-unknown-option', cli: 'mailmond', args: ['--frobnicate'] },
];

/** The golden text of a run; the package version is a placeholder so that a release changes no golden file. */
const transcript = (r: Run): string =>
  `exit ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`.replaceAll(packageVersion(), '@VERSION@');

describe('mailproc, mailprocd and mailmond command lines: golden transcripts', () => {
  for (const c of GOLDEN_CASES) {
    test(`${c.cli} ${c.args.join(' ')} prints exactly ${c.name}.out`, () => {
      const got = transcript(run(CLIS[c.cli], c.args));
      const file = join(GOLDEN, `${c.name}.out`);
      if (process.env.MAILPROC_UPDATE_GOLDEN === '1') writeFileSync(file, got);
      assert.equal(got, readFileSync(file, 'utf8'));
    });
  }

  test('every golden file belongs to a case', () => {
    const names = new Set(GOLDEN_CASES.map((c) => `${c.name}.out`));
    assert.deepEqual(readdirSync(GOLDEN).filter((f) => !names.has(f)), []);
  });

  test('help goes to stdout with exit 0, usage errors to stderr with exit 64, for every command', () => {
    for (const cmd of ['db', 'db compile', 'db show', 'status', 'queue', 'queue list', 'lists sync', 'policy', 'rules', 'learn', 'completion']) {
      const r = run(MAILPROC, [...cmd.split(' '), '--help']);
      assert.equal(r.status, 0, `${cmd} --help: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: mailproc ${cmd} `), cmd);
      assert.equal(r.stderr, '', cmd);
      const h = run(MAILPROC, ['help', ...cmd.split(' ').slice(0, 1)]);
      assert.equal(h.status, 0, `help ${cmd}`);
    }
    for (const [args, want] of [
      [['db', 'bogus'], /^mailproc db: unknown subcommand "bogus"\n/],
      [['db', 'show', 'rules'], /^mailproc db show: missing required argument 'key'\n/],
      [['policy', 'list', '--bogus'], /^mailproc policy: unknown option "--bogus"\n/],
      [['rules', 'list', 'a@b.test', '--bogus'], /^mailproc rules: unknown option "--bogus"\n/],
      [['learn', '--bogus'], /^mailproc learn: unknown option "--bogus"\n/],
      [['completion', 'tcsh'], /^mailproc completion: unknown shell "tcsh"/],
    ] as const) {
      const r = run(MAILPROC, args);
      assert.equal(r.status, 64, args.join(' '));
      assert.match(r.stderr, want, args.join(' '));
      assert.equal(r.stdout, '', args.join(' '));
    }
  });

  test('mailproc completion bash is a bash script that completes the commands and queue subcommands', () => {
    const r = run(MAILPROC, ['completion', 'bash']);
    assert.equal(r.status, 0, r.stderr);
    const script = join(scratch, 'completion.bash');
    writeFileSync(script, r.stdout);
    const complete = (line: string): string[] => {
      const words = line.split(' ');
      const probe = `source ${script}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _mailproc; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const b = spawnSync('bash', ['-c', probe], { encoding: 'utf8' });
      assert.equal(b.status, 0, b.stderr);
      return b.stdout.split('\n').filter((w) => w !== '');
    };
    assert.deepEqual(complete('mailproc q'), ['queue']);
    assert.deepEqual(complete('mailproc queue s').sort(), ['show']);
    assert.deepEqual(complete('mailproc --config f.yaml queue d'), ['delete']);
    assert.deepEqual(complete('mailproc db show r'), ['rules']);
    assert.ok(complete('mailproc rules ').includes('test'));
  });
});

describe('config discovery, the same for every command', () => {
  const system = join(scratch, 'etc-mailprocd.yaml');
  const fromEnv = join(scratch, 'env.yaml');
  const fromOption = join(scratch, 'option.yaml');
  writeFileSync(system, 'hostname: system.test\n');
  writeFileSync(fromEnv, 'hostname: env.test\n');
  writeFileSync(fromOption, 'hostname: option.test\n');

  const cases = [
    { why: '--config wins over everything', option: 'o.yaml', env: { MAILPROCD_CONFIG: 'e.yaml' }, etc: true, want: { kind: 'file', file: 'o.yaml', from: 'option' } },
    { why: '$MAILPROCD_CONFIG wins over the system file', env: { MAILPROCD_CONFIG: 'e.yaml' }, etc: true, want: { kind: 'file', file: 'e.yaml', from: 'environment' } },
    { why: 'an empty $MAILPROCD_CONFIG is no setting', env: { MAILPROCD_CONFIG: '' }, etc: true, want: { kind: 'file', file: '/etc/mailprocd/mailprocd.yaml', from: 'system' } },
    { why: 'the system file when it exists', env: {}, etc: true, want: { kind: 'file', file: '/etc/mailprocd/mailprocd.yaml', from: 'system' } },
    { why: 'else the embedded default, based at the package root', env: {}, etc: false, want: { kind: 'default', base: '/pkg' } },
  ] as const;
  for (const c of cases) {
    test(c.why, () => {
      const got = discoverConfig({
        ...('option' in c ? { option: c.option } : {}), env: c.env, root: '/pkg',
        exists: (p) => c.etc && p === '/etc/mailprocd/mailprocd.yaml',
      });
      assert.deepEqual(got, c.want);
    });
  }

  test('the package root is the checkout, found from the module, and holds package.json', () => {
    assert.ok(existsSync(join(packageRoot(), 'package.json')));
    assert.equal(packageRoot(), process.cwd());
  });

  test('the embedded default resolves against the package root, not the working directory', () => {
    const c = loadDiscoveredConfig();
    // The test's own environment may name a file; the default is what discoverConfig gives without one.
    if (process.env.MAILPROCD_CONFIG === undefined && !existsSync('/etc/mailprocd/mailprocd.yaml')) assert.equal(c.paths.state, join(packageRoot(), 'var'));
  });

  const hostnameOf = (env: Record<string, string>, args: readonly string[] = []): string => {
    const r = run(DAEMON, ['--check-config', ...args], { env, cwd: scratch });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /is valid\n/);
    return /^hostname: (.*)$/m.exec(r.stdout)?.[1] ?? '';
  };

  test('mailprocd: $MAILPROCD_CONFIG wins over the system file, --config over both, the system file over the default', () => {
    assert.equal(hostnameOf({ MAILPROCD_SYSTEM_CONFIG: system, MAILPROCD_CONFIG: fromEnv }), 'env.test');
    assert.equal(hostnameOf({ MAILPROCD_SYSTEM_CONFIG: system, MAILPROCD_CONFIG: fromEnv }, ['--config', fromOption]), 'option.test');
    assert.equal(hostnameOf({ MAILPROCD_SYSTEM_CONFIG: system }), 'system.test');
  });

  test('mailprocd --check-config with no file prints the default as YAML in its own units, paths under the package', () => {
    const r = run(DAEMON, ['--check-config'], { cwd: scratch });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /mailprocd: configuration \(embedded default\) is valid\n/);
    assert.match(r.stdout, new RegExp(`^  state: ${packageRoot()}/var$`, 'm'));
    assert.match(r.stdout, /^ {2}message_size: 50M$/m);
    assert.match(r.stdout, /^ {2}client_timeout: 5m$/m);
    assert.match(r.stdout, /^ {4}mode: "0660"$/m);
    // The milter endpoint is part of the default: where Postfix's smtpd_milters connects, and how a failing filter is answered.
    assert.match(r.stdout, /^milter:\n {2}listen:\n {4}- unix:\.\/var\/run\/milter\.sock\n {4}- 127\.0\.0\.1:10042\n/m);
    assert.match(r.stdout, /^ {2}filter_timeout: 10s\n {2}on_filter_error: tempfail$/m);
    assert.ok(!r.stdout.includes(scratch), 'nothing resolved against the working directory');
  });

  test('the printed configuration reads back as the same configuration', () => {
    const file = join(scratch, 'units.yaml');
    writeFileSync(file, 'limits:\n  message_size: 10M\n  shutdown_grace: 1500ms\nqueue:\n  lifetime: 2w\n');
    const first = run(DAEMON, ['--check-config', '--config', file]);
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /^ {2}message_size: 10M$/m);
    assert.match(first.stdout, /^ {2}shutdown_grace: 1500ms$/m);
    assert.match(first.stdout, /^ {2}lifetime: 2w$/m);
    const again = join(scratch, 'again.yaml');
    writeFileSync(again, first.stdout);
    const second = run(DAEMON, ['--check-config', '--config', again]);
    assert.equal(second.status, 0, second.stderr);
    assert.equal(second.stdout, first.stdout);
  });

  test('mailproc finds the same file: db show reads the tables of the config in $MAILPROCD_CONFIG', () => {
    const dir = join(scratch, 'env-tables');
    mkdirSync(join(dir, 'db'), { recursive: true });
    writeFileSync(join(dir, 'db', 'rules'), `alice@example.test  maildir:${dir}/mail/\${user}/Maildir/\n`);
    const cfg = join(dir, 'mailprocd.yaml');
    writeFileSync(cfg, `paths:\n  state: ${dir}/var\n  sources: ${dir}/db\n`);
    const compiled = run(MAILPROC, ['db', 'compile'], { env: { MAILPROCD_CONFIG: cfg } });
    assert.equal(compiled.status, 0, compiled.stderr);
    const shown = run(MAILPROC, ['db', 'show', 'rules', 'alice@example.test'], { env: { MAILPROCD_CONFIG: cfg, MAILPROCD_SYSTEM_CONFIG: system } });
    assert.equal(shown.status, 0, shown.stderr);
    assert.match(shown.stdout, /maildir/);
  });
});

describe('read-only commands create nothing', () => {
  test('db show from a directory without a database says so, exits 1 and leaves the directory empty', () => {
    const empty = mkdtempSync(join(scratch, 'empty-'));
    const cfg = join(scratch, 'relative.yaml');
    writeFileSync(cfg, 'paths:\n  state: ./var\n  sources: ./db\n');
    const r = run(MAILPROC, ['db', 'show', 'rules', 'alice@example.test', '--config', cfg], { cwd: empty });
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`^mailproc: no compiled tables in ${empty}/var/db \\(configuration: ${cfg}\\)`));
    assert.deepEqual(readdirSync(empty), []);
  });

  test('status and queue list with no daemon exit 69 and create nothing', () => {
    const empty = mkdtempSync(join(scratch, 'empty-'));
    const cfg = join(scratch, 'relative.yaml');
    for (const args of [['status'], ['queue', 'list'], ['queue', 'show', 'X1']]) {
      const r = run(MAILPROC, [...args, '--config', cfg], { cwd: empty });
      assert.equal(r.status, 69, r.stderr);
      assert.match(r.stderr, /cannot reach mailprocd/);
    }
    assert.deepEqual(readdirSync(empty), []);
  });
});

describe('queue show: text for people, --json for tools', () => {
  const run_ = join(scratch, 'fake-run');
  mkdirSync(run_, { recursive: true });
  const cfg = join(scratch, 'fake.yaml');
  writeFileSync(cfg, `paths:\n  state: ${scratch}/fake-state\n  run: ${run_}\n`);
  const message = {
    id: '4F2A0B9C1D', sender: 'bob@remote.test', arrival: Date.UTC(2026, 11, 5, 8, 47, 12), recipients: ['alice@example.test', 'Carol@example.test'],
    done: ['carol@example.test'], size: 12605, attempts: 2, lastError: '4.2.0 mailbox busy',
  };
  const reply = { ok: true, message, headers: 'From: bob@remote.test\r\nSubject: hello\r\n\tthere \u001b[31mred\r\n\r\n' };
  let server: Server;
  const ready = new Promise<void>((resolve) => {
    server = createServer((sock) => {
      sock.once('data', () => sock.end(`${JSON.stringify(reply)}\n`));
    }).listen(join(run_, 'control.sock'), resolve);
  });
  after(() => server.close());

  // The fake daemon answers in this process: the CLI must run without blocking it.
  const show = (args: readonly string[]): Promise<Run> => new Promise((resolve) => {
    execFile(process.execPath, [MAILPROC, 'queue', 'show', '4F2A0B9C1D', ...args, '--config', cfg], { encoding: 'utf8', env: baseEnv(), timeout: 30_000 },
      (err, stdout, stderr) => resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }));
  });

  test('--json prints the daemon\'s reply as it came, as before', async () => {
    await ready;
    const r = await show(['--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${JSON.stringify(reply, null, 2)}\n`);
  });

  test('without --json: local times, a size like 12.3 KiB, each recipient\'s state, and headers made printable', async () => {
    await ready;
    const r = await show([]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^queue id: {4}4F2A0B9C1D$/m);
    assert.match(r.stdout, /^arrived: {5}2026-12-05 08:47:12 \+0000 \(/m);
    assert.match(r.stdout, /^size: {8}12\.3 KiB \(12605 bytes\)$/m);
    assert.match(r.stdout, /^last error: {2}4\.2\.0 mailbox busy$/m);
    assert.match(r.stdout, /^ {2}alice@example\.test {2}to go$/m);
    assert.match(r.stdout, /^ {2}Carol@example\.test {2}done$/m);
    assert.match(r.stdout, /^ {2}Subject: hello$/m);
    assert.match(r.stdout, /^ {6}there \\x1b\[31mred$/m);
    assert.ok(!r.stdout.includes('\u001b'));
  });
});
