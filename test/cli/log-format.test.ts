// `mailprocd --log-format json`: for log shippers, the flag turns a config
// that says `log.format: text` into one JSON object per line on stderr, every
// line, from the start line to the stop. Waits for the lines, never for time.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { DAEMON, makeTestDir } from '../helpers/daemon.js';

test('--log-format json overrides log.format: text, and every line on stderr is a JSON object', { timeout: 120_000 }, async (t) => {
  const dir = makeTestDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sources = join(dir, 'db');
  mkdirSync(sources);
  for (const table of ['rules', 'uid', 'gid', 'lists', 'spam']) writeFileSync(join(sources, table), '');
  const config = join(dir, 'mailprocd.yaml');
  writeFileSync(config, stringify({
    hostname: 'json.test',
    paths: { state: join(dir, 'state'), sources, mail: join(dir, 'mail') },
    lmtp: { listen: [`unix:${join(dir, 'lmtp.sock')}`] },
    smtp: { listen: [] }, policy: { listen: [] }, milter: { listen: [] }, metrics: { listen: [] },
    spam: { enabled: false },
    log: { format: 'text', level: 'info' },
  }));
  const env = { ...process.env };
  delete env.JOURNAL_STREAM;
  const child = spawn(process.execPath, [DAEMON, '--config', config, '--log-format', 'json'], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
      if (/"message":"ready /.test(stderr)) resolve();
    });
    void exited.then((code) => reject(new Error(`exited ${code} before ready:\n${stderr}`)));
  });
  try {
    await ready;
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, stderr);
  const lines = stderr.trim().split('\n');
  assert.ok(lines.length >= 2, stderr);
  for (const line of lines) {
    const o = JSON.parse(line) as Record<string, unknown>;
    assert.equal(typeof o.time, 'string', line);
    assert.equal(typeof o.level, 'string', line);
    assert.equal(typeof o.message, 'string', line);
  }
});
