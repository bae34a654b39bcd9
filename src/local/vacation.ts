// Vacation replies (a `vacation` rule: RFC 3834, Sieve vacation RFC 5230),
// sent once the recipient's copies are delivered: whether to answer at all
// (classify/vacation.ts: explicit addressing only, never to lists, bulk,
// auto-submitted mail, no-reply senders or the null sender, nor to spam),
// then at most once per sender per `days` (the state store's claim: two
// deliveries racing send one reply), then the reply through the outbound
// relay with a real envelope sender (the recipient's address, or from=).
//
// text_file= is read by the master, which runs as root, so it is read only
// when nothing can be gained by it: opened without following a final
// symlink and without blocking (a FIFO cannot hang us), a regular file of
// at most 64 KiB, owned by the address's owner (theirs to show anyway) or
// by root and readable by everyone (nothing secret). Anything else is
// refused with a log line and no reply is sent.
//
// Exports: answerVacations, readVacationText, VacationContext.
//
// Failure contract: never throws and never changes the recipient's status:
// a reply that cannot be sent is logged (warn) and not retried — the claim
// is made before sending, so a relay failure costs that sender one reply.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { buildVacationReply, vacationAddresses, vacationKey, vacationRefusal } from '../classify/vacation.js';
import type { Destination } from '../classify/rules.js';
import type { Logger } from '../log.js';
import type { RecipientAddress } from '../mail/address.js';
import type { Envelope } from '../mail/envelope.js';
import type { ParsedMessage } from '../mail/message.js';
import { isSuccess } from '../mail/status.js';
import type { Identity } from '../os/identity.js';
import type { Relay } from '../relay/index.js';

type Vacation = Extract<Destination, { kind: 'vacation' }>;

const MAX_TEXT_BYTES = 64 * 1024;
const DAY_MS = 86_400_000;

export interface VacationContext {
  readonly hostname: string;
  readonly outbound: () => Relay;
  /** The state store's claimVacation: true = reply now (and it is remembered for periodMs). */
  readonly claim: (key: string, periodMs: number, now: number) => boolean;
  readonly log: Logger;
}

/** A text_file's contents, or why it is not read (see the header). */
export async function readVacationText(path: string, owner: Identity | string): Promise<string | { refused: string }> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { refused: code === 'ELOOP' ? `${path} is a symbolic link` : `${path}: ${code ?? String(err)}` };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { refused: `${path} is not a regular file` };
    if (st.size > MAX_TEXT_BYTES) return { refused: `${path} is larger than ${MAX_TEXT_BYTES} bytes` };
    const ownerUid = typeof owner === 'string' ? undefined : owner.uid;
    const theirs = ownerUid !== undefined && st.uid === ownerUid;
    const publicRoot = st.uid === 0 && (st.mode & 0o004) !== 0;
    if (!theirs && !publicRoot) return { refused: `${path} belongs to uid ${st.uid}: a vacation text must be the address owner's, or root's and readable by all` };
    return (await fh.readFile()).toString('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * Answers the recipient's vacation steps (normally one) after a delivery
 * that ended in `delivered`; nothing for a failed one (it is retried, and
 * the reply comes with the delivery that succeeds).
 */
export async function answerVacations(
  ctx: VacationContext, env: Envelope, message: ParsedMessage, rcpt: RecipientAddress,
  steps: readonly Vacation[], owner: Identity | string, isSpam: boolean | undefined, delivered: boolean,
): Promise<void> {
  if (!delivered) return;
  for (const d of steps) {
    const to = env.sender;
    const where = { to: rcpt.address };
    const refusal = vacationRefusal({
      sender: to, headers: message.headers, ownerAddresses: vacationAddresses(rcpt, d), now: new Date(),
      ...(d.until !== undefined ? { until: d.until } : {}), ...(isSpam !== undefined ? { isSpam } : {}),
    });
    if (refusal !== undefined) {
      ctx.log.info(`vacation: no reply to <${to}>: ${refusal}`, where, env.queueId);
      continue;
    }
    let text = d.text ?? '';
    if (d.textFile !== undefined) {
      const read = await readVacationText(d.textFile, owner);
      if (typeof read !== 'string') {
        ctx.log.warn(`vacation: no reply to <${to}>: text_file refused: ${read.refused}`, where, env.queueId);
        continue;
      }
      text = read;
    }
    const from = d.from ?? (rcpt.domain !== '' ? `${rcpt.user}@${rcpt.domain}` : rcpt.address);
    if (!ctx.claim(vacationKey(from, to), d.days * DAY_MS, Date.now())) {
      ctx.log.info(`vacation: no reply to <${to}>: already answered within ${d.days} day(s)`, where, env.queueId);
      continue;
    }
    const raw = buildVacationReply({
      to, from, headers: message.headers, text, hostname: ctx.hostname, date: new Date(),
      messageId: `${env.queueId}.vacation.${Date.now().toString(36)}`,
      ...(d.subject !== undefined ? { subject: d.subject } : {}),
    });
    const relay = ctx.outbound();
    const [s] = await relay.send({ from, to: [to], raw });
    if (s !== undefined && isSuccess(s)) ctx.log.info(`vacation: reply sent to <${to}> from <${from}>`, { ...where, relay: relay.where }, env.queueId);
    else ctx.log.warn(`vacation: reply to <${to}> not sent: ${s?.code ?? '?'} ${s?.text ?? 'no answer'}`, { ...where, relay: relay.where }, env.queueId);
  }
}
