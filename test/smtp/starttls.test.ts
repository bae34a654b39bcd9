// STARTTLS on the SMTP listener (smtp.tls) against a real mailprocd, with a
// throwaway self-signed certificate made here by openssl: swaks --tls and a
// real Postfix smtp client (smtp_tls_security_level = encrypt) deliver, and
// the intake line, the delivery line and the Received header say TLSv1.3;
// required refuses MAIL before STARTTLS with 530 5.7.0 and the session goes
// on; off does not announce it, nor does the LMTP listener ever; only
// TLS 1.2+ with AEAD ciphers; SIGHUP swaps the certificate for the next
// session, and a broken new key is logged and the old certificate stays.
//
// Needs openssl (Debian "openssl"); the swaks test needs "swaks", the Postfix
// test root, "postfix" and "swaks". Every wait waits on a log line, a reply or
// a file, with a deadline that only catches hangs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { requireProgram, requireRoot } from '../helpers/components.js';
import { makeTestDir, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { newFiles } from '../helpers/mailbox.js';
import { run, startPostfix, swaks as swaksToPostfix, type TestPostfix } from '../helpers/postfix.js';
import { dataBlock, RawClient } from '../helpers/raw-client.js';
import { waitFor } from '../helpers/wait.js';

const RULES = `
alice@example.test  maildir:\${MAIL}/\${user}/Maildir/
bob@example.test    maildir:\${MAIL}/\${user}/Maildir/
`;

const WAIT_MS = 30_000;

interface Certificate {
  readonly cert: string;
  readonly key: string;
  /** SHA-256 fingerprint, as node's getPeerCertificate().fingerprint256 prints it. */
  readonly fingerprint: string;
}

/** A self-signed EC certificate and its key, made by openssl under dir as NAME.crt / NAME.key. */
function makeCertificate(dir: string, name: string): Certificate {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=mx.test.local', '-addext', 'subjectAltName=DNS:mx.test.local'],
  { stdio: 'pipe', timeout: 30_000 });
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

/** A mailprocd whose SMTP listener has smtp.tls = mode with a fresh certificate at DIR/tls/server.{crt,key}. */
async function startTlsDaemon(mode: 'optional' | 'required'): Promise<{ d: TestDaemon; cert: Certificate; tlsDir: string }> {
  const dir = makeTestDir();
  const tlsDir = join(dir, 'tls');
  mkdirSync(tlsDir);
  const cert = makeCertificate(tlsDir, 'server');
  const d = await startDaemon({ dir, rules: RULES, config: { smtp: { tls: mode, tls_cert: cert.cert, tls_key: cert.key } } });
  return { d, cert, tlsDir };
}

const re = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
let seq = 0;
const newMessageId = (what: string): string => `${what}.${process.pid}.${Date.now()}.${++seq}@remote.test`;

/** The delivered file in maildir/new carrying this Message-Id, once there. */
function delivered(maildir: string, messageId: string): Promise<string> {
  return waitFor(`a file with Message-Id <${messageId}> in ${maildir}/new`,
    () => newFiles(maildir).find((f) => readFileSync(f, 'latin1').includes(`<${messageId}>`)), WAIT_MS);
}

/** Greeting, EHLO: the EHLO keywords. */
async function greet(c: RawClient, verb = 'EHLO'): Promise<string[]> {
  assert.equal((await c.reply()).code, 220);
  const r = await c.command(`${verb} client.test`);
  assert.equal(r.code, 250, r.line);
  return r.text.split('\n').slice(1).map((l) => l.split(' ')[0] ?? '');
}

/** A new session up to an established TLS session (EHLO again afterwards): what was negotiated. */
async function tlsSession(port: number): Promise<{ c: RawClient; protocol: string | null; cipher: string; fingerprint: string }> {
  const c = await RawClient.open({ port });
  try {
    assert.ok((await greet(c)).includes('STARTTLS'));
    assert.match((await c.command('STARTTLS')).line, /^220 /);
    const s = await c.startTls();
    const again = await c.command('EHLO client.test');
    assert.equal(again.code, 250, again.line);
    assert.ok(!again.text.includes('STARTTLS'), 'STARTTLS is not announced again inside TLS');
    return { c, protocol: s.protocol, cipher: s.cipher, fingerprint: s.certificate.fingerprint256 };
  } catch (err) {
    c.close();
    throw err;
  }
}

/** One message to alice over an open session: the queue id from "250 … queued as ID". */
async function sendTo(c: RawClient, rcpt: string, messageId: string): Promise<string> {
  assert.match((await c.command('MAIL FROM:<s@remote.test>')).line, /^250 /);
  assert.match((await c.command(`RCPT TO:<${rcpt}>`)).line, /^250 /);
  assert.equal((await c.command('DATA')).code, 354);
  c.write(dataBlock(`From: s@remote.test\r\nTo: ${rcpt}\r\nSubject: tls\r\nMessage-Id: <${messageId}>\r\n\r\nhello\r\n`));
  const r = await c.reply();
  const id = /^250 2\.0\.0 Ok: queued as ([0-9A-F]+)/.exec(r.line)?.[1];
  assert.ok(id !== undefined, r.line);
  return id;
}

test('swaks --tls: the message lands in the Maildir; the intake line, the delivery line and the Received header say TLSv1.3; a plaintext message on the same listener says nothing of TLS', async (t) => {
  if (requireProgram(t, 'openssl', 'openssl') === undefined || requireProgram(t, 'swaks', 'swaks') === undefined) return;
  const { d } = await startTlsDaemon('optional');
  try {
    const maildir = join(d.mail, 'alice', 'Maildir');
    const send = (tls: boolean, messageId: string): ReturnType<typeof run> => run('swaks', [
      '--server', `127.0.0.1:${d.smtpPort}`, ...(tls ? ['--tls'] : []), '--helo', 'client.test',
      '--from', 's@remote.test', '--to', 'alice@example.test',
      '--header', `Message-Id: <${messageId}>`, '--body', 'over SMTP\n', '--timeout', '20',
    ]);

    const secureId = newMessageId('tls');
    const r = await send(true, secureId);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /=== TLS started with cipher TLSv1\.3:/);
    const queueId = /queued as ([0-9A-F]+)/.exec(r.stdout)?.[1] ?? '';
    assert.notEqual(queueId, '', r.stdout);
    await d.waitForLog(new RegExp(`${queueId}: from=<s@remote\\.test>, size=\\d+, nrcpt=1, proto=ESMTP, tls=TLSv1\\.3, cipher=TLS_\\w+$`));
    await d.waitForLog(new RegExp(`${queueId}: to=<alice@example\\.test>, relay=maildir, .*, dsn=2\\.0\\.0, tls=TLSv1\\.3, cipher=TLS_\\w+, status=sent `));
    const file = readFileSync(await delivered(maildir, secureId), 'utf8');
    assert.match(file, new RegExp(`^Received: from client\\.test \\(127\\.0\\.0\\.1\\)\\n\\t\\(using TLSv1\\.3 with cipher TLS_\\w+\\)\\n\\tby mx\\.test\\.local \\(mailprocd\\) with ESMTPS id ${queueId}\\n`, 'm'));

    const plainId = newMessageId('plain');
    const p = await send(false, plainId);
    assert.equal(p.code, 0, p.stdout + p.stderr);
    const plainQueueId = /queued as ([0-9A-F]+)/.exec(p.stdout)?.[1] ?? '';
    const line = await d.waitForLog(new RegExp(`${plainQueueId}: to=<alice@example\\.test>, relay=maildir, .*status=sent `));
    assert.doesNotMatch(line, /tls=|cipher=/);
    assert.doesNotMatch(d.logs.find((l) => l.includes(`${plainQueueId}: from=`)) ?? '', /tls=|cipher=/);
    const plainFile = readFileSync(await delivered(maildir, plainId), 'utf8');
    assert.match(plainFile, new RegExp(`with ESMTP id ${plainQueueId}\\n`));
    assert.doesNotMatch(plainFile, /\(using TLS/);
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('smtp.tls required: MAIL before STARTTLS gets 530 5.7.0 and the session goes on; after STARTTLS the message is accepted and logged with tls=; the LMTP listener offers no STARTTLS', async (t) => {
  if (requireProgram(t, 'openssl', 'openssl') === undefined) return;
  const { d, cert } = await startTlsDaemon('required');
  try {
    const c = await RawClient.open({ port: d.smtpPort });
    try {
      assert.ok((await greet(c)).includes('STARTTLS'), 'STARTTLS is announced');
      assert.equal((await c.command('MAIL FROM:<s@remote.test>')).line, '530 5.7.0 Must issue a STARTTLS command first');
      assert.match((await c.command('NOOP')).line, /^250 /);
      assert.match((await c.command('RSET')).line, /^250 /);
      assert.equal((await c.command('EHLO client.test')).code, 250);
      assert.equal((await c.command('MAIL FROM:<s@remote.test>')).code, 530, 'still refused before STARTTLS');
      assert.match((await c.command('STARTTLS')).line, /^220 /);
      const s = await c.startTls();
      assert.equal(s.protocol, 'TLSv1.3');
      assert.equal(s.certificate.fingerprint256, cert.fingerprint);
      assert.equal((await c.command('EHLO client.test')).code, 250);
      const messageId = newMessageId('required');
      const queueId = await sendTo(c, 'alice@example.test', messageId);
      assert.equal((await c.command('QUIT')).code, 221);
      await d.waitForLog(new RegExp(`${queueId}: to=<alice@example\\.test>, .*dsn=2\\.0\\.0, tls=TLSv1\\.3, cipher=${re(s.cipher)}, status=sent `));
      await delivered(join(d.mail, 'alice', 'Maildir'), messageId);
    } finally {
      c.close();
    }

    const l = await RawClient.open({ port: d.lmtpPort });
    try {
      assert.ok(!(await greet(l, 'LHLO')).includes('STARTTLS'), 'LMTP does not announce STARTTLS');
      assert.match((await l.command('STARTTLS')).line, /^5\d\d /);
    } finally {
      l.close();
    }
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('TLS 1.2 is the least: a TLS 1.2 client gets an ECDHE AEAD cipher, a TLS 1.1 client and a client offering only CBC ciphers fail the handshake', async (t) => {
  if (requireProgram(t, 'openssl', 'openssl') === undefined) return;
  const { d } = await startTlsDaemon('optional');
  const attempt = async (options: Parameters<RawClient['startTls']>[1]): Promise<{ protocol: string | null; cipher: string } | Error> => {
    const c = await RawClient.open({ port: d.smtpPort });
    try {
      await greet(c);
      assert.match((await c.command('STARTTLS')).line, /^220 /);
      return await c.startTls(10_000, options).catch((err: unknown) => err as Error);
    } finally {
      c.close();
    }
  };
  try {
    const tls12 = await attempt({ maxVersion: 'TLSv1.2' });
    assert.ok(!(tls12 instanceof Error), String(tls12));
    assert.equal(tls12.protocol, 'TLSv1.2');
    assert.match(tls12.cipher, /^ECDHE-ECDSA-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$/);
    // The client's own floor lowered so that the refusal is the server's (its log line says why).
    const tls11 = await attempt({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' });
    assert.ok(tls11 instanceof Error, `a TLS 1.1 client negotiated ${JSON.stringify(tls11)}`);
    await d.waitForLog(/warn: smtp client 127\.0\.0\.1: TLS handshake failed: unsupported protocol$/, WAIT_MS);
    const cbc = await attempt({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384' });
    assert.ok(cbc instanceof Error, `a CBC-only client negotiated ${JSON.stringify(cbc)}`);
    await d.waitForLog(/warn: smtp client 127\.0\.0\.1: TLS handshake failed: no shared cipher$/, WAIT_MS);
    assert.equal(d.logs.filter((l) => /TLS handshake failed/.test(l)).length, 2, 'one line per failed handshake');
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('smtp.tls off (the embedded default): STARTTLS is neither announced nor accepted', async () => {
  const d = await startDaemon({ rules: RULES });
  try {
    const c = await RawClient.open({ port: d.smtpPort });
    try {
      assert.ok(!(await greet(c)).includes('STARTTLS'));
      assert.match((await c.command('STARTTLS')).line, /^5\d\d /);
      assert.match((await c.command('MAIL FROM:<s@remote.test>')).line, /^250 /);
    } finally {
      c.close();
    }
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('SIGHUP with a new certificate: the next STARTTLS presents it, a session open across the reload goes on; a broken new key is logged naming the file and the certificate in use stays', async (t) => {
  if (requireProgram(t, 'openssl', 'openssl') === undefined) return;
  const { d, cert: first, tlsDir } = await startTlsDaemon('optional');
  const open: RawClient[] = [];
  try {
    const before = await tlsSession(d.smtpPort);
    open.push(before.c);
    assert.equal(before.fingerprint, first.fingerprint);
    // A plaintext session opened before the reload, upgraded after it.
    const waiting = await RawClient.open({ port: d.smtpPort });
    open.push(waiting);
    await greet(waiting);

    // The new pair replaces the files in use, each by a rename (whole, never half-written).
    const second = makeCertificate(tlsDir, 'next');
    renameSync(second.cert, first.cert);
    renameSync(second.key, first.key);
    d.child.kill('SIGHUP');
    await d.waitForLog(new RegExp(`STARTTLS certificate reloaded ${re(first.cert)} \\(SHA256 ${re(second.fingerprint)},`), WAIT_MS);

    const after = await tlsSession(d.smtpPort);
    open.push(after.c);
    assert.equal(after.fingerprint, second.fingerprint, 'a new session gets the new certificate');
    assert.match((await waiting.command('STARTTLS')).line, /^220 /);
    assert.equal((await waiting.startTls()).certificate.fingerprint256, second.fingerprint, 'so does a session that was open before the reload');
    assert.match((await before.c.command('NOOP')).line, /^250 /, 'the session in TLS before the reload goes on');
    const queueId = await sendTo(before.c, 'bob@example.test', newMessageId('across-reload'));
    await d.waitForLog(new RegExp(`${queueId}: to=<bob@example\\.test>, .*tls=TLSv1\\.3, .*status=sent `));

    writeFileSync(`${first.key}.tmp`, '-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n');
    renameSync(`${first.key}.tmp`, first.key);
    d.child.kill('SIGHUP');
    const error = await d.waitForLog(new RegExp(`error: reload failed, keeping the running configuration: .*smtp\\.tls_key: ${re(first.key)} is not a PEM private key`), WAIT_MS);
    assert.doesNotMatch(error, /\n/);
    const kept = await tlsSession(d.smtpPort);
    open.push(kept.c);
    assert.equal(kept.fingerprint, second.fingerprint, 'the certificate in use stays');
    const keptId = await sendTo(kept.c, 'alice@example.test', newMessageId('after-bad-reload'));
    await d.waitForLog(new RegExp(`${keptId}: to=<alice@example\\.test>, .*tls=TLSv1\\.3, .*status=sent `));
  } finally {
    for (const c of open) c.close();
    await d.stop();
    d.cleanup();
  }
});

function postfixComponents(t: TestContext): boolean {
  return requireRoot(t, 'Postfix starts its master as root')
    && requireProgram(t, 'openssl', 'openssl') !== undefined
    && requireProgram(t, 'postfix', 'postfix') !== undefined
    && requireProgram(t, 'swaks', 'swaks') !== undefined;
}

test('a Postfix smtp client with smtp_tls_security_level = encrypt delivers through the SMTP listener (smtp.tls required)', async (t) => {
  if (!postfixComponents(t)) return;
  const { d } = await startTlsDaemon('required');
  let pf: TestPostfix | undefined;
  const diag = (): string => `\n--- Postfix maillog ---\n${pf?.logs() ?? '(not started)'}\n--- mailprocd log (last 60 lines) ---\n${d.logs.slice(-60).join('\n')}`;
  try {
    pf = await startPostfix({ lmtpSocket: d.socket, smtpRelay: { port: d.smtpPort, tls: 'encrypt' } });
    const messageId = newMessageId('postfix');
    const sent = await swaksToPostfix({ port: pf.smtpPort, from: 's@remote.test', to: ['alice@example.test'], messageId, subject: 'relayed over TLS' });
    assert.equal(sent.code, 0, `swaks exit ${sent.code}:\n${sent.stdout}${sent.stderr}`);
    const pfId = sent.queueId ?? assert.fail(`no Postfix queue id in:\n${sent.stdout}`);
    const file = await delivered(join(d.mail, 'alice', 'Maildir'), messageId).catch((err: unknown) => assert.fail(`${(err as Error).message}${diag()}`));
    const ours = /with ESMTPS id ([0-9A-F]+)\n/.exec(readFileSync(file, 'utf8'))?.[1] ?? assert.fail(`no "with ESMTPS id" in ${file}${diag()}`);
    await d.waitForLog(new RegExp(`${ours}: to=<alice@example\\.test>, .*dsn=2\\.0\\.0, tls=TLSv1\\.3, cipher=TLS_\\w+, status=sent `), WAIT_MS);
    const port = re(String(d.smtpPort));
    await pf.waitForLog(new RegExp(`TLS connection established to 127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${port}: TLSv1\\.3`), WAIT_MS);
    await pf.waitForLog(new RegExp(`${pfId}: to=<alice@example\\.test>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${port}, .*status=sent \\(250 2\\.0\\.0 Ok: queued as ${ours}\\)`), WAIT_MS);
  } finally {
    await pf?.stop();
    await d.stop();
    d.cleanup();
  }
});
