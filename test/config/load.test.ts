// Configuration (src/config/load.ts, schema.ts): the embedded default, the
// size and duration forms an administrator may write, every problem reported
// at once and each naming its key, YAML syntax errors with file and line, the
// frozen result, and `mailprocd --check-config` exit codes.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError, loadConfig, resolveConfig, type Config } from '../../src/config/index.js';

const CWD = '/srv/mailprocd';

/** The problems of the ConfigError that `fn` throws. */
function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail('expected a ConfigError, nothing was thrown');
}

describe('the embedded default', () => {
  const c = resolveConfig({}, undefined, CWD);
  const expectedUser = process.getuid?.() === 0 ? 'nobody' : userInfo().username;

  test('LMTP listens on ./var/run/lmtp.sock resolved against the working directory and on 127.0.0.1:2424', () => {
    assert.deepEqual(c.lmtp.listen, [
      { kind: 'unix', path: '/srv/mailprocd/var/run/lmtp.sock', host: '', port: 0, spec: 'unix:./var/run/lmtp.sock' },
      { kind: 'tcp', path: '', host: '127.0.0.1', port: 2424, spec: '127.0.0.1:2424' },
    ]);
  });

  test('SMTP listens on 127.0.0.1:2525', () => {
    assert.deepEqual(c.smtp.listen, [{ kind: 'tcp', path: '', host: '127.0.0.1', port: 2525, spec: '127.0.0.1:2525' }]);
  });

  test('the unix sockets (LMTP, SMTP, policy) are mode 0660 with no owner or group set: the daemon\'s user and group only', () => {
    assert.deepEqual([c.lmtp.socket, c.smtp.socket, c.policy.socket], [{ mode: 0o660 }, { mode: 0o660 }, { mode: 0o660 }]);
  });

  test('the policy listener keeps room for Postfix: 200 connections per listener, 150 per client address, idle ones closed after 300 s', () => {
    assert.deepEqual(c.policy.limits, { request_size: 32 * 1024, request_timeout: 10_000, idle_timeout: 300_000, connections: 200, connections_per_client: 150 });
  });

  test('the message size limit is 50 MiB', () => {
    assert.equal(c.limits.message_size, 50 * 1024 * 1024);
  });

  test('mail goes to maildir:./var/mail/${user}/Maildir/ when no rule matches', () => {
    assert.equal(c.delivery.default, 'maildir:./var/mail/${user}/Maildir/');
  });

  test('deliveries run as nobody when started as root, else as the invoking user', () => {
    assert.equal(c.deliveryUser, expectedUser);
    assert.equal(c.deliveryGroup, undefined);
  });

  test('every path lives under ./var and the sources in ./db, resolved against the working directory', () => {
    assert.deepEqual(c.paths, {
      state: '/srv/mailprocd/var',
      sources: '/srv/mailprocd/db',
      db: '/srv/mailprocd/var/db',
      state_db: '/srv/mailprocd/var/state-db',
      spool: '/srv/mailprocd/var/spool',
      run: '/srv/mailprocd/var/run',
      mail: '/srv/mailprocd/var/mail',
    });
  });

  test('the other limits, queue and log settings have their documented defaults', () => {
    assert.deepEqual(
      {
        limits: c.limits, queue: c.queue, log: c.log, delimiter: c.delivery.recipient_delimiter, fsync: c.delivery.fsync,
        slots: [c.delivery.user_workers, c.delivery.user_concurrency, c.delivery.max_deliveries], allowRoot: c.delivery.allow_root,
        window: [c.lmtp.window, c.lmtp.on_timeout],
      },
      {
        limits: {
          message_size: 52428800, recipients: 1000, client_timeout: 300_000, command_timeout: 300_000, data_min_rate: 500,
          connections: 200, connections_per_client: 50, hard_error_limit: 20, shutdown_grace: 30_000,
        },
        queue: { retry_min: 60_000, retry_max: 3_600_000, lifetime: 5 * 86_400_000, active_limit: 1000 },
        slots: [1, 8, 64],
        allowRoot: [],
        window: [120_000, 'queue'],
        log: { format: 'text', level: 'info' },
        delimiter: '+',
        fsync: true,
      },
    );
  });

  test('the working directory defaults to the process working directory', () => {
    const d = resolveConfig({}, undefined);
    assert.equal(d.lmtp.listen[0]?.path, resolve(process.cwd(), 'var/run/lmtp.sock'));
    assert.equal(d.file, undefined);
  });

  test('loadConfig without a file is the embedded default', () => {
    assert.deepEqual(loadConfig(undefined, CWD), c);
  });

  test('null (an empty YAML document) is the embedded default', () => {
    assert.deepEqual(resolveConfig(null, undefined, CWD), c);
  });

  test('setting one key of a section keeps the defaults of the others', () => {
    const d = resolveConfig({ limits: { recipients: 5 } }, undefined, CWD);
    assert.deepEqual(d.limits, {
      message_size: 52428800, recipients: 5, client_timeout: 300_000, command_timeout: 300_000, data_min_rate: 500,
      connections: 200, connections_per_client: 50, hard_error_limit: 20, shutdown_grace: 30_000,
    });
  });
});

const sizes: { input: string | number; want: number }[] = [
  { input: '10M', want: 10 * 1024 * 1024 },
  { input: '512k', want: 512 * 1024 },
  { input: '512K', want: 512 * 1024 },
  { input: '1G', want: 1024 ** 3 },
  { input: '10MB', want: 10 * 1024 * 1024 },
  { input: '1.5M', want: 1.5 * 1024 * 1024 },
  { input: '100', want: 100 },
  { input: ' 2 k ', want: 2048 },
  { input: 1024, want: 1024 },
  { input: 0, want: 0 },
];

for (const c of sizes) {
  test(`a size written ${JSON.stringify(c.input)} is ${c.want} bytes`, () => {
    assert.equal(resolveConfig({ limits: { message_size: c.input } }, undefined, CWD).limits.message_size, c.want);
  });
}

const durations: { input: string | number; want: number }[] = [
  { input: '30s', want: 30_000 },
  { input: '5m', want: 300_000 },
  { input: '2h', want: 7_200_000 },
  { input: '1d', want: 86_400_000 },
  { input: '1w', want: 7 * 86_400_000 },
  { input: '500ms', want: 500 },
  { input: '1.5s', want: 1500 },
  { input: '90', want: 90_000 },
  { input: 5, want: 5000 },
  { input: 0.25, want: 250 },
];

for (const c of durations) {
  test(`a duration written ${JSON.stringify(c.input)} is ${c.want} ms`, () => {
    assert.equal(resolveConfig({ limits: { client_timeout: c.input } }, undefined, CWD).limits.client_timeout, c.want);
  });
}

const badConfigs: { name: string; raw: unknown; want: RegExp }[] = [
  { name: 'an unknown key is named with its section', raw: { limits: { mesage_size: '10M' } }, want: /^limits\.mesage_size: unknown key$/ },
  { name: 'an unknown top-level key is named', raw: { lmpt: {} }, want: /^lmpt: unknown key$/ },
  { name: 'an unknown key in a nested section is named with its full path', raw: { lmtp: { socket: { owner: 'postfix', mdoe: '0660' } } }, want: /^lmtp\.socket\.mdoe: unknown key$/ },
  { name: 'a string where a number belongs names the key', raw: { limits: { recipients: 'many' } }, want: /^limits\.recipients: .*expected number/ },
  { name: 'a string where a boolean belongs names the key', raw: { delivery: { fsync: 'yes' } }, want: /^delivery\.fsync: .*expected boolean/ },
  { name: 'a number where a string belongs names the key', raw: { delivery: { default: 42 } }, want: /^delivery\.default: / },
  { name: 'a bad size string names the key and the value', raw: { limits: { message_size: 'ten megs' } }, want: /^limits\.message_size: expected a size like 10M.*"ten megs"/ },
  { name: 'a negative size names the key', raw: { limits: { message_size: -1 } }, want: /^limits\.message_size: / },
  { name: 'a bad duration names the key and the value', raw: { queue: { lifetime: 'forever' } }, want: /^queue\.lifetime: expected a duration like 30s.*"forever"/ },
  { name: 'an LMTP window past Postfix\'s lmtp_data_done_timeout is refused', raw: { lmtp: { window: '10m' } }, want: /^lmtp\.window: must be more than 0 and at most 540s/ },
  { name: 'a listen address without a port names the key and its index', raw: { smtp: { listen: ['127.0.0.1:2525', 'localhost'] } }, want: /^smtp\.listen\.1: expected "unix:PATH" or "HOST:PORT"$/ },
  { name: 'a port out of range names the key and the address', raw: { lmtp: { listen: ['127.0.0.1:70000'] } }, want: /^lmtp\.listen\.0: port out of range in "127\.0\.0\.1:70000"$/ },
  { name: 'retry_max below retry_min names retry_max', raw: { queue: { retry_min: '2h', retry_max: '1h' } }, want: /^queue\.retry_max: must not be below queue\.retry_min$/ },
  { name: 'no listener at all is a problem', raw: { lmtp: { listen: [] }, smtp: { listen: [] } }, want: /^lmtp\.listen: no LMTP or SMTP listener configured$/ },
  { name: 'a default destination without a kind names the key', raw: { delivery: { default: '/var/mail' } }, want: /^delivery\.default: expected "maildir:PATH" or "mbox:PATH", got "\/var\/mail"$/ },
  { name: 'a log level outside the list names the key', raw: { log: { level: 'verbose' } }, want: /^log\.level: / },
  { name: 'a socket mode that is not octal names the key', raw: { lmtp: { socket: { mode: '0999' } } }, want: /^lmtp\.socket\.mode: expected an octal mode/ },
  { name: 'a zero command timeout names the key', raw: { limits: { command_timeout: 0 } }, want: /^limits\.command_timeout: must be more than 0$/ },
  { name: 'a negative minimum data rate names the key', raw: { limits: { data_min_rate: -1 } }, want: /^limits\.data_min_rate: / },
  { name: 'an error limit of 0 names the key', raw: { limits: { hard_error_limit: 0 } }, want: /^limits\.hard_error_limit: / },
  { name: 'a delimiter longer than 8 characters names the key', raw: { delivery: { recipient_delimiter: '+-=_.~!#@' } }, want: /^delivery\.recipient_delimiter: / },
  { name: 'an empty hostname names the key', raw: { hostname: '' }, want: /^hostname: / },
  { name: 'a document that is not a mapping is a top-level problem', raw: 'just a string', want: /^\(top level\): / },
];

for (const c of badConfigs) {
  test(c.name, () => {
    const problems = problemsOf(() => resolveConfig(c.raw, 'mailprocd.yaml', CWD));
    assert.equal(problems.length, 1, `problems: ${problems.join(' | ')}`);
    assert.match(problems[0] ?? '', c.want);
  });
}

test('every schema problem is reported in one error, each naming its key', () => {
  const raw = {
    limits: { mesage_size: '10M', recipients: 'many', message_size: 'ten megs' },
    smtp: { listen: ['localhost'] },
    log: { level: 'loud' },
  };
  const problems = problemsOf(() => resolveConfig(raw, 'mailprocd.yaml', CWD));
  const keys = problems.map((p) => p.slice(0, p.indexOf(':'))).sort();
  assert.deepEqual(keys, ['limits.mesage_size', 'limits.message_size', 'limits.recipients', 'log.level', 'smtp.listen.0']);
});

test('every cross-key problem is reported in one error, each naming its key', () => {
  const raw = { lmtp: { listen: ['127.0.0.1:99999'] }, delivery: { default: 'nowhere' }, queue: { retry_min: '1h', retry_max: '1m' } };
  const problems = problemsOf(() => resolveConfig(raw, 'mailprocd.yaml', CWD));
  const keys = problems.map((p) => p.slice(0, p.indexOf(':'))).sort();
  assert.deepEqual(keys, ['delivery.default', 'lmtp.listen.0', 'queue.retry_max']);
});

test('schema problems and cross-key problems are reported together', () => {
  const raw = { limits: { mesage_size: '10M' }, queue: { retry_min: '2h', retry_max: '1h' } };
  const problems = problemsOf(() => resolveConfig(raw, 'mailprocd.yaml', CWD));
  const keys = problems.map((p) => p.slice(0, p.indexOf(':'))).sort();
  assert.deepEqual(keys, ['limits.mesage_size', 'queue.retry_max']);
});

test('the error message names the file and lists every problem on its own line', () => {
  assert.throws(
    () => resolveConfig({ limits: { mesage_size: 1, recipients: 'x' } }, '/etc/mailprocd.yaml', CWD),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.file, '/etc/mailprocd.yaml');
      const lines = err.message.split('\n');
      assert.equal(lines[0], '/etc/mailprocd.yaml: invalid configuration:');
      assert.deepEqual(lines.slice(1).map((l) => l.slice(0, l.indexOf(':'))).sort(), ['  limits.mesage_size', '  limits.recipients']);
      return true;
    },
  );
});

test('a problem in settings given without a file is reported against the embedded default', () => {
  assert.throws(() => resolveConfig({ log: { format: 'xml' } }, undefined, CWD), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.file, '(embedded default)');
    assert.match(err.message, /^\(embedded default\): invalid configuration:\n {2}log\.format: /);
    return true;
  });
});

test('the resolved configuration is deeply frozen', () => {
  const c = resolveConfig({}, undefined, CWD);
  for (const o of [c, c.paths, c.lmtp, c.lmtp.listen, c.lmtp.listen[0], c.lmtp.socket, c.limits, c.delivery, c.queue, c.log]) {
    assert.ok(Object.isFrozen(o));
  }
  assert.throws(() => {
    (c.limits as { message_size: number }).message_size = 1;
  }, TypeError);
  assert.throws(() => {
    (c.lmtp.listen as Config['lmtp']['listen'][number][]).push(c.lmtp.listen[0]!);
  }, TypeError);
});

describe('loadConfig from a file', () => {
  let dir = '';
  const write = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mailprocd-config-test-'));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('a good file is read, its sizes parsed and its file name kept', () => {
    const path = write('good.yaml', 'limits:\n  message_size: 10M\nqueue:\n  retry_min: 30s\n');
    const c = loadConfig(path, '/srv/x');
    assert.equal(c.file, path);
    assert.equal(c.limits.message_size, 10 * 1024 * 1024);
    assert.equal(c.queue.retry_min, 30_000);
  });

  test('a relative file name is resolved and relative paths in it against the working directory', () => {
    write('rel.yaml', 'paths:\n  state: ./state\n');
    const c = loadConfig('rel.yaml', dir);
    assert.equal(c.file, join(dir, 'rel.yaml'));
    assert.equal(c.paths.state, join(dir, 'state'));
    assert.equal(c.paths.spool, join(dir, 'state', 'spool'));
  });

  test('an empty file is the embedded default', () => {
    const path = write('empty.yaml', '');
    assert.deepEqual({ ...loadConfig(path, CWD), file: undefined }, resolveConfig({}, undefined, CWD));
  });

  test('a YAML syntax error names the file and the line', () => {
    const path = write('syntax.yaml', 'limits:\n  message_size: 10M\n bad: [\n');
    assert.throws(() => loadConfig(path, CWD), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.file, path);
      assert.ok(err.message.startsWith(`${path}: `), err.message);
      assert.match(err.problems[0] ?? '', /^line 3: /);
      return true;
    });
  });

  test('a key given twice names the file and the line of the second one', () => {
    const path = write('dup.yaml', 'limits:\n  message_size: 10M\nlimits:\n  recipients: 3\n');
    assert.throws(() => loadConfig(path, CWD), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.file, path);
      assert.deepEqual(err.problems.map((p) => p.slice(0, p.indexOf(':'))), ['line 3']);
      return true;
    });
  });

  test('a schema problem in a file names the file and the key', () => {
    const path = write('bad.yaml', 'limits:\n  mesage_size: 10M\n');
    assert.throws(() => loadConfig(path, CWD), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.file, path);
      assert.deepEqual(err.problems, ['limits.mesage_size: unknown key']);
      return true;
    });
  });

  test('a missing file names the file', () => {
    const path = join(dir, 'missing.yaml');
    assert.throws(() => loadConfig(path, CWD), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.file, path);
      assert.ok(err.message.startsWith(`${path}: `), err.message);
      assert.match(err.problems[0] ?? '', /^cannot read: .*ENOENT/);
      return true;
    });
  });

  test('a file loaded from disk is deeply frozen too', () => {
    const c = loadConfig(write('frozen.yaml', 'smtp:\n  listen: ["127.0.0.1:2600"]\n'), CWD);
    assert.ok(Object.isFrozen(c.smtp.listen[0]));
    assert.equal(c.smtp.listen[0]?.port, 2600);
  });

  describe('mailprocd --check-config', () => {
    const cli = `${process.cwd()}/dist/src/cli/mailprocd.js`;
    const run = (config: string): { status: number | null; stdout: string; stderr: string } => {
      const r = spawnSync(process.execPath, [cli, '--check-config', '--config', config], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    };

    test('a bad file exits 1 and its stderr names the key', () => {
      const r = run(write('cli-bad.yaml', 'limits:\n  mesage_size: 10M\n'));
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /limits\.mesage_size: unknown key/);
      assert.equal(r.stdout, '');
    });

    test('a file with several problems exits 1 and its stderr names every key', () => {
      const r = run(write('cli-bad2.yaml', 'limits:\n  recipients: many\nsmtp:\n  listen: [localhost]\n'));
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /limits\.recipients: /);
      assert.match(r.stderr, /smtp\.listen\.0: /);
    });

    test('a default destination that is not a valid rule exits 1 and names delivery.default', () => {
      const r = run(write('cli-dest.yaml', 'delivery:\n  default: "maildir:/m size>1M"\n'));
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /delivery\.default/);
    });

    test('a YAML syntax error exits 1 and its stderr names the file and line', () => {
      const path = write('cli-syntax.yaml', 'limits: [\n');
      const r = run(path);
      assert.equal(r.status, 1, r.stderr);
      assert.ok(r.stderr.includes(path), r.stderr);
      assert.match(r.stderr, /line \d+: /);
    });

    test('queue.bounce_relay is refused with the key that replaces it; a bad relay.smtp names relay.smtp', () => {
      const r = run(write('cli-bounce-relay.yaml', 'queue:\n  bounce_relay: "127.0.0.1:25"\nrelay:\n  smtp: "mx.example.test"\n'));
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /queue\.bounce_relay: replaced by relay\.smtp/);
      assert.match(r.stderr, /relay\.smtp: expected "HOST:PORT"/);
    });

    test('a relay.smtp nothing answers at is valid but warned about; one that answers is not', async () => {
      const server = createServer();
      await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
      const live = (server.address() as AddressInfo).port;
      const dead = createServer();
      await new Promise<void>((ok) => dead.listen(0, '127.0.0.1', ok));
      const deadPort = (dead.address() as AddressInfo).port;
      await new Promise<void>((ok) => dead.close(() => ok()));
      try {
        const down = run(write('cli-relay-down.yaml', `relay:\n  smtp: "127.0.0.1:${deadPort}"\n`));
        assert.equal(down.status, 0, down.stderr);
        assert.match(down.stderr, new RegExp(`warning: relay\\.smtp 127\\.0\\.0\\.1:${deadPort}: nothing takes mail there \\(ECONNREFUSED\\): bounces, forwards and vacation replies will wait in the queue`));
        const up = run(write('cli-relay-up.yaml', `relay:\n  smtp: "127.0.0.1:${live}"\n`));
        assert.equal(up.status, 0, up.stderr);
        assert.doesNotMatch(up.stderr, /warning/);
        const sendmail = run(write('cli-relay-sendmail.yaml', 'relay:\n  smtp: sendmail\n  sendmail: /nonexistent/sendmail\n'));
        assert.equal(sendmail.status, 0, sendmail.stderr);
        assert.match(sendmail.stderr, /warning: relay\.sendmail \/nonexistent\/sendmail cannot be run \(ENOENT\)/);
      } finally {
        server.close();
      }
    });

    test('secrets are printed as ***: the SRS secrets and the probe key (the output is pasted into tickets)', () => {
      const r = run(write('cli-secrets.yaml', 'relay:\n  srs:\n    secret: "current-srs-secret-0123"\n    old_secrets: ["previous-srs-secret-99"]\nprobe:\n  key: "probe-signing-key-abcdef"\n'));
      assert.equal(r.status, 0, r.stderr);
      for (const secret of ['current-srs-secret-0123', 'previous-srs-secret-99', 'probe-signing-key-abcdef']) assert.ok(!r.stdout.includes(secret), `${secret} printed:\n${r.stdout}`);
      assert.match(r.stdout, /^ {4}secret: "\*\*\*"$/m);
      assert.match(r.stdout, /^ {4}old_secrets:\n {6}- "\*\*\*"$/m);
      assert.match(r.stdout, /^probe:\n {2}key: "\*\*\*"$/m);
      const none = run(write('cli-no-secrets.yaml', 'limits:\n  message_size: 10M\n'));
      assert.doesNotMatch(none.stdout, /\*\*\*/, 'nothing set, nothing masked');
    });

    test('a good file exits 0 and prints the resolved configuration as YAML in its own units', () => {
      const path = write('cli-good.yaml', 'limits:\n  message_size: 10M\nsmtp:\n  listen: ["127.0.0.1:2526"]\n');
      const r = run(path);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^ {2}message_size: 10M$/m);
      assert.match(r.stdout, /^smtp:\n {2}listen:\n {4}- 127\.0\.0\.1:2526$/m);
      assert.ok(r.stderr.includes(`configuration ${path} is valid`), r.stderr);
    });
  });
});
