// `mailproc db sync --from postgresql://…` against a real PostgreSQL (started
// by the test as the postgres user on a unix socket, stopped by its PID:
// test/helpers/engines.ts, the same engine the shared policy state tests use): the central tables
// compiled into a node's LMDB as db compile compiles db/, a bad row named by
// relation, row and column with the old tables kept, the database down (exit
// 69, tables kept), and --watch on two nodes: a change reaches both — one of
// them a running daemon that then accepts the new address at RCPT — the
// outage is reported once per node and each recovers by itself.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import pg from 'pg';
import { stringify } from 'yaml';
import { MAILPROC, makeTestDir, startDaemon } from '../helpers/daemon.js';
import { testEngine } from '../helpers/engines.js';
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

const engine = testEngine('postgresql');
after(() => engine.dispose());

interface Central {
  readonly url: string;
  sql(statements: string): Promise<void>;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

/** The file's PostgreSQL, without the central tables of an earlier test; undefined: skipped. */
async function withPostgres(t: TestContext): Promise<Central | undefined> {
  const url = await engine.use(t);
  if (url === undefined) return undefined;
  const sql = async (statements: string): Promise<void> => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      await c.query(statements);
    } finally {
      await c.end();
    }
  };
  await sql('DROP TABLE IF EXISTS mailprocd_rules, mailprocd_uid, mailprocd_gid, mailprocd_lists, mailprocd_spam, mailprocd_nodes');
  return { url, sql, stop: () => engine.stop(), restart: () => engine.start() };
}

const quote = (s: string): string => `'${s.replaceAll("'", "''")}'`;

test('db sync compiles the central tables as db compile would; a bad row is named by relation, row and column and nothing changes; a database that is down leaves the tables as they are', { timeout: 300_000 }, async (t) => {
  const central = await withPostgres(t);
  if (central === undefined) return;
  const config = tablesNode(t);

  const init = mailproc(config, 'db', 'sync', '--from', central.url, '--init');
  assert.equal(init.status, 0, init.stderr);
  assert.match(init.stdout, /^rules: 0 entries from postgresql:\/\/mailproc@localhost\/postgres\?host=\S+#mailprocd_rules$/m);

  await central.sql(`INSERT INTO mailprocd_rules (key, value) VALUES ('alice@example.test', 'maildir:/srv/mail/alice/ folder=Lists header:List-Id=*') , ('alice@example.test', 'maildir:/srv/mail/alice/');
    INSERT INTO mailprocd_uid VALUES ('@example.test', 'vmail');
    INSERT INTO mailprocd_lists VALUES ('dev@example.test', 'closed manager="" subscribers=alice@example.test,bob@example.test');
    INSERT INTO mailprocd_nodes VALUES ('@example.test', 'lmtp:inet:mb1.example.test:24');`);
  const good = mailproc(config, 'db', 'sync', '--from', central.url);
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stdout, /^rules: 1 entries from .*#mailprocd_rules$/m);
  assert.match(good.stdout, /^lists: 1 entries from .*#mailprocd_lists$/m);
  const rules = JSON.parse(mailproc(config, 'db', 'show', 'rules', 'alice@example.test').stdout) as { origin: string }[];
  // Both of alice's rules, in id order, each naming its central row (what logs and `rules test` show).
  assert.deepEqual(rules.map((r) => r.origin), ['mailprocd_rules row id=1', 'mailprocd_rules row id=2']);
  assert.equal(JSON.parse(mailproc(config, 'db', 'show', 'uid', '@example.test').stdout), 'vmail');

  // Bad rows: each named by relation, row and column; nothing compiled.
  await central.sql(`INSERT INTO mailprocd_rules (key, value) VALUES ('bob@example.test', 'maildri:/x');
    INSERT INTO mailprocd_uid VALUES ('carol example.test', 'carol'), ('dave@example.test', E'dave\\nroot');`);
  const bad = mailproc(config, 'db', 'sync', '--from', central.url);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /#mailprocd_rules: row id=3, column value: unknown destination kind "maildri"/);
  assert.match(bad.stderr, /#mailprocd_uid: row key="carol example.test", column key: key "carol example.test" holds white space/);
  assert.match(bad.stderr, /#mailprocd_uid: row key="dave@example.test", column value: value holds a line break/);
  assert.match(bad.stderr, /nothing compiled; the tables in use are unchanged/);
  assert.equal(mailproc(config, 'db', 'show', 'rules', 'bob@example.test').status, 1, 'the bad rule was not compiled');
  assert.equal(mailproc(config, 'db', 'show', 'uid', '@example.test').status, 0, 'the old tables stay');

  // The database down: 69, and the tables stay.
  await central.sql("DELETE FROM mailprocd_rules WHERE key = 'bob@example.test'; DELETE FROM mailprocd_uid WHERE key <> '@example.test';");
  await central.stop();
  t.after(() => central.restart());
  const down = mailproc(config, 'db', 'sync', '--from', central.url);
  assert.equal(down.status, 69, down.stderr);
  assert.match(down.stderr, /cannot read the central tables: postgresql:\/\/mailproc@localhost\/postgres\?host=\S+: .*(ECONNREFUSED|ENOENT)/);
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
  const central = await withPostgres(t);
  if (central === undefined) return;
  const d = await startDaemon({ rules: 'alice@example.test  maildir:${MAIL}/${user}/Maildir/\n' });
  t.after(async () => {
    await d.stop();
    d.cleanup();
  });
  const other = tablesNode(t);
  assert.equal(mailproc(d.configFile, 'db', 'sync', '--from', central.url, '--init').status, 0);
  await central.sql(`INSERT INTO mailprocd_rules (key, value) VALUES ('alice@example.test', ${quote(`maildir:${d.mail}/\${user}/Maildir/`)})`);

  const nodes = [watcher(t, d.configFile, central.url), watcher(t, other, central.url)];
  const diag = (): string => nodes.map((n, i) => `--- watcher ${i + 1} ---\n${n.out()}${n.err()}`).join('\n');
  for (const n of nodes) await waitFor('the watcher to listen', () => (/^watching /m.test(n.out()) ? true : undefined), SLOW, diag);
  assert.equal(await lmtpRcptCode(d.lmtpPort, 'alice@example.test'), 250);
  assert.equal(await lmtpRcptCode(d.lmtpPort, 'dave@example.test'), 550);

  const changedAt = Date.now();
  await central.sql(`INSERT INTO mailprocd_rules (key, value) VALUES ('dave@example.test', ${quote(`maildir:${d.mail}/\${user}/Maildir/`)})`);
  await waitFor('the daemon to accept dave', async () => ((await lmtpRcptCode(d.lmtpPort, 'dave@example.test')) === 250 ? true : undefined), SLOW, diag);
  await waitFor('the other node to have dave', () => (mailproc(other, 'db', 'show', 'rules', 'dave@example.test').status === 0 ? true : undefined), SLOW, diag);
  // Reported, not asserted: the time depends on the machine's load (the issue's figure is 5 s).
  t.diagnostic(`a central change reached both nodes in ${Date.now() - changedAt} ms`);

  await central.stop();
  for (const n of nodes) await waitFor('the outage to be reported', () => (/lost the central tables/.test(n.err()) ? true : undefined), SLOW, diag);
  assert.equal(await lmtpRcptCode(d.lmtpPort, 'dave@example.test'), 250, 'the node serves its tables while the database is down');
  await central.restart();
  for (const n of nodes) await waitFor('the recovery to be reported', () => (/central tables reachable again/.test(n.err()) ? true : undefined), SLOW, diag);
  for (const n of nodes) assert.equal(n.err().match(/lost the central tables/g)?.length, 1, `one outage line:\n${n.err()}`);

  await central.sql("DELETE FROM mailprocd_rules WHERE key = 'dave@example.test'");
  await waitFor('the daemon to refuse dave again', async () => ((await lmtpRcptCode(d.lmtpPort, 'dave@example.test')) === 550 ? true : undefined), SLOW, diag);
  await waitFor('the other node to lose dave', () => (mailproc(other, 'db', 'show', 'rules', 'dave@example.test').status === 1 ? true : undefined), SLOW, diag);

  for (const n of nodes) {
    const exited = new Promise<number | null>((resolve) => n.child.once('exit', (code) => resolve(code)));
    n.child.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
});
