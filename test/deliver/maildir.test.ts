// Maildir delivery against real directories: bytes, modes, names, folders,
// symlink refusal, concurrency, and a full file system (tmpfs, needs root).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { deliverMaildir, type MessageCopy } from '../../src/deliver/index.js';
import { maildirFolderName } from '../../src/deliver/maildir.js';
import { mountTmpfs, requireRoot } from '../helpers/components.js';
import { TEST_RECIPIENT } from '../helpers/mailbox.js';

const HEADER = Buffer.from('Return-Path: <a@example.org>\nDelivered-To: b@example.net\n');

function message(body: string | Buffer, sender = 'a@example.org'): MessageCopy {
  return { header: HEADER, body: typeof body === 'string' ? Buffer.from(body) : body, sender, arrival: new Date('2026-11-21T09:30:25Z'), recipient: TEST_RECIPIENT };
}

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mailprocd-maildir-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const NAME_RE = /^1795253425\.M\d{1,6}P\d+Q\d+\.mx\.example,S=\d+$/;

test('a message lands in new/ with exactly header and body, mode 0600, tmp/ empty', async (t) => {
  const md = join(await tempDir(t), 'Maildir');
  const body = 'Subject: hi\n\nhello\n';
  const got = await deliverMaildir(message(body), { path: md, hostname: 'mx.example' });
  assert.equal(got.status.code, '2.0.0', got.status.text);
  const names = await readdir(join(md, 'new'));
  assert.equal(names.length, 1);
  assert.match(names[0]!, NAME_RE);
  assert.equal(got.path, join(md, 'new', names[0]!));
  const bytes = await readFile(got.path);
  assert.deepEqual(bytes, Buffer.concat([HEADER, Buffer.from(body)]));
  assert.ok(names[0]!.endsWith(`,S=${bytes.length}`));
  assert.equal((await stat(got.path)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(join(md, 'tmp')), []);
});

test('a missing maildir and its missing parents are created 0700 with cur, new and tmp', async (t) => {
  const base = await tempDir(t);
  const md = join(base, 'home', 'u', 'Maildir');
  const got = await deliverMaildir(message('x\n'), { path: md, hostname: 'mx.example' });
  assert.equal(got.status.code, '2.0.0', got.status.text);
  for (const d of [join(base, 'home'), join(base, 'home', 'u'), md, join(md, 'cur'), join(md, 'new'), join(md, 'tmp')]) {
    const st = await stat(d);
    assert.ok(st.isDirectory(), d);
    assert.equal(st.mode & 0o777, 0o700, d);
  }
});

test('200 concurrent deliveries give 200 distinct, intact files', async (t) => {
  const md = join(await tempDir(t), 'Maildir');
  const bodies = Array.from({ length: 200 }, (_, i) => `Subject: ${i}\n\n${'x'.repeat(i * 37)}\nend ${i}\n`);
  const results = await Promise.all(bodies.map((b) => deliverMaildir(message(b), { path: md, hostname: 'mx.example' })));
  for (const r of results) assert.equal(r.status.code, '2.0.0', r.status.text);
  const names = await readdir(join(md, 'new'));
  assert.equal(new Set(names).size, 200);
  const contents = new Set(await Promise.all(names.map(async (n) => (await readFile(join(md, 'new', n))).toString('latin1'))));
  assert.deepEqual(contents, new Set(bodies.map((b) => HEADER.toString('latin1') + b)));
  assert.deepEqual(await readdir(join(md, 'tmp')), []);
});

const bodies: { name: string; body: Buffer }[] = [
  { name: 'a 1 MiB body', body: Buffer.alloc(1 << 20, 'abcdefghij\n') },
  { name: 'NUL bytes and 8-bit data', body: Buffer.from([0x41, 0x00, 0x0a, 0xff, 0x00, 0xe9, 0x0a]) },
  { name: 'a body without a final LF', body: Buffer.from('Subject: x\n\nno newline') },
  { name: 'an empty body (header-only message)', body: Buffer.alloc(0) },
];
for (const c of bodies) {
  test(`${c.name} is stored byte for byte`, async (t) => {
    const md = join(await tempDir(t), 'Maildir');
    const got = await deliverMaildir(message(c.body), { path: md, hostname: 'mx.example', fsync: c.body.length > 1000 });
    assert.equal(got.status.code, '2.0.0', got.status.text);
    assert.ok(got.path !== undefined);
    assert.deepEqual(await readFile(got.path), Buffer.concat([HEADER, c.body]));
  });
}

const folders: { folder: string | undefined; want: string | undefined }[] = [
  { folder: undefined, want: undefined },
  { folder: 'Foo', want: '.Foo' },
  { folder: 'a/b', want: '.a.b' },
  { folder: 'a.b', want: '.a.b' },
  { folder: '.Trash', want: '.Trash' },
  { folder: '../../etc', want: '.etc' },
  { folder: '/etc/passwd', want: '.etc.passwd' },
  { folder: 'x\u0000y\ny', want: '.x_y_y' },
  { folder: '..', want: undefined },
  { folder: '/', want: undefined },
  { folder: '', want: undefined },
  { folder: 'INBOX', want: undefined },
  { folder: 'Été', want: '.Été' },
];
for (const c of folders) {
  test(`folder ${JSON.stringify(c.folder)} maps to ${c.want ?? 'the INBOX'}`, () => {
    assert.equal(maildirFolderName(c.folder), c.want);
  });
}

for (const folder of ['Foo', 'a/b', '../../etc', '.Trash']) {
  test(`delivery to folder ${JSON.stringify(folder)} stays inside the Maildir and makes a Maildir++ folder`, async (t) => {
    const base = await tempDir(t);
    const md = join(base, 'Maildir');
    const got = await deliverMaildir(message('x\n'), { path: md, hostname: 'mx.example', folder });
    assert.equal(got.status.code, '2.0.0', got.status.text);
    assert.deepEqual(await readdir(base), ['Maildir']);
    const dir = join(md, maildirFolderName(folder)!);
    assert.ok(got.path?.startsWith(join(dir, 'new') + '/'), got.path);
    assert.equal((await readFile(join(dir, 'maildirfolder'))).length, 0);
    for (const d of ['cur', 'new', 'tmp']) {
      assert.equal((await stat(join(dir, d))).mode & 0o777, 0o700);
      assert.ok((await stat(join(md, d))).isDirectory(), `INBOX ${d}`);
    }
  });
}

const symlinked: { name: string; link: (md: string, outside: string) => Promise<void> }[] = [
  { name: 'new/', link: async (md, outside) => { await mkdir(join(md, 'tmp'), { recursive: true }); await symlink(outside, join(md, 'new')); } },
  { name: 'tmp/', link: async (md, outside) => { await mkdir(join(md, 'new'), { recursive: true }); await symlink(outside, join(md, 'tmp')); } },
  { name: 'the maildir itself', link: async (md, outside) => {
    for (const d of ['cur', 'new', 'tmp']) await mkdir(join(outside, d));
    await symlink(outside, md);
  } },
];
for (const c of symlinked) {
  test(`a symlinked ${c.name} is refused (5.2.0) and nothing is written outside`, async (t) => {
    const base = await tempDir(t);
    const md = join(base, 'Maildir');
    const outside = join(base, 'outside');
    await mkdir(outside);
    await c.link(md, outside);
    const got = await deliverMaildir(message('secret\n'), { path: md, hostname: 'mx.example' });
    assert.equal(got.status.code, '5.2.0', got.status.text);
    assert.match(got.status.text, /symbolic link/);
    const left = execFileSync('find', [outside, '-type', 'f']).toString();
    assert.equal(left, '');
  });
}

test('a symlinked folder is refused even when the INBOX is fine', async (t) => {
  const base = await tempDir(t);
  const md = join(base, 'Maildir');
  const outside = join(base, 'outside');
  for (const d of ['cur', 'new', 'tmp']) await mkdir(join(outside, d), { recursive: true });
  await mkdir(md);
  await symlink(outside, join(md, '.Spam'));
  const got = await deliverMaildir(message('x\n'), { path: md, hostname: 'mx.example', folder: 'Spam' });
  assert.equal(got.status.code, '5.2.0', got.status.text);
  assert.equal(execFileSync('find', [outside, '-type', 'f']).toString(), '');
});

test('a hostname with "/" and ":" cannot add a path or an info part to the name', async (t) => {
  const md = join(await tempDir(t), 'Maildir');
  const got = await deliverMaildir(message('x\n'), { path: md, hostname: 'a/b:c' });
  assert.equal(got.status.code, '2.0.0', got.status.text);
  const [name] = await readdir(join(md, 'new'));
  assert.match(name!, /\.a\\057b\\072c,S=\d+$/);
});

test('a parent that cannot be made gives 4.3.0 naming it, and does not hang', { timeout: 10_000 }, async () => {
  // Node's own mkdir({ recursive }) loops forever here.
  const got = await deliverMaildir(message('x\n'), { path: '/proc/self/mailprocd-none/Maildir', hostname: 'h' });
  assert.equal(got.status.code, '4.3.0', got.status.text);
  assert.match(got.status.text, /^cannot create maildir \/proc\/self\/mailprocd-none: No such file or directory/);
});

test('a parent the user may not write is a temporary 4.2.0 naming the path and the uid', async (t) => {
  if (!requireRoot(t, 'run a delivery as uid 65534')) return;
  const base = await tempDir(t);
  await chmod(base, 0o755);
  const script = join(base, 'deliver.mjs');
  await writeFile(script, [
    `const { deliverMaildir } = await import(${JSON.stringify(new URL('../../src/deliver/index.js', import.meta.url).href)});`,
    // Drop to nobody after the import, so the checkout need not be readable by nobody.
    'process.setgroups([]); process.setgid(65534); process.setuid(65534);',
    `const m = { header: Buffer.from('X: y\\n'), body: Buffer.from('b\\n'), sender: '', arrival: new Date() };`,
    `const r = await deliverMaildir(m, { path: ${JSON.stringify(join(base, 'Maildir'))}, hostname: 'h' });`,
    'process.stdout.write(JSON.stringify(r.status));',
  ].join('\n'));
  const out = execFileSync(process.execPath, [script]).toString();
  const got = JSON.parse(out) as { code: string; text: string };
  assert.equal(got.code, '4.2.0', got.text);
  assert.match(got.text, new RegExp(`^cannot create maildir ${base}/Maildir: Permission denied \\(not writable by uid 65534, gid 65534\\)`));
  assert.deepEqual(await readdir(base), ['deliver.mjs']);
});

test('a path that is not absolute is a programmer error', async () => {
  await assert.rejects(deliverMaildir(message('x'), { path: 'Maildir', hostname: 'h' }), /absolute/);
});

test('a full file system gives 4.3.1 and leaves nothing in tmp/ or new/', async (t) => {
  const mnt = await tempDir(t);
  if (!mountTmpfs(t, mnt, '64k')) return;
  try {
    const md = join(mnt, 'Maildir');
    const small = await deliverMaildir(message('small\n'), { path: md, hostname: 'mx.example' });
    assert.equal(small.status.code, '2.0.0', small.status.text);
    const got = await deliverMaildir(message(Buffer.alloc(1 << 20, 'y')), { path: md, hostname: 'mx.example' });
    assert.equal(got.status.code, '4.3.1', got.status.text);
    assert.equal(got.status.reply, 452);
    assert.match(got.status.text, /^cannot write maildir file .*\/tmp\/.*No space left on device/);
    assert.deepEqual(await readdir(join(md, 'tmp')), []);
    assert.deepEqual(await readdir(join(md, 'new')), [small.path!.split('/').pop()]);
  } finally {
    execFileSync('umount', [mnt]);
  }
});
