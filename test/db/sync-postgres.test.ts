// `mailproc db sync --from postgresql://…` against a real PostgreSQL (started
// by the test as the postgres user, stopped by its PID): the central tables
// compiled into a node's LMDB as db compile compiles db/, a bad row named by
// relation, row and column with the old tables kept, the database down (exit
// 69, tables kept), and --watch on two nodes: a change reaches both — one of
// them a running daemon that then accepts the new address at RCPT — the
// outage is reported once per node and each recovers by itself.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { stringify } from 'yaml';
import { MAILPROC, makeTestDir, startDaemon } from '../helpers/daemon.js';
import { requirePostgres, startPostgres, type TestPostgres } from '../helpers/postgresql.js';
import { lmtpRcptCode } from '../helpers/raw-client.js';
import { waitFor } from '../helpers/wait.js';

const SLOW = 120_000;

function mailproc(config: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [MAILPROC, '--config', config, ...args], { encoding: 'utf8' });
}

/** A node that only has tables (no daemon): a config whose state lives in a temp dir. */
function tablesNode(t: TestContext): string {
  const dir = makeTestDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'db'));
  const config = join(dir, 'mailprocd.yaml');
  writeFileSync(config, stringify({ paths: { state: join(dir, 'state'), sources: join(dir, 'db') } }));
  return config;
}

async function withPostgres(t: TestContext): Promise<TestPostgres | undefined> {
  const bin = requirePostgres(t);
  if (bin === undefined) return undefined;
  const pg = await startPostgres(bin);
  t.after(() => pg.destroy());
  return pg;
}

const quote = (s: string): string => `'${s.replaceAll("'", "''")}'`;

test('db sync compiles the central tables as db compile would; a bad row is named by relation, row and column and nothing changes; a database that is down leaves the tables as they are', { timeout: 300_000 }, async (t) => {
  const pg = await withPostgres(t);
  if (pg === undefined) return;
  const config = tablesNode(t);

  const init = mailproc(config, 'db', 'sync', '--from', pg.url, '--init');
  assert.equal(init.status, 0, init.stderr);
  assert.match(init.stdout, /^rules: 0 entries from postgresql:\/\/postgres@127\.0\.0\.1:\d+\/postgres#mailprocd_rules$/m);

  pg.sql(`INSERT INTO mailprocd_rules (key, value) VALUES ('alice@example.test', 'maildir:/srv/mail/alice/ folder=Lists header:List-Id=*') , ('alice@example.test', 'maildir:/srv/mail/alice/');
    INSERT INTO mailprocd_uid VALUES ('@example.test', 'vmail');
    INSERT INTO mailprocd_lists VALUES ('dev@example.test', 'closed manager="" subscribers=alice@example.test,bob@example.test');
    INSERT INTO mailprocd_nodes VALUES ('@example.test', 'lmtp:inet:mb1.example.test:24');`);
  const good = mailproc(config, 'db', 'sync', '--from', pg.url);
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stdout, /^rules: 1 entries from .*#mailprocd_rules$/m);
  assert.match(good.stdout, /^lists: 1 entries from .*#mailprocd_lists$/m);
  const rules = JSON.parse(mailproc(config, 'db', 'show', 'rules', 'alice@example.test').stdout) as { origin: string }[];
  // Both of alice's rules, in id order, each naming its central row (what logs and `rules test` show).
  assert.deepEqual(rules.map((r) => r.origin), ['mailprocd_rules row id=1', 'mailprocd_rules row id=2']);
  assert.equal(JSON.parse(mailproc(config, 'db', 'show', 'uid', '@example.test').stdout), 'vmail');

  // Bad rows: each named by relation, row and column; nothing compiled.
  pg.sql(`INSERT INTO mailprocd_rules (key, value) VALUES ('bob@example.test', 'maildri:/x');
    INSERT INTO mailprocd_uid VALUES ('carol example.test', 'carol'), ('dave@example.test', E'dave\\nroot');`);
  const bad = mailproc(config, 'db', 'sync', '--from', pg.url);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /#mailprocd_rules: row id=3, column value: unknown destination kind "maildri"/);
  assert.match(bad.stderr, /#mailprocd_uid: row key="carol example.test", column key: key "carol example.test" holds white space/);
  assert.match(bad.stderr, /#mailprocd_uid: row key="dave@example.test", column value: value holds a line break/);
  assert.match(bad.stderr, /nothing compiled; the tables in use are unchanged/);
  assert.equal(mailproc(config, 'db', 'show', 'rules', 'bob@example.test').status, 1, 'the bad rule was not compiled');
  assert.equal(mailproc(config, 'db', 'show', 'uid', '@example.test').status, 0, 'the old tables stay');

  // The database down: 69, and the tables stay.
  pg.sql("DELETE FROM mailprocd_rules WHERE key = 'bob@example.test'; DELETE FROM mailprocd_uid WHERE key <> '@example.test';");
  await pg.stop();
  const down = mailproc(config, 'db', 'sync', '--from', pg.url);
  assert.equal(down.status, 69, down.stderr);
  assert.match(down.stderr, /cannot read the central tables: postgresql:\/\/postgres@127\.0\.0\.1:\d+\/postgres: .*ECONNREFUSED/);
  assert.equal(mailproc(config, 'db', 'show', 'uid', '@example.test').status, 0);
});

/** A `db sync --watch` process; its output kept for waits. */
function watcher(t: TestContext, config: string, url: string): { child: ChildProcess; out: () => string; err: () => string } {
  const child = spawn(process.execPath, [MAILPROC, '--config', config, 'db', 'sync', '--watch', '--from', url], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (b: Buffer) => { out += b.toString('utf8'); });
  child.stderr?.on('data', (b: Buffer) => { err += b.toString('utf8'); });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, out: () => out, err: () => err };
}

test('db sync --watch on two nodes: a change reaches both, a running daemon accepts the new address at once; an outage is reported once and each node recovers by itself', { timeout: 600_000 }, async (t) => {
  const pg = await withPostgres(t);
  if (pg === undefined) return;
  const d = await startDaemon({ rules: 'alice@example.test  maildir:${MAIL}/${user}/Maildir/\n' });
  t.after(async () => {
    await d.stop();
    d.cleanup();
  });
  const other = tablesNode(t);
  assert.equal(mailproc(d.configFile, 'db', 'sync', '--from', pg.url, '--init').status, 0);
  pg.sql(`INSERT INTO mailprocd_rules (key, value) VALUES ('alice@example.test', ${quote(`maildir:${d.mail}/\${user}/Maildir/`)})`);

  const nodes = [watcher(t, d.configFile, pg.url), watcher(t, other, pg.url)];
  const diag = (): string => nodes.map((n, i) => `--- watcher ${i + 1} ---\n${n.out()}${n.err()}`).join('\n');
  for (const n of nodes) await waitFor('the watcher to listen', () => (/^watching /m.test(n.out()) ? true : undefined), SLOW, diag);
  assert.equal(await lmtpRcptCode(d.lmtpPort, 'alice@example.test'), 250);
  assert.equal(await lmtpRcptCode(d.lmtpPort, 'dave@example.test'), 550);

  const changedAt = Date.now();
  pg.sql(`INSERT INTO mailprocd_rules (key, value) VALUES ('dave@example.test', ${quote(`maildir:${d.mail}/\${user}/Maildir/`)})`);
  await waitFor('the daemon to accept dave', async () => ((await lmtpRcptCode(d.lmtpPort, 'dave@example.test')) === 250 ? true : undefined), SLOW, diag);
  await waitFor('the other node to have dave', () => (mailproc(other, 'db', 'show', 'rules', 'dave@example.test').status === 0 ? true : undefined), SLOW, diag);
  // Reported, not asserted: the time depends on the machine's load (the issue's figure is 5 s).
  t.diagnostic(`a central change reached both nodes in ${Date.now() - changedAt} ms`);

  await pg.stop();
  for (const n of nodes) await waitFor('the outage to be reported', () => (/lost the central tables/.test(n.err()) ? true : undefined), SLOW, diag);
  assert.equal(await lmtpRcptCode(d.lmtpPort, 'dave@example.test'), 250, 'the node serves its tables while the database is down');
  await pg.restart();
  for (const n of nodes) await waitFor('the recovery to be reported', () => (/central tables reachable again/.test(n.err()) ? true : undefined), SLOW, diag);
  for (const n of nodes) assert.equal(n.err().match(/lost the central tables/g)?.length, 1, `one outage line:\n${n.err()}`);

  pg.sql("DELETE FROM mailprocd_rules WHERE key = 'dave@example.test'");
  await waitFor('the daemon to refuse dave again', async () => ((await lmtpRcptCode(d.lmtpPort, 'dave@example.test')) === 550 ? true : undefined), SLOW, diag);
  await waitFor('the other node to lose dave', () => (mailproc(other, 'db', 'show', 'rules', 'dave@example.test').status === 1 ? true : undefined), SLOW, diag);

  for (const n of nodes) {
    const exited = new Promise<number | null>((resolve) => n.child.once('exit', (code) => resolve(code)));
    n.child.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
});
