// The `state:` section (src/config/state.ts): which engine state.backend
// names, errors that name the key, and a password in the engine's URL never
// printed (--check-config's YAML, redactUrl).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, redactUrl, resolveConfig } from '../../src/config/index.js';
import { formatConfigYaml } from '../../src/config/print.js';

const BACKENDS: [string, unknown][] = [
  ['lmdb', { kind: 'lmdb' }],
  ['postgresql://mail@db.example.org/mailproc', { kind: 'postgresql', url: 'postgresql://mail@db.example.org/mailproc' }],
  ['postgres:///mailproc?host=/run/postgresql', { kind: 'postgresql', url: 'postgres:///mailproc?host=/run/postgresql' }],
  ['redis://:secret@127.0.0.1:6379/2', { kind: 'redis', url: 'redis://:secret@127.0.0.1:6379/2' }],
  ['unix:///run/redis/redis.sock', { kind: 'redis', url: 'unix:///run/redis/redis.sock' }],
];

for (const [backend, want] of BACKENDS) {
  test(`state.backend ${backend} is ${(want as { kind: string }).kind}`, () => {
    assert.deepEqual(resolveConfig({ state: { backend } }, 'test.yaml').state.backend, want);
  });
}

test('without a state section the policy state stays in LMDB, with the documented defaults', () => {
  assert.deepEqual(resolveConfig({}, undefined).state, { backend: { kind: 'lmdb' }, timeout: 250, retry_interval: 1000, pool: 2, prefix: 'mailproc:' });
});

const BAD: [unknown, RegExp][] = [
  [{ backend: 'mysql://x@y/z' }, /state\.backend.*unknown state engine "mysql"/],
  [{ backend: 'postgres' }, /state\.backend.*expected "lmdb", "postgresql:\/\/…" or "redis:\/\/…"/],
  [{ backend: 'lmdb', timeout: '0s' }, /state\.timeout.*more than 0/],
  [{ pool: 0 }, /state\.pool/],
  [{ backend: 'lmdb', engine: 'x' }, /state.*engine/],
];

for (const [section, want] of BAD) {
  test(`state ${JSON.stringify(section)} is refused, naming the key`, () => {
    assert.throws(() => resolveConfig({ state: section }, 'test.yaml'), (err: unknown) => err instanceof ConfigError && want.test(err.message));
  });
}

test('a password in the engine URL is never printed: --check-config shows ***', () => {
  const c = resolveConfig({ state: { backend: 'postgresql://mail:s3cret@db.example.org:5432/mailproc' } }, 'test.yaml');
  const yaml = formatConfigYaml(c);
  assert.ok(!yaml.includes('s3cret'), yaml);
  assert.match(yaml, /backend: postgresql:\/\/mail:\*\*\*@db\.example\.org:5432\/mailproc/);
  assert.equal(redactUrl('redis://:pw@h:1/0'), 'redis://:***@h:1/0');
  assert.equal(redactUrl('redis://h:1/0'), 'redis://h:1/0');
  assert.equal(redactUrl('postgresql://user@h/db'), 'postgresql://user@h/db');
});

test('a bad URL is reported without its password', () => {
  assert.throws(() => resolveConfig({ state: { backend: 'ftp://u:hunter2@x' } }, 'test.yaml'), (err: unknown) => err instanceof Error && !err.message.includes('hunter2'));
});
