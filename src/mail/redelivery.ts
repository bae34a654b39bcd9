// Redelivery tokens: what lets a queued delivery recognise, on a later
// attempt, the copy an earlier attempt already wrote (the attempt whose
// outcome was lost when the master or the worker was killed between the write
// and the spool's record of it). A token names one copy of one recipient of
// one spooled message, and is the same on every attempt: it is derived from
// the queue id, the recipient address (lower case, as the spool records it)
// and the copy's destination with its rank among identical destinations of
// the same recipient (two rules filing into one folder are two copies). The
// Maildir leaf writes it into the file's unique name and, when told the job
// may repeat an earlier one, looks for it there before writing
// (src/deliver/maildir.ts). Destinations rather than plan indexes, so that a
// rule added before an existing one between two attempts does not move the
// tokens onto other folders.
//
// Exports: Redelivery (what the queue hands down per recipient), redeliveryKey,
// redeliveryTokens, isRedeliveryToken, REDELIVERY_TOKEN_LENGTH. Pure; never
// throws.
import { createHash } from 'node:crypto';

/** What the queue passes with one recipient's delivery. */
export interface Redelivery {
  /** Names the recipient's spool record: redeliveryKey(queue id, address). */
  readonly key: string;
  /** This attempt may repeat an earlier one whose outcome was not recorded: look for the tokens before writing. */
  readonly check: boolean;
}

/** 16 characters of lower-case base32 (RFC 4648 alphabet): 80 bits, filename-safe, never '.', ',', ':' or '/'. */
export const REDELIVERY_TOKEN_LENGTH = 16;
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const TOKEN_RE = /^[a-z2-7]{16}$/;

export function isRedeliveryToken(s: unknown): s is string {
  return typeof s === 'string' && TOKEN_RE.test(s);
}

/** The key of one spooled recipient; the queue id and the address say which, on every attempt and after a restart. */
export function redeliveryKey(queueId: string, address: string): string {
  return `${queueId}\0${address.toLowerCase()}`;
}

function base32(bytes: Uint8Array, chars: number): string {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = ((acc << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      bits -= 5;
      out += ALPHABET[(acc >> bits) & 31];
    }
    if (out.length >= chars) break;
  }
  return out;
}

/**
 * One token per destination (each a stable text of the destination, e.g.
 * formatDestination of its absolute form), in order. Equal destinations get
 * distinct tokens by their rank among their equals.
 */
export function redeliveryTokens(key: string, destinations: readonly string[]): string[] {
  const seen = new Map<string, number>();
  return destinations.map((d) => {
    const rank = seen.get(d) ?? 0;
    seen.set(d, rank + 1);
    const digest = createHash('sha256').update(`${key}\0${d}\0${rank}`).digest();
    return base32(digest, REDELIVERY_TOKEN_LENGTH);
  });
}
