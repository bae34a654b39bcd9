// The recipient layer (src/local): a recipient's copies planned with the
// owner's spam verdict — obtained inside the owner's delivery slots — and
// written by a real worker pool; the copies folded into one outcome with
// numeric timings; the delivery log line written from that one record.
// The verdict source is a stub here (the real spamd comes with the spam
// checker); the pool, the workers and the Maildir are real.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { SpamVerdict } from '../../src/classify/plan.js';
import type { Rule } from '../../src/classify/rules.js';
import { parseTableSource } from '../../src/db/index.js';
import { deliverToRecipient, foldCopies, formatSeconds, logDelivery, type DeliveryContext, type Recipient, type VerdictSource } from '../../src/local/index.js';
import { createLogger } from '../../src/log.js';
import { parseRecipient } from '../../src/mail/address.js';
import { newQueueId, type Envelope } from '../../src/mail/envelope.js';
import { parseMessage } from '../../src/mail/message.js';
import { ok, status } from '../../src/mail/status.js';
import { WorkerPool } from '../../src/workers/pool.js';
import { listDir, newFiles } from '../helpers/mailbox.js';

// ---- fold (pure) ----

const folds: { name: string; copies: ReturnType<typeof status>[]; want: string; text: RegExp }[] = [
  { name: 'one copy delivered says Saved', copies: [ok('delivered to maildir /m/new/1')], want: '2.0.0', text: /^Saved$/ },
  { name: 'three copies delivered say how many', copies: [ok('a'), ok('b'), ok('c')], want: '2.0.0', text: /^Saved 3 copies$/ },
  { name: 'a temporary failure wins over a permanent one, so the whole recipient is retried', copies: [ok('a'), status('5.2.2', 'full'), status('4.2.0', 'locked')], want: '4.2.0', text: /^locked$/ },
  { name: 'the first permanent failure when nothing is temporary', copies: [status('5.2.2', 'full'), status('5.3.0', 'pipe said no')], want: '5.2.2', text: /^full$/ },
];

for (const c of folds) {
  test(`foldCopies: ${c.name}`, () => {
    const f = foldCopies(c.copies);
    assert.equal(f.status.code, c.want);
    assert.match(f.status.text, c.text);
  });
}

test('foldCopies keeps every copy\'s own words for the log, and refuses to fold nothing', () => {
  assert.equal(foldCopies([ok('to /a'), ok('to /b')]).detail, 'to /a; to /b');
  assert.throws(() => foldCopies([]), /bug/);
});

// ---- the delivery log line (one writer, numeric timings formatted there) ----

test('the delivery log line is Postfix-style, with delays=a/b/c/d formatted from numbers, and the detail in parentheses', () => {
  const lines: string[] = [];
  const log = createLogger({ format: 'text', level: 'info', write: (l) => lines.push(l) });
  logDelivery(log, {
    queueId: 'ABC123', to: 'bob@example.test', arrival: new Date(1000), now: 1000 + 1234,
    outcome: { status: ok('Saved'), detail: 'delivered to maildir /m/bob/new/x', relay: 'maildir', timing: { beforeMs: 2, slotMs: 0, transferMs: 16, workMs: 12_345 } },
  });
  assert.match(lines[0] ?? '', /ABC123: to=<bob@example\.test>, relay=maildir, delay=1\.234, delays=0\.002\/0\/0\.016\/12\.3, dsn=2\.0\.0, status=sent \(delivered to maildir \/m\/bob\/new\/x\)\n$/);
  assert.equal(formatSeconds(0), '0');
  assert.equal(formatSeconds(9_999), '9.999');
});

test('a status the queue changed (5.4.7 past the lifetime) is what the line records', () => {
  const lines: string[] = [];
  const log = createLogger({ format: 'text', level: 'info', write: (l) => lines.push(l) });
  logDelivery(log, {
    queueId: 'Q', to: 'bob@example.test', arrival: new Date(0), now: 5,
    outcome: { status: status('4.2.0', 'locked'), detail: 'mailbox /m is locked', relay: 'mbox' },
    final: status('5.4.7', 'delivery time expired: mailbox /m is locked'),
  });
  assert.match(lines[0] ?? '', /dsn=5\.4\.7, status=bounced \(delivery time expired: mailbox \/m is locked\)/);
});

// ---- deliverToRecipient with a real pool ----

const RULES = (mail: string): string => `
bob@example.test  maildir:${mail}/bob/Maildir/  folder=Junk  spam  stop
bob@example.test  maildir:${mail}/bob/Maildir/  folder=Maybe  score>=3  stop
bob@example.test  maildir:${mail}/bob/Maildir/
`;

interface Setup {
  readonly dir: string;
  readonly mail: string;
  readonly pool: WorkerPool;
  readonly rules: readonly Rule[];
  ctx(verdicts?: VerdictSource): DeliveryContext;
}

function setup(): Setup {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-local-'));
  chmodSync(dir, 0o755);
  const mail = join(dir, 'mail');
  mkdirSync(mail, { mode: 0o755 }); // the daemon makes the mail root at start; the master makes bob/ under it
  const log = createLogger({ format: 'text', level: 'error' });
  const pool = new WorkerPool({
    idleMs: 60_000, userWorkers: () => 1, userConcurrency: () => 2, maxDeliveries: 8, log,
    leafOptions: () => ({ hostname: 'mx.test', fsync: true, mboxLockAttempts: 1, mboxLockDelayMs: 10, mboxStaleLockMs: 1000 }),
  });
  const parsed = parseTableSource('rules', RULES(mail), 'rules');
  assert.deepEqual(parsed.errors, []);
  // As root the copies are written as nobody (like the daemon's default user); otherwise as ourselves.
  const user = process.getuid?.() === 0 ? 'nobody' : userInfo().username;
  return {
    dir, mail, pool, rules: parsed.entries.get('bob@example.test') ?? [],
    ctx: (verdicts) => ({
      pool, log, hostname: 'mx.test', baseDir: dir, mailRoot: mail, allowRoot: () => false,
      defaults: { destination: { kind: 'maildir', path: `${mail}/\${user}/Maildir/` }, user },
      ...(verdicts ? { verdicts } : {}),
    }),
  };
}

const MESSAGE = parseMessage(Buffer.from('Subject: cheap pills\r\n\r\nbuy now\r\n'));
const envelope = (): Envelope => ({ queueId: newQueueId(), sender: 's@remote.test', helo: 'client.test', clientAddress: '127.0.0.1', protocol: 'LMTP', arrival: new Date() });

function recipient(s: Setup): Recipient {
  return { rcpt: parseRecipient('bob@example.test', '+'), resolved: { rules: s.rules } };
}

const cases: { name: string; verdict?: SpamVerdict; folder: string }[] = [
  { name: 'a spam verdict puts the copy in Junk', verdict: { isSpam: true, score: 12.5 }, folder: '.Junk' },
  { name: 'a middling score puts it in Maybe', verdict: { isSpam: false, score: 3.5 }, folder: '.Maybe' },
  { name: 'a clean verdict puts it in the inbox', verdict: { isSpam: false, score: -2 }, folder: '' },
  { name: 'no verdict source: the inbox', folder: '' },
];

for (const c of cases) {
  test(`deliverToRecipient: ${c.name}, written by a real worker`, { timeout: 60_000 }, async () => {
    const s = setup();
    try {
      const seen: { owner: string; activeInSlot: number }[] = [];
      const source: VerdictSource | undefined = c.verdict === undefined ? undefined : {
        check: async (owner) => {
          // Inside the owner's slot: the scheduler counts this check as one of the owner's active deliveries.
          seen.push({ owner: owner.user, activeInSlot: s.pool.load().find((l) => l.key === `${owner.uid}:${owner.gid}`)?.active ?? 0 });
          return c.verdict === undefined ? {} : { verdict: c.verdict };
        },
      };
      const o = await deliverToRecipient(s.ctx(source), envelope(), MESSAGE, recipient(s));
      assert.equal(o.status.code, '2.0.0', o.detail);
      assert.equal(o.relay, 'maildir');
      assert.ok(o.timing !== undefined && o.timing.workMs >= 0 && o.timing.beforeMs >= 0, 'numeric timings');
      const maildir = join(s.mail, 'bob', 'Maildir');
      assert.equal(newFiles(join(maildir, c.folder)).length, 1, `one message in ${c.folder || 'INBOX'}/new`);
      for (const other of ['', '.Junk', '.Maybe'].filter((f) => f !== c.folder)) assert.deepEqual(listDir(join(maildir, other, 'new')), []);
      if (c.verdict !== undefined) assert.deepEqual(seen.map((x) => x.activeInSlot), [1], 'the check ran once, in one of the owner\'s slots');
    } finally {
      await s.pool.stop();
      rmSync(s.dir, { recursive: true, force: true });
    }
  });
}

test('a verdict source that fails closed refuses the recipient with its status, the text for the log only', { timeout: 60_000 }, async () => {
  const s = setup();
  try {
    const o = await deliverToRecipient(s.ctx({ check: () => Promise.resolve(status('4.7.1', 'spamd at /run/x.sock is down')) }), envelope(), MESSAGE, recipient(s));
    assert.equal(o.status.code, '4.7.1');
    assert.equal(o.detail, 'spamd at /run/x.sock is down');
    assert.deepEqual(listDir(join(s.mail, 'bob')), [], 'nothing written');
  } finally {
    await s.pool.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
});

test('a verdict source that throws is logged and the message is delivered without a verdict (fail open)', { timeout: 60_000 }, async () => {
  const s = setup();
  try {
    const o = await deliverToRecipient(s.ctx({ check: () => Promise.reject(new Error('bug in checker')) }), envelope(), MESSAGE, recipient(s));
    assert.equal(o.status.code, '2.0.0', o.detail);
    assert.equal(newFiles(join(s.mail, 'bob', 'Maildir')).length, 1);
  } finally {
    await s.pool.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
});

test('a Delivered-To naming the recipient is a loop: 5.4.6 and nothing written', { timeout: 60_000 }, async () => {
  const s = setup();
  try {
    const looped = parseMessage(Buffer.from('Delivered-To: bob@example.test\r\nSubject: x\r\n\r\nbody\r\n'));
    const o = await deliverToRecipient(s.ctx(), envelope(), looped, recipient(s));
    assert.equal(o.status.code, '5.4.6');
    assert.deepEqual(listDir(join(s.mail, 'bob')), []);
  } finally {
    await s.pool.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
});
