// mailmond through a real Postfix, as docs/mailmond.md sets it up: the probe
// address is one of Postfix's virtual mailbox addresses, Postfix hands it to
// mailprocd over LMTP, and `mailmond check` sends to Postfix's SMTP port. The
// MTA stage comes from Postfix's Received line; the stages still sum to at
// most the total, and Postfix's maillog shows the probe delivered (250) with
// nothing kept by mailprocd.
//
// Needs root (Postfix's master starts as root) and Debian "postfix".
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireProgram, requireRoot } from '../helpers/components.js';
import { startDaemon } from '../helpers/daemon.js';
import { startPostfix, type TestPostfix } from '../helpers/postfix.js';

const MAILMOND = join(process.cwd(), 'dist/src/cli/mailmond.js');
const KEY = 'mailmond-postfix-test-key-0123456789';

void test('mailmond check through Postfix: the probe passes Postfix\'s queue and LMTP, arrives with an MTA stage, and nothing is kept', async (t) => {
  if (!requireRoot(t, 'Postfix starts its master as root') || requireProgram(t, 'postfix', 'postfix') === undefined) return;
  const d = await startDaemon({
    rules: 'probe@example.test  probe\n',
    config: { probe: { key: KEY }, lmtp: { socket: { mode: '0660', group: 'postfix' } } },
  });
  let pf: TestPostfix | undefined;
  try {
    pf = await startPostfix({ lmtpSocket: d.socket, recipients: ['probe@example.test'] });
    const port = pf.smtpPort;
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [MAILMOND, 'check', '--config', d.configFile, '--to', 'probe@example.test', '--smtp', `127.0.0.1:${port}`, '--threshold', '45s'],
        { timeout: 90_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
          resolve({ code: err === null ? 0 : Number((err as unknown as { code: unknown }).code), stdout: String(stdout), stderr: String(stderr) });
        });
    });
    assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}${r.stderr}\n--- maillog ---\n${pf.logs()}\n--- mailprocd ---\n${d.logs.slice(-30).join('\n')}`);
    t.diagnostic(r.stdout);
    const row = (stage: string): number => Number(new RegExp(`^${stage}\\s+([\\d.]+)\\s`, 'm').exec(r.stdout)?.[1] ?? NaN);
    const stages = ['mta', 'before', 'slot', 'transfer', 'work'].map(row);
    for (const s of stages) assert.ok(s >= 0, r.stdout);
    assert.ok(stages.reduce((a, b) => a + b, 0) <= row('total') + 0.003, r.stdout);
    const queueId = /mailprocd queue id ([0-9A-F]+)/.exec(r.stdout)?.[1];
    assert.ok(queueId !== undefined, r.stdout);
    // Postfix's lmtp client got our 250 for the probe, with our queue id.
    await pf.waitForLog(new RegExp(`postfix/lmtp\\[\\d+\\]: [0-9A-Za-z]+: to=<probe@example\\.test>, .*status=sent \\(250 2\\.0\\.0 .*${queueId}`), 30_000);
    const mail = d.mail;
    assert.deepEqual(existsSync(mail) ? readdirSync(mail) : [], [], 'nothing kept under the mail root');
  } finally {
    await pf?.stop();
    await d.stop();
    d.cleanup();
  }
});
