// The Maildir leaf's redelivery token (src/deliver/maildir.ts): where it goes
// in the unique name, that the name stays unique and readable the way Dovecot
// reads names, and the check that keeps a repeated queue attempt from writing
// a copy an earlier attempt already wrote — in new/, or in cur/ once a reader
// has seen it.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { deliverMaildir, type MessageCopy } from '../../src/deliver/index.js';
import { redeliveryTokenOf } from '../../src/deliver/maildir.js';
import { TEST_RECIPIENT } from '../helpers/mailbox.js';

const HEADER = Buffer.from('Return-Path: <a@example.org>\nDelivered-To: b@example.net\n');
const TOKEN = 'k7qz2mbxa4nd5wfe';
const OTHER = 'aaaabbbbccccdddd';

function message(body = 'Subject: hi\n\nhello\n'): MessageCopy {
  return { header: HEADER, body: Buffer.from(body), sender: 'a@example.org', arrival: new Date('2026-11-21T09:30:25Z'), recipient: TEST_RECIPIENT };
}

async function maildir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'mailprocd-redelivery-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'Maildir');
}

const leaf = (path: string, token: string, check: boolean, folder?: string): Parameters<typeof deliverMaildir>[1] => ({
  path, hostname: 'mx.example', redelivery: { token, check }, ...(folder !== undefined ? { folder } : {}),
});

/** Dovecot's maildir_filename_get_size: the first ",S=" anywhere, digits up to ':', ',' or the end. */
function dovecotSize(name: string): number | undefined {
  const m = /,S=(\d+)(?:[:,]|$)/.exec(name);
  return m === null ? undefined : Number(m[1]);
}

/** Dovecot's maildir_fname_get_usecs: the first 'M' in the middle part, then digits (it sorts by them). */
function dovecotUsecs(name: string): number | undefined {
  const middle = name.split('.')[1] ?? '';
  const m = /M(\d*)/.exec(middle);
  return m === null ? undefined : Number(m[1]);
}

test('the token sits at the end of the name\'s middle part, readable back from new/ and from cur/ with flags', async (t) => {
  const md = await maildir(t);
  const got = await deliverMaildir(message(), leaf(md, TOKEN, false));
  assert.equal(got.status.code, '2.0.0', got.status.text);
  const [name] = await readdir(join(md, 'new'));
  assert.match(name!, new RegExp(`^1795253425\\.M(\\d{1,6})P\\d+Q\\d+K${TOKEN}\\.mx\\.example,S=\\d+$`));
  assert.equal(redeliveryTokenOf(name!), TOKEN);
  assert.equal(redeliveryTokenOf(`${name!}:2,S`), TOKEN);
  assert.equal(redeliveryTokenOf(`${name!},W=120:2,FS`), TOKEN, 'a size field another program adds');
  assert.equal(dovecotSize(name!), HEADER.length + message().body.length, 'Dovecot still reads the size');
  assert.equal(dovecotUsecs(name!), Number(/\.M(\d+)P/.exec(name!)?.[1]), 'Dovecot still reads the microseconds');
  for (const plain of ['1795253425.M12P3Q4.mx.example,S=9', '1795253425.M12P3Q4.mx.example,S=9:2,S', `1795253425.M12P3Q4.K${TOKEN},S=9`, 'garbage']) {
    assert.equal(redeliveryTokenOf(plain), undefined, plain);
  }
});

test('200 concurrent copies under one token still get 200 distinct names', async (t) => {
  const md = await maildir(t);
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => deliverMaildir(message(`Subject: ${i}\n\n${i}\n`), { ...leaf(md, TOKEN, false), fsync: false })));
  for (const r of results) assert.equal(r.status.code, '2.0.0', r.status.text);
  const names = await readdir(join(md, 'new'));
  assert.equal(new Set(names).size, 200);
  assert.ok(names.every((n) => redeliveryTokenOf(n) === TOKEN));
});

test('a repeated attempt finds its copy in new/: 2.0.0 "already delivered", nothing written', async (t) => {
  const md = await maildir(t);
  const first = await deliverMaildir(message(), leaf(md, TOKEN, false));
  const [name] = await readdir(join(md, 'new'));
  const again = await deliverMaildir(message(), leaf(md, TOKEN, true));
  assert.equal(again.status.code, '2.0.0');
  assert.equal(again.status.text, `already delivered (${name!})`);
  assert.equal(again.path, first.path);
  assert.deepEqual(await readdir(join(md, 'new')), [name]);
  assert.deepEqual(await readdir(join(md, 'tmp')), []);
});

test('a repeated attempt finds its copy in cur/ after a reader flagged it seen (:2,S): nothing written', async (t) => {
  const md = await maildir(t);
  await deliverMaildir(message(), leaf(md, TOKEN, false));
  const [name] = await readdir(join(md, 'new'));
  await rename(join(md, 'new', name!), join(md, 'cur', `${name!}:2,S`));
  const again = await deliverMaildir(message(), leaf(md, TOKEN, true));
  assert.equal(again.status.code, '2.0.0');
  assert.match(again.status.text, /^already delivered \(.*:2,S\)$/);
  assert.equal(again.path, join(md, 'cur', `${name!}:2,S`));
  assert.deepEqual(await readdir(join(md, 'new')), []);
});

test('a repeated attempt finds its copy flagged in new/ (Dovecot 2.3 sets flags there as new/NAME:2,S): nothing written', async (t) => {
  const md = await maildir(t);
  await deliverMaildir(message(), leaf(md, TOKEN, false));
  const [name] = await readdir(join(md, 'new'));
  await rename(join(md, 'new', name!), join(md, 'new', `${name!}:2,S`));
  const again = await deliverMaildir(message(), leaf(md, TOKEN, true));
  assert.equal(again.status.text, `already delivered (${name!}:2,S)`);
  assert.deepEqual(await readdir(join(md, 'new')), [`${name!}:2,S`]);
});

test('another token, or a copy for another folder, is written', async (t) => {
  const md = await maildir(t);
  await deliverMaildir(message(), leaf(md, TOKEN, false));
  const other = await deliverMaildir(message(), leaf(md, OTHER, true));
  assert.equal(other.status.code, '2.0.0', other.status.text);
  assert.doesNotMatch(other.status.text, /already/);
  assert.equal((await readdir(join(md, 'new'))).length, 2);
  const folder = await deliverMaildir(message(), leaf(md, TOKEN, true, 'lists'));
  assert.doesNotMatch(folder.status.text, /already/);
  assert.equal((await readdir(join(md, '.lists', 'new'))).length, 1);
});

test('without the check (a first attempt) the copy is written even if the token is there', async (t) => {
  const md = await maildir(t);
  await deliverMaildir(message(), leaf(md, TOKEN, false));
  await deliverMaildir(message(), leaf(md, TOKEN, false));
  assert.equal((await readdir(join(md, 'new'))).length, 2);
});

test('the check on a maildir that does not exist yet, or without cur/, writes the copy', async (t) => {
  const md = await maildir(t);
  const made = await deliverMaildir(message(), leaf(md, TOKEN, true));
  assert.equal(made.status.code, '2.0.0', made.status.text);
  assert.doesNotMatch(made.status.text, /already/);
  await rm(join(md, 'cur'), { recursive: true });
  const other = await deliverMaildir(message(), leaf(md, OTHER, true));
  assert.equal(other.status.code, '2.0.0', other.status.text);
  assert.equal((await readdir(join(md, 'new'))).length, 2);
});

test('a token that is not one is a programmer error', async (t) => {
  const md = await maildir(t);
  await assert.rejects(deliverMaildir(message(), leaf(md, 'x/../:2,S', true)), /bug: not a redelivery token/);
});
