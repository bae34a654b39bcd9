// Mail we own (SMTP intake) that cannot be delivered: a temporary failure is
// retried with backoff; after the queue lifetime (shortened here) it is given
// up and a DSN reaches the sender through the bounce relay (a loopback SMTP
// sink) with the original headers attached; a permanent failure bounces at
// once; a bounce (null sender) is never bounced.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createTransport } from 'nodemailer';
import { startDaemon } from '../helpers/daemon.js';
import { startSmtpSink } from '../helpers/smtp-sink.js';

const RULES = `
temp@q.test   pipe:"/bin/sh -c 'cat >/dev/null; exit 75'"
perm@q.test   pipe:"/bin/sh -c 'cat >/dev/null; echo 5.1.1 no such mailbox here; exit 67'"
`;

async function until(what: string, probe: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a temporary failure is retried, then bounced after the lifetime; a permanent one bounces at once; null senders never', { timeout: 60_000 }, async () => {
  const sink = await startSmtpSink();
  const d = await startDaemon({
    rules: RULES,
    // A lifetime of 6 s for at least two attempts 200–400 ms apart: an attempt
    // (a worker start, a shell) takes milliseconds idle and well under a
    // second loaded; with 2 s a slow first start could leave room for one.
    config: { queue: { retry_min: '200ms', retry_max: '400ms', lifetime: '6s' }, relay: { smtp: `127.0.0.1:${sink.port}` }, log: { level: 'info' } },
  });
  try {
    const t = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test' } as never);
    const send = (from: string, to: string, subject: string): Promise<unknown> => t.sendMail({
      envelope: { from, to: [to] },
      raw: `From: sender@remote.test\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\s/g, '-')}@remote.test>\r\n\r\nthe body text\r\n`,
    });
    await send('sender@remote.test', 'perm@q.test', 'permanent failure');
    await until('the immediate bounce', () => sink.messages.length >= 1);
    const perm = sink.messages[0];
    assert.equal(perm?.from, '', 'the DSN is sent from the null sender');
    assert.deepEqual(perm?.to, ['sender@remote.test']);
    const permText = perm?.raw.toString('utf8') ?? '';
    assert.match(permText, /Content-Type: multipart\/report; report-type=delivery-status/i);
    assert.match(permText, /Final-Recipient: rfc822; ?perm@q\.test/i);
    assert.match(permText, /Status: 5\.1\.1/);
    assert.match(permText, /Subject: permanent failure/, 'the original headers are attached');
    assert.doesNotMatch(permText, /the body text/, 'the body is not');

    await send('sender@remote.test', 'temp@q.test', 'temporary failure');
    await until('the expiry bounce', () => sink.messages.length >= 2);
    const deferrals = d.logs.filter((l) => /to=<temp@q\.test>.*status=deferred/.test(l)).length;
    assert.ok(deferrals >= 2, `retried with backoff before giving up (${deferrals} deferrals)`);
    const temp = sink.messages[1]?.raw.toString('utf8') ?? '';
    assert.match(temp, /Status: 5\.4\.7/);
    assert.match(temp, /Subject: temporary failure/);
    await d.waitForLog(/to=<temp@q\.test>.*dsn=5\.4\.7, status=bounced/);

    await send('', 'perm@q.test', 'a bounce itself');
    await d.waitForLog(/no bounce: the sender <> is null/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(sink.messages.length, 2, 'no DSN for a message from the null sender');
    t.close();
  } finally {
    await d.stop();
    d.cleanup();
    await sink.close();
  }
});
