// `mailproc lists sync` (src/policy/list-sync.ts) against a local HTTP server
// that speaks Mailman 3's REST shape (basic auth, /3.1/lists/{list}/roster/member,
// count/page paging), and against files. A sync that fails in any way keeps
// the old subscribers.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { readListRoster, syncListSubscribers, type ListSource } from '../../src/policy/index.js';
import { openState } from '../../src/state/index.js';

interface FakeMailman {
  readonly url: string;
  /** Members per list (fqdn_listname). */
  readonly lists: Map<string, string[]>;
  /** Overrides the next replies: a status code, "garbage", "short" (total_size one more than there are) or "hang" (no answer). */
  fault: number | 'garbage' | 'short' | 'hang' | undefined;
  readonly requests: string[];
}

const USER = 'restadmin';
const PASSWORD = 'restpass';

async function startMailman(t: TestContext): Promise<FakeMailman> {
  const state: Omit<FakeMailman, 'url'> = { lists: new Map(), fault: undefined, requests: [] };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    state.requests.push(req.url ?? '');
    const send = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(typeof body === 'string' ? body : JSON.stringify(body));
    };
    const auth = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    if (req.headers.authorization !== auth) return send(401, { title: '401 Unauthorized', description: 'REST API authorization failed' });
    if (typeof state.fault === 'number') return send(state.fault, { title: 'Internal Server Error' });
    if (state.fault === 'garbage') return send(200, '<html>not json</html>');
    if (state.fault === 'hang') return;
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/3\.1\/lists\/([^/]+)\/roster\/member$/.exec(url.pathname);
    const members = m ? state.lists.get(decodeURIComponent(m[1] as string)) : undefined;
    if (members === undefined) return send(404, { title: '404 Not Found' });
    const count = Number(url.searchParams.get('count') ?? members.length);
    const page = Number(url.searchParams.get('page') ?? 1);
    const slice = members.slice((page - 1) * count, page * count);
    const list = decodeURIComponent(m?.[1] ?? '');
    const body: Record<string, unknown> = {
      start: (page - 1) * count,
      total_size: members.length + (state.fault === 'short' ? 1 : 0),
      http_etag: '"x"',
    };
    // Mailman leaves entries out of an empty page.
    if (slice.length > 0) {
      body.entries = slice.map((email, i) => ({
        address: `http://localhost:9001/3.1/addresses/${email}`, bounce_score: 0, delivery_mode: 'regular', email,
        list_id: list.replace('@', '.'), member_id: `m${i}`, role: 'member', self_link: `http://localhost:9001/3.1/members/m${i}`,
        subscription_mode: 'as_address', http_etag: '"y"',
      }));
    }
    send(200, body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as { port: number }).port;
  return Object.assign(state, { url: `http://127.0.0.1:${port}` });
}

function tempDb(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-sync-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'state-db');
}

const mailman = (url: string, password = PASSWORD): ListSource => ({ kind: 'mailman3', url, user: USER, password, timeoutMs: 2000 });

test('a sync from Mailman 3 stores the roster in lower case, with counts', async (t) => {
  const mm = await startMailman(t);
  mm.lists.set('dev@example.test', ['alice@example.test', 'Bob@Example.TEST', 'carol@elsewhere.test']);
  const dbDir = tempDb(t);
  const out = await syncListSubscribers({ list: 'dev@example.test', source: mailman(mm.url), dbDir, now: () => Date.UTC(2026, 0, 2) });
  assert.deepEqual(out, { ok: true, list: 'dev@example.test', subscribers: 3, added: 3, removed: 0, skipped: [] });
  const roster = await readListRoster(dbDir, 'dev@example.test');
  assert.deepEqual(roster, {
    subscribers: 3, syncedAt: '2026-01-02T00:00:00.000Z', source: `mailman3 ${mm.url}`,
    members: ['alice@example.test', 'bob@example.test', 'carol@elsewhere.test'],
  });
  assert.match(mm.requests[0] ?? '', /^\/3\.1\/lists\/dev%40example\.test\/roster\/member\?count=\d+&page=1$/);
});

test('a large roster is read page by page', async (t) => {
  const mm = await startMailman(t);
  const members = Array.from({ length: 1234 }, (_, i) => `m${i}@example.test`);
  mm.lists.set('big@example.test', members);
  const dbDir = tempDb(t);
  const out = await syncListSubscribers({ list: 'big@example.test', source: mailman(`${mm.url}/`), dbDir });
  assert.equal(out.ok && out.subscribers, 1234);
  assert.equal(mm.requests.length, 3);
  assert.equal((await readListRoster(dbDir, 'big@example.test'))?.members.length, 1234);
});

test('a second sync adds the new and removes the departed, and nothing else', async (t) => {
  const mm = await startMailman(t);
  mm.lists.set('dev@example.test', ['a@x.test', 'b@x.test', 'c@x.test']);
  mm.lists.set('ops@example.test', ['z@x.test']);
  const dbDir = tempDb(t);
  await syncListSubscribers({ list: 'dev@example.test', source: mailman(mm.url), dbDir });
  await syncListSubscribers({ list: 'ops@example.test', source: mailman(mm.url), dbDir });
  mm.lists.set('dev@example.test', ['b@x.test', 'c@x.test', 'd@x.test']);
  const out = await syncListSubscribers({ list: 'dev@example.test', source: mailman(mm.url), dbDir });
  assert.deepEqual(out, { ok: true, list: 'dev@example.test', subscribers: 3, added: 1, removed: 1, skipped: [] });
  assert.deepEqual((await readListRoster(dbDir, 'dev@example.test'))?.members, ['b@x.test', 'c@x.test', 'd@x.test']);
  assert.deepEqual((await readListRoster(dbDir, 'ops@example.test'))?.members, ['z@x.test'], 'another list is untouched');
});

test('a departed subscriber with a long address is removed too, and can no longer post', async (t) => {
  const mm = await startMailman(t);
  // list + NUL + member of 64 characters or more: lmdb-js stores such a key apart from the short ones.
  const long = `${'a'.repeat(60)}@x.test`;
  mm.lists.set('dev@example.test', ['b@x.test', long]);
  const dbDir = tempDb(t);
  await syncListSubscribers({ list: 'dev@example.test', source: mailman(mm.url), dbDir });
  assert.deepEqual((await readListRoster(dbDir, 'dev@example.test'))?.members, [long, 'b@x.test']);
  mm.lists.set('dev@example.test', ['b@x.test']);
  const out = await syncListSubscribers({ list: 'dev@example.test', source: mailman(mm.url), dbDir });
  assert.deepEqual(out, { ok: true, list: 'dev@example.test', subscribers: 1, added: 0, removed: 1, skipped: [] });
  assert.deepEqual((await readListRoster(dbDir, 'dev@example.test'))?.members, ['b@x.test']);
  const state = openState(dbDir);
  t.after(() => state.close());
  assert.equal(state.isSubscriber('dev@example.test', long), false);
});

/** A loopback port nothing listens on (fetch refuses to try the "bad ports" such as 1). */
async function closedPort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

const FAILURES: { name: string; setup: (mm: FakeMailman, closed: number) => ListSource; error: RegExp }[] = [
  { name: 'HTTP 500', setup: (mm) => { mm.fault = 500; return mailman(mm.url); }, error: /HTTP 500$/ },
  { name: 'a wrong password', setup: (mm) => mailman(mm.url, 'wrong'), error: /HTTP 401 \(check the REST user and password\)/ },
  { name: 'an unknown list', setup: (mm) => { mm.lists.delete('dev@example.test'); return mailman(mm.url); }, error: /HTTP 404 \(no such list at Mailman\?\)/ },
  { name: 'a reply that is not JSON', setup: (mm) => { mm.fault = 'garbage'; return mailman(mm.url); }, error: /GET .*roster\/member: / },
  { name: 'fewer members than total_size', setup: (mm) => { mm.fault = 'short'; return mailman(mm.url); }, error: /read 2 members but total_size says 3/ },
  { name: 'a refused connection', setup: (_mm, closed) => mailman(`http://127.0.0.1:${closed}`), error: /ECONNREFUSED/ },
  { name: 'no answer in time', setup: (mm) => { mm.fault = 'hang'; return { ...mailman(mm.url), timeoutMs: 300 }; }, error: /roster\/member: timed out$/ },
  { name: 'a missing file', setup: () => ({ kind: 'file', path: '/nonexistent/roster' }), error: /cannot read \/nonexistent\/roster/ },
];

for (const f of FAILURES) {
  test(`a failed sync (${f.name}) keeps the old subscribers`, async (t) => {
    const mm = await startMailman(t);
    mm.lists.set('dev@example.test', ['alice@example.test', 'bob@example.test']);
    const dbDir = tempDb(t);
    assert.equal((await syncListSubscribers({ list: 'dev@example.test', source: mailman(mm.url), dbDir })).ok, true);
    mm.lists.set('dev@example.test', ['mallory@example.test', 'eve@example.test']);
    const out = await syncListSubscribers({ list: 'dev@example.test', source: f.setup(mm, await closedPort()), dbDir });
    assert.equal(out.ok, false);
    assert.match(!out.ok ? out.error : '', f.error);
    assert.ok(!(!out.ok && out.error.includes(PASSWORD)), 'the password is never in the error');
    assert.deepEqual((await readListRoster(dbDir, 'dev@example.test'))?.members, ['alice@example.test', 'bob@example.test']);
  });
}

test('a sync from a file: comments and blank lines ignored, odd lines skipped and named', async (t) => {
  const dbDir = tempDb(t);
  const file = join(dbDir, '..', 'dev.txt');
  writeFileSync(file, '# dev@ subscribers\n\nalice@example.test\n  BOB@example.test  \nnot an address\nalice@example.test\n');
  const out = await syncListSubscribers({ list: 'Dev@Example.Test', source: { kind: 'file', path: file }, dbDir });
  assert.deepEqual(out, { ok: true, list: 'dev@example.test', subscribers: 2, added: 2, removed: 0, skipped: ['not an address'] });
  assert.equal((await readListRoster(dbDir, 'dev@example.test'))?.source, `file ${file}`);
  writeFileSync(file, '');
  const emptied = await syncListSubscribers({ list: 'dev@example.test', source: { kind: 'file', path: file }, dbDir });
  assert.deepEqual(emptied, { ok: true, list: 'dev@example.test', subscribers: 0, added: 0, removed: 2, skipped: [] });
});

test('a list never synced has no roster', async (t) => {
  assert.equal(await readListRoster(tempDb(t), 'dev@example.test'), undefined);
});
