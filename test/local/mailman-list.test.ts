// list:NAME with a real Mailman 3 core as the list's manager
// (manager=lmtp:inet:127.0.0.1:PORT, test/helpers/mailman.ts): a post through
// our LMTP reaches Mailman's queue once, whatever the subscriber count; with
// Mailman down the post is deferred (4.x.x) and our queue hands it over once
// Mailman is back. A Mailman 2 style pipe: manager runs as a pipe for the
// list's owner, with pipe semantics (EX_TEMPFAIL defers).
// Skipped without mailman3 installed, failed for that under CI=true.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createTransport } from 'nodemailer';
import { startDaemon } from '../helpers/daemon.js';
import { startMailman } from '../helpers/mailman.js';
import { startSmtpSink } from '../helpers/smtp-sink.js';

const MEMBERS = ['alice@example.test', 'bob@example.test', 'carol@example.test', 'dave@example.test', 'erin@example.test'];

const post = (list: string, id: string): string =>
  `From: Alice <alice@example.test>\r\nTo: ${list}\r\nSubject: post ${id}\r\nMessage-ID: <${id}>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nA post.\r\n`;

test('list posts handed to a real Mailman 3 over LMTP: once per message; deferred while Mailman is down, then delivered', { timeout: 900_000 }, async (t) => {
  const sink = await startSmtpSink();
  const mm = await startMailman(t, { smtpPort: sink.port });
  if (mm === undefined) {
    await sink.close();
    return; // skipped: mailman3 is not installed
  }
  const manager = `lmtp:inet:127.0.0.1:${mm.lmtpPort}`;
  const d = await startDaemon({
    rules: 'dev@lists.example.test  list:dev@lists.example.test\nops@lists.example.test  list:ops@lists.example.test\n',
    lists: `dev@lists.example.test  closed  manager=${manager}  subscribers=${MEMBERS.join(',')}\nops@lists.example.test  open  manager=${manager}\n`,
    config: { queue: { retry_min: '500ms', retry_max: '1s' }, relay: { smtp: `127.0.0.1:${sink.port}` }, log: { level: 'info' } },
  });
  const lmtp = createTransport({ host: '127.0.0.1', port: d.lmtpPort, lmtp: true, name: 'client.test' } as never);
  const smtp = createTransport({ host: '127.0.0.1', port: d.smtpPort, name: 'client.test' } as never);
  const diag = (): string => `\n${mm.logs()}\n${d.logs.join('\n')}`;
  try {
    await mm.createList('dev@lists.example.test', MEMBERS);
    await mm.createList('ops@lists.example.test', MEMBERS);

    await t.test('a post through our LMTP reaches Mailman once, and our reply is Mailman\'s', async () => {
      const info = await lmtp.sendMail({ envelope: { from: 'alice@example.test', to: ['dev@lists.example.test'] }, raw: post('dev@lists.example.test', 'dev-1@example.test') });
      assert.deepEqual(info.accepted, ['dev@lists.example.test'], diag());
      assert.equal(mm.posts('dev@lists.example.test'), 1, `one copy for ${MEMBERS.length} subscribers${diag()}`);
      await d.waitForLog(new RegExp(`to=<dev@lists\\.example\\.test>, relay=list, .*dsn=2\\.0\\.0, status=sent \\(sent to 127\\.0\\.0\\.1:${mm.lmtpPort}`));
    });

    await t.test('with Mailman down the post is deferred; our queue hands it over once Mailman is back, once', async () => {
      await mm.halt();
      await smtp.sendMail({ envelope: { from: 'alice@example.test', to: ['ops@lists.example.test'] }, raw: post('ops@lists.example.test', 'ops-1@example.test') });
      await d.waitForLog(/to=<ops@lists\.example\.test>, relay=list, .*dsn=4\.\d+\.\d+, status=deferred/, 120_000);
      assert.equal(mm.posts('ops@lists.example.test'), 0);
      await mm.resume();
      await d.waitForLog(/to=<ops@lists\.example\.test>, relay=list, .*dsn=2\.0\.0, status=sent/, 300_000);
      assert.equal(mm.posts('ops@lists.example.test'), 1, diag());
    });
  } finally {
    lmtp.close();
    smtp.close();
    await d.stop();
    d.cleanup();
    await mm.stop();
    await sink.close();
  }
});

test('a Mailman 2 style manager (pipe:COMMAND) runs as a pipe for the list\'s owner: once per post, EX_TEMPFAIL defers', async () => {
  const d = await startDaemon({
    rules: 'ok@l.test  list:ok@l.test\ntemp@l.test  list:temp@l.test\n',
    lists: 'ok@l.test  open  manager="pipe:/bin/sh -c \'cat >/dev/null\'"  subscribers=a@x.test,b@x.test\n'
      + 'temp@l.test  open  manager="pipe:/bin/sh -c \'cat >/dev/null; exit 75\'"\n',
    config: { log: { level: 'info' } },
  });
  const lmtp = createTransport({ host: '127.0.0.1', port: d.lmtpPort, lmtp: true, name: 'client.test' } as never);
  try {
    const ok = await lmtp.sendMail({ envelope: { from: 's@x.test', to: ['ok@l.test'] }, raw: 'Subject: a\r\n\r\nhi\r\n' });
    assert.deepEqual(ok.accepted, ['ok@l.test']);
    await d.waitForLog(/to=<ok@l\.test>, relay=list, .*dsn=2\.0\.0, status=sent/);
    const temp = await lmtp.sendMail({ envelope: { from: 's@x.test', to: ['temp@l.test'] }, raw: 'Subject: b\r\n\r\nhi\r\n' });
    assert.deepEqual(temp.rejected, ['temp@l.test'], 'the LMTP reply for it is 4xx');
    await d.waitForLog(/to=<temp@l\.test>, relay=list, .*dsn=4\.\d+\.\d+, status=deferred \(.*EX_TEMPFAIL/);
  } finally {
    lmtp.close();
    await d.stop();
    d.cleanup();
  }
});
