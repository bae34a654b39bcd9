// Users spread over mailbox hosts by Postfix, not by us (docs/scale-out.md):
// the nodes table says which host each address lives on, `mailproc db
// transport-map` writes it as a transport_maps source, and a real Postfix MX
// routes alice to one mailprocd delivery node and bob to another. Also the
// command itself: the lines it writes, its refusal of a bad source, its
// atomic --output, and that it creates nothing without compiled tables.
//
// The Postfix test needs root (Postfix's master starts as root), Debian
// "postfix" (postmap too) and "swaks". Every wait has a deadline; Postfix and
// both daemons are stopped in finally, also on failure.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { stringify } from 'yaml';
import { requireProgram, requireRoot } from '../helpers/components.js';
import { MAILPROC, makeTestDir, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { run, startPostfix, swaks, type TestPostfix } from '../helpers/postfix.js';
import { waitFor } from '../helpers/wait.js';

const WAIT_MS = 60_000;

function mailproc(config: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [MAILPROC, '--config', config, ...args], { encoding: 'utf8' });
}

/** A config whose tables live in a temp dir: no daemon needed to compile and read them. */
function tablesOnly(t: TestContext): { dir: string; config: string; sources: string; db: string } {
  const dir = makeTestDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const sources = join(dir, 'db');
  mkdirSync(sources);
  writeFileSync(join(sources, 'rules'), '');
  const config = join(dir, 'mailprocd.yaml');
  writeFileSync(config, stringify({ paths: { state: join(dir, 'state'), sources } }));
  return { dir, config, sources, db: join(dir, 'state', 'db') };
}

test('mailproc db transport-map writes the nodes table as transport(5) lines: @domain as the domain, addresses as they are', (t) => {
  const { dir, config, sources, db } = tablesOnly(t);
  // Without compiled tables it says so, exits 1, and leaves no database behind.
  const none = mailproc(config, 'db', 'transport-map');
  assert.equal(none.status, 1);
  assert.match(none.stderr, /no compiled tables in /);
  assert.equal(existsSync(join(db, 'data.mdb')), false, 'a reader created no database');

  writeFileSync(join(sources, 'nodes'), [
    '@example.test        lmtp:inet:mb1.example.test:24',
    'alice@example.test   lmtp:inet:mb2.example.test:24',
    'Bob+Lists@Example.Test  lmtp:unix:/var/spool/postfix/private/mb3',
    '@other.test          smtp:[mb4.other.test]:25',
    '',
  ].join('\n'));
  const compiled = mailproc(config, 'db', 'compile');
  assert.equal(compiled.status, 0, compiled.stderr);
  assert.match(compiled.stdout, /^nodes: 4 entries from /m);

  const out = mailproc(config, 'db', 'transport-map');
  assert.equal(out.status, 0, out.stderr);
  const lines = out.stdout.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  assert.deepEqual(lines, [
    'example.test\tlmtp:inet:mb1.example.test:24',
    'alice@example.test\tlmtp:inet:mb2.example.test:24',
    'bob+lists@example.test\tlmtp:unix:/var/spool/postfix/private/mb3',
    'other.test\tsmtp:[mb4.other.test]:25',
  ]);
  assert.match(out.stdout, /^# Do not edit: change the nodes source/m);

  // A bad line: named by file:line, and the compiled table (and so the map) stays as it was.
  writeFileSync(join(sources, 'nodes'), 'alice@example.test  lmtp:inet:mb9.example.test:24\ncarol  lmtp:inet:mb9.example.test:24\n');
  const bad = mailproc(config, 'db', 'compile');
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, new RegExp(`${join(sources, 'nodes').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: key "carol" names no domain`));
  assert.equal(mailproc(config, 'db', 'transport-map').stdout, out.stdout, 'the map is unchanged');

  // --output replaces the file whole and leaves no temp file beside it.
  const file = join(dir, 'transport');
  writeFileSync(file, 'old contents\n');
  const written = mailproc(config, 'db', 'transport-map', '--output', file);
  assert.equal(written.status, 0, written.stderr);
  assert.match(written.stdout, /4 addresses and domains written to .*; now run: postmap /);
  assert.equal(readFileSync(file, 'utf8'), out.stdout);
  assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp')), []);
});

function components(t: TestContext): boolean {
  return requireRoot(t, 'Postfix starts its master as root')
    && requireProgram(t, 'postfix', 'postfix') !== undefined
    && requireProgram(t, 'postmap', 'postfix') !== undefined
    && requireProgram(t, 'swaks', 'swaks') !== undefined;
}

const RULES = `
alice@example.test  maildir:\${MAIL}/\${user}/Maildir/
bob@example.test    maildir:\${MAIL}/\${user}/Maildir/
`;

test('a real Postfix with the generated transport_maps routes alice to one mailprocd node and bob to another', async (t) => {
  if (!components(t)) return;
  // Two delivery nodes: each knows both users (the tables are the same everywhere), Postfix decides who gets whom.
  const n1 = await startDaemon({ rules: RULES });
  let n2: TestDaemon | undefined;
  let pf: TestPostfix | undefined;
  const diag = (): string => `\n--- Postfix maillog ---\n${pf?.logs() ?? '(not started)'}\n--- node 1 ---\n${n1.logs.slice(-30).join('\n')}\n--- node 2 ---\n${n2?.logs.slice(-30).join('\n') ?? ''}`;
  try {
    n2 = await startDaemon({ rules: RULES });
    // The MX's copy of the tables: here node 1's sources, with a nodes table naming both nodes by LMTP over TCP.
    writeFileSync(join(n1.dir, 'db', 'nodes'), `alice@example.test  lmtp:inet:127.0.0.1:${n1.lmtpPort}\n@example.test  lmtp:inet:127.0.0.1:${n2.lmtpPort}\n`);
    const compiled = mailproc(n1.configFile, 'db', 'compile', 'nodes');
    assert.equal(compiled.status, 0, compiled.stderr);
    const map = join(n1.dir, 'transport');
    const written = mailproc(n1.configFile, 'db', 'transport-map', '--output', map);
    assert.equal(written.status, 0, written.stderr);
    // postmap reads a main.cf; the throwaway instance's is not written yet, and /etc/postfix may have none.
    const pmConf = join(n1.dir, 'postmap-conf');
    mkdirSync(pmConf);
    writeFileSync(join(pmConf, 'main.cf'), 'compatibility_level = 3.6\n');
    const postmap = await run('postmap', ['-c', pmConf, `hash:${map}`]);
    assert.equal(postmap.code, 0, postmap.stderr);

    // The default transport is node 1's socket: without the map everything would land there.
    pf = await startPostfix({ lmtpSocket: n1.socket, extraMainCf: `transport_maps = hash:${map}\n` });
    const id = `routed.${process.pid}.${Date.now()}@remote.test`;
    const sent = await swaks({ port: pf.smtpPort, from: 's@remote.test', to: ['alice@example.test', 'bob@example.test'], messageId: id, subject: 'routed' });
    assert.equal(sent.code, 0, `${sent.stdout}${sent.stderr}`);
    const qid = sent.queueId as string;

    const copies = (d: TestDaemon, user: string): string[] => newFiles(join(d.mail, user, 'Maildir')).filter((f) => readFileSync(f, 'latin1').includes(`<${id}>`));
    await waitFor('alice\'s copy on node 1', () => (copies(n1, 'alice').length === 1 ? true : undefined), WAIT_MS, diag);
    await waitFor('bob\'s copy on node 2', () => (copies(n2 as TestDaemon, 'bob').length === 1 ? true : undefined), WAIT_MS, diag);
    // Postfix's log names the node each went to.
    await pf.waitForLog(new RegExp(`${qid}: to=<alice@example\\.test>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${n1.lmtpPort}, .*status=sent`), WAIT_MS);
    await pf.waitForLog(new RegExp(`${qid}: to=<bob@example\\.test>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${n2.lmtpPort}, .*status=sent`), WAIT_MS);
    await pf.waitForLog(new RegExp(`${qid}: removed`), WAIT_MS);
    assert.deepEqual(copies(n1, 'bob'), [], 'bob has nothing on node 1');
    assert.deepEqual(copies(n2, 'alice'), [], 'alice has nothing on node 2');
  } finally {
    await pf?.stop();
    await n2?.stop();
    n2?.cleanup();
    await n1.stop();
    n1.cleanup();
  }
});
