// relay.tls against a loopback SMTP sink that offers STARTTLS with a
// throwaway self-signed certificate (openssl): optional uses it when offered
// (the certificate is not verified, as Postfix's "may"), off never does,
// required refuses to send to a relay that does not offer it (4.x.x, so the
// queue retries) and sends when it does.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { RelayConfig } from '../../src/config/relay.js';
import { Relays } from '../../src/relay/index.js';
import { startSmtpSink, type SmtpSink } from '../helpers/smtp-sink.js';

const dir = mkdtempSync(join(tmpdir(), 'mailproc-relay-tls-'));
let tlsSink: SmtpSink;
let plainSink: SmtpSink;

before(async () => {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=sink.test',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  tlsSink = await startSmtpSink({ tls: { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) } });
  plainSink = await startSmtpSink();
});
after(async () => {
  await tlsSink.close();
  await plainSink.close();
  rmSync(dir, { recursive: true, force: true });
});

const relayConfig = (port: number, tls: RelayConfig['tls']): RelayConfig => ({
  smtp: `127.0.0.1:${port}`, sendmail: '/usr/sbin/sendmail', max_connections: 1, timeout: 10_000, tls,
  srs: { old_secrets: [], max_age: 21 * 86_400_000 },
});

async function sendVia(port: number, tls: RelayConfig['tls'], subject: string): Promise<string> {
  const relays = new Relays(() => ({ name: 'mx.test.local', relay: relayConfig(port, tls) }));
  try {
    const [s] = await relays.outbound().send({ from: 'a@x.test', to: ['b@y.test'], raw: Buffer.from(`Subject: ${subject}\r\n\r\nhi\r\n`) });
    return `${s?.code} ${s?.text}`;
  } finally {
    relays.close();
  }
}

const arrived = (sink: SmtpSink, subject: string) => sink.messages.find((m) => m.raw.toString('utf8').includes(`Subject: ${subject}`));

test('optional: STARTTLS when the relay offers it, with an unverifiable certificate', async () => {
  assert.match(await sendVia(tlsSink.port, 'optional', 'optional-tls'), /^2\.0\.0 /);
  assert.match(arrived(tlsSink, 'optional-tls')?.tls ?? 'clear', /^TLSv1\.[23]$/);
});

test('optional: in clear when the relay does not offer it', async () => {
  assert.match(await sendVia(plainSink.port, 'optional', 'optional-clear'), /^2\.0\.0 /);
  assert.equal(arrived(plainSink, 'optional-clear')?.tls, undefined);
});

test('off: in clear even when offered', async () => {
  assert.match(await sendVia(tlsSink.port, 'off', 'off-clear'), /^2\.0\.0 /);
  assert.equal(arrived(tlsSink, 'off-clear')?.tls, undefined);
});

test('required: a relay without STARTTLS gets nothing and the status is temporary; one with it gets the message encrypted', async () => {
  assert.match(await sendVia(plainSink.port, 'required', 'required-clear'), /^4\.\d+\.\d+ /);
  assert.equal(arrived(plainSink, 'required-clear'), undefined);
  assert.match(await sendVia(tlsSink.port, 'required', 'required-tls'), /^2\.0\.0 /);
  assert.match(arrived(tlsSink, 'required-tls')?.tls ?? 'clear', /^TLSv1\.[23]$/);
});
