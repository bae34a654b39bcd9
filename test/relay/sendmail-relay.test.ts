// relay.smtp = sendmail: the program gets `-i -f SENDER -- RCPT…` and the
// message on stdin; its exit status is the recipients' status (0 → 2.0.0,
// 75 → 4.x.x, 67 → 5.x.x), a missing program is 4.3.0, one that hangs is
// killed at the timeout (4.4.7). The "sendmail" here is a shell script that
// records what it was given, as Postfix's would queue it.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SendmailRelay } from '../../src/relay/index.js';

const dir = mkdtempSync(join(tmpdir(), 'mailproc-sendmail-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function program(name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

test('argv and stdin as Postfix\'s sendmail takes them; exit 0 is 2.0.0 for every recipient', async () => {
  const out = join(dir, 'got');
  const p = program('record', `printf '%s\\n' "$@" > ${out}.argv; cat > ${out}.msg; exit 0`);
  const raw = Buffer.from('Subject: hi\n\nbody\n.\nafter a dot line\n');
  const s = await new SendmailRelay(p, 10_000).send({ from: 'sender@remote.test', to: ['-oi@x.test', 'b@x.test'], raw });
  assert.deepEqual(s.map((x) => x.code), ['2.0.0', '2.0.0']);
  assert.deepEqual(readFileSync(`${out}.argv`, 'utf8').split('\n').slice(0, -1), ['-i', '-f', 'sender@remote.test', '--', '-oi@x.test', 'b@x.test']);
  assert.deepEqual(readFileSync(`${out}.msg`), raw, 'the bytes as given (-i: a lone dot is not the end)');
});

test('exit statuses map like a pipe\'s: 75 temporary, 67 permanent; stderr is in the text', async () => {
  const temp = await new SendmailRelay(program('temp', 'cat >/dev/null; echo "queue file write error" >&2; exit 75'), 10_000).send({ from: '', to: ['a@x.test'], raw: Buffer.from('x\n') });
  assert.match(temp[0]?.code ?? '', /^4\./);
  assert.match(temp[0]?.text ?? '', /queue file write error/);
  const perm = await new SendmailRelay(program('perm', 'cat >/dev/null; exit 67'), 10_000).send({ from: '', to: ['a@x.test'], raw: Buffer.from('x\n') });
  assert.match(perm[0]?.code ?? '', /^5\./);
});

test('a missing program is 4.3.0; one that hangs is killed at the timeout with 4.4.7', async () => {
  const missing = await new SendmailRelay(join(dir, 'nonexistent'), 10_000).send({ from: '', to: ['a@x.test'], raw: Buffer.from('x\n') });
  assert.equal(missing[0]?.code, '4.3.0');
  const hung = await new SendmailRelay(program('hang', 'exec sleep 600'), 500).send({ from: '', to: ['a@x.test'], raw: Buffer.from('x\n') });
  assert.equal(hung[0]?.code, '4.4.7');
});
