// smtp.tls, smtp.tls_cert, smtp.tls_key (src/config/tls.ts, load.ts): the
// embedded default needs no certificate; optional/required without a readable,
// matching pair is a configuration error naming the key and the file, at
// load and with `mailprocd --check-config`. Certificates are made here with
// openssl (Debian package "openssl").
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { ConfigError, readTlsPair, resolveConfig } from '../../src/config/index.js';
import { findProgram, requireProgram } from '../helpers/components.js';

/** The problems of the ConfigError that `fn` throws; [] when it does not throw. */
function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  return [];
}

test('the embedded default has STARTTLS off and needs no certificate', () => {
  const c = resolveConfig({}, undefined, '/srv/mailprocd');
  assert.equal(c.smtp.tls, 'off');
  assert.equal(c.smtp.tls_cert, undefined);
  assert.equal(c.smtp.tls_key, undefined);
});

test('smtp.tls takes off, optional or required only', () => {
  const problems = problemsOf(() => resolveConfig({ smtp: { tls: 'yes' } }, 'x.yaml', '/srv'));
  assert.equal(problems.length, 1, problems.join('\n'));
  assert.match(problems[0] ?? '', /^smtp\.tls: /);
});

test('optional or required without tls_cert and tls_key names both keys', () => {
  for (const tls of ['optional', 'required']) {
    const problems = problemsOf(() => resolveConfig({ smtp: { tls } }, 'x.yaml', '/srv'));
    assert.deepEqual(problems, [
      `smtp.tls_cert: required when smtp.tls is ${tls} (a PEM certificate file)`,
      `smtp.tls_key: required when smtp.tls is ${tls} (a PEM private key file)`,
    ]);
  }
});

describe('with certificates made by openssl', () => {
  let dir = '';
  const openssl = findProgram('openssl');
  const make = (name: string): { cert: string; key: string } => {
    const cert = join(dir, `${name}.crt`);
    const key = join(dir, `${name}.key`);
    execFileSync(openssl ?? 'openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}.test.local`], { stdio: 'pipe', timeout: 30_000 });
    return { cert, key };
  };
  let a = { cert: '', key: '' };
  let b = { cert: '', key: '' };

  before(() => {
    if (openssl === undefined) return;
    dir = mkdtempSync(join(tmpdir(), 'mailprocd-tls-config-'));
    a = make('a');
    b = make('b');
    writeFileSync(join(dir, 'garbage.pem'), 'not a PEM file\n');
  });
  after(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  const skipUnlessOpenssl = (t: TestContext): boolean => requireProgram(t, 'openssl', 'openssl') === undefined;

  test('a readable matching pair is accepted, with paths resolved against the working directory', (t) => {
    if (skipUnlessOpenssl(t)) return;
    const c = resolveConfig({ smtp: { tls: 'required', tls_cert: 'a.crt', tls_key: 'a.key' } }, 'x.yaml', dir);
    assert.equal(c.smtp.tls, 'required');
    assert.equal(c.smtp.tls_cert, a.cert);
    assert.equal(c.smtp.tls_key, a.key);
    const pair = readTlsPair(a.cert, a.key);
    assert.ok(!('problems' in pair));
    assert.equal(pair.fingerprint, new X509Certificate(readFileSync(a.cert)).fingerprint256);
  });

  const cases: { name: string; cert: () => string; key: () => string; want: RegExp }[] = [
    { name: 'a missing key file names smtp.tls_key and the file', cert: () => a.cert, key: () => join(dir, 'missing.key'), want: /^smtp\.tls_key: cannot read \/.*\/missing\.key \(ENOENT\)$/ },
    { name: 'a missing certificate file names smtp.tls_cert and the file', cert: () => join(dir, 'missing.crt'), key: () => a.key, want: /^smtp\.tls_cert: cannot read \/.*\/missing\.crt \(ENOENT\)$/ },
    { name: 'a certificate that is not PEM names smtp.tls_cert', cert: () => join(dir, 'garbage.pem'), key: () => a.key, want: /^smtp\.tls_cert: \/.*\/garbage\.pem is not a PEM certificate/ },
    { name: 'a key that is not PEM names smtp.tls_key', cert: () => a.cert, key: () => join(dir, 'garbage.pem'), want: /^smtp\.tls_key: \/.*\/garbage\.pem is not a PEM private key/ },
    { name: 'the key of another certificate names smtp.tls_key and both files', cert: () => a.cert, key: () => b.key, want: /^smtp\.tls_key: \/.*\/b\.key is not the private key of the certificate in \/.*\/a\.crt$/ },
  ];
  for (const c of cases) {
    test(c.name, (t) => {
      if (skipUnlessOpenssl(t)) return;
      const problems = problemsOf(() => resolveConfig({ smtp: { tls: 'optional', tls_cert: c.cert(), tls_key: c.key() } }, 'x.yaml', dir));
      assert.equal(problems.length, 1, problems.join('\n'));
      assert.match(problems[0] ?? '', c.want);
    });
  }

  test('with tls off, the certificate paths are not read', (t) => {
    if (skipUnlessOpenssl(t)) return;
    const c = resolveConfig({ smtp: { tls: 'off', tls_cert: 'missing.crt', tls_key: 'missing.key' } }, 'x.yaml', dir);
    assert.equal(c.smtp.tls, 'off');
  });

  test('mailprocd --check-config exits 1 naming smtp.tls_key for a key that does not match, 0 for a good pair', (t) => {
    if (skipUnlessOpenssl(t)) return;
    const cli = `${process.cwd()}/dist/src/cli/mailprocd.js`;
    const check = (name: string, key: string): { status: number | null; stderr: string } => {
      const file = join(dir, name);
      writeFileSync(file, `smtp:\n  tls: optional\n  tls_cert: ${a.cert}\n  tls_key: ${key}\n`);
      const r = spawnSync(process.execPath, [cli, '--check-config', '--config', file], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
      return { status: r.status, stderr: r.stderr };
    };
    const bad = check('bad.yaml', b.key);
    assert.equal(bad.status, 1, bad.stderr);
    assert.match(bad.stderr, /smtp\.tls_key: \/.*\/b\.key is not the private key of the certificate/);
    const good = check('good.yaml', a.key);
    assert.equal(good.status, 0, good.stderr);
  });
});
