// Recipient resolution: who owns an address, decided from the tables in the
// master, once per recipient — at RCPT for LMTP/SMTP intake (so a nobody's
// address is refused before DATA), and again when the queue picks a spooled
// message up (the tables may have changed meanwhile).
//
// Exports: ResolvedRecipient, Recipient, lookupRecipient(tables, rcpt),
// acceptRecipient(tables, address, opts) → Recipient | Status.
//
// Failure contract: never throws. Nobody owns the address (no rules, uid,
// gid or lists entry under any lookup key; a catch-all "@domain" counts as
// an owner here, as in Postfix) → 550 5.1.1; a table that cannot be read →
// 451 4.3.0 (logged); a declared SIZE over the address's maxsize → 552 5.2.3.
import { addressSizeLimit } from '../classify/plan.js';
import type { ListEntry, Rule, SpamSetting } from '../classify/rules.js';
import { isKnown, resolveRecipient, type Tables } from '../db/index.js';
import type { Logger } from '../log.js';
import { parseRecipient, type RecipientAddress } from '../mail/address.js';
import { status, type Status } from '../mail/status.js';

/** What the tables say about one address (the first hit per table, in lookup order). */
export interface ResolvedRecipient {
  readonly rules: readonly Rule[];
  /** The uid table's value (a user name or number): the address's owner. Absent: the default delivery user. */
  readonly uid?: string;
  readonly gid?: string;
  readonly list?: ListEntry;
  /** The spam table's entry: checking on/off, threshold, failure mode for this address. */
  readonly spam?: SpamSetting;
}

/** An accepted recipient: its address parsed and what the tables say about it. */
export interface Recipient {
  readonly rcpt: RecipientAddress;
  readonly resolved: ResolvedRecipient;
}

/** The tables' answer for the address, or undefined when nobody owns it. Throws only for LMDB trouble. */
export function lookupRecipient(tables: Tables, rcpt: RecipientAddress): ResolvedRecipient | undefined {
  const r = resolveRecipient(tables, rcpt);
  if (!isKnown(r)) return undefined;
  return {
    rules: r.rules?.value ?? [],
    ...(r.uid ? { uid: r.uid.value } : {}),
    ...(r.gid ? { gid: r.gid.value } : {}),
    ...(r.list ? { list: r.list.value } : {}),
    ...(r.spam ? { spam: r.spam.value } : {}),
  };
}

export interface AcceptOptions {
  readonly recipientDelimiter: string;
  /** MAIL FROM's SIZE=, when the client declared one. */
  readonly declaredSize?: number;
  readonly log: Logger;
  /** Addresses the tables do not hold but we answer for (SRS bounces: srs.ts): the recipient, its refusal, or undefined for the tables. */
  readonly special?: (rcpt: RecipientAddress) => ResolvedRecipient | Status | undefined;
}

export const unknownUser = (address: string): Status => status('5.1.1', `<${address}>: Recipient address rejected: User unknown`);

/** The RCPT decision: the recipient, or the status to refuse it with. */
export function acceptRecipient(tables: Tables, address: string, o: AcceptOptions): Recipient | Status {
  const rcpt = parseRecipient(address, o.recipientDelimiter);
  const special = o.special?.(rcpt);
  if (special !== undefined) return 'code' in special ? special : { rcpt, resolved: special };
  let resolved: ResolvedRecipient | undefined;
  try {
    resolved = lookupRecipient(tables, rcpt);
  } catch (err) {
    o.log.error(`table lookup for ${rcpt.address} failed: ${(err as Error).message}`);
    return status('4.3.0', `<${rcpt.address}>: Temporary lookup failure`);
  }
  if (resolved === undefined) return unknownUser(rcpt.address);
  const limit = addressSizeLimit(resolved.rules);
  if (limit !== undefined && o.declaredSize !== undefined && Number.isFinite(o.declaredSize) && o.declaredSize > limit) {
    return status('5.2.3', `<${rcpt.address}>: Message too large for this recipient (limit ${limit} bytes)`, 552);
  }
  return { rcpt, resolved };
}
