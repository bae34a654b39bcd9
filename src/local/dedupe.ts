// Duplicate suppression: the same Message-ID to the same owner within
// dedupe.window is delivered once (procmail's formail -D, Sieve's
// "duplicate"). On for each subscriber of an alias list, local or remote —
// a list retried because one subscriber failed must not give the others a
// second copy —, for a list address itself (a post that reaches the list twice,
// through two of its addresses, is handed over once), and for a recipient
// whose applied rule says `dedupe`. The key is
// classify/duplicate.ts's, the records are the state store's (src/state);
// this is the clock and the window.
//
// Exports: createDuplicateFilter, DuplicateFilter, DuplicateRecords.
//
// Failure contract: never throws for a message; one without a usable
// Message-ID, or an owner that does not resolve, has no key and is never
// suppressed. LMDB trouble propagates to the caller (the recipient defers).
import { dedupeKey } from '../classify/duplicate.js';
import type { ParsedMessage } from '../mail/message.js';
import type { Identity } from '../os/identity.js';

/** What the state store keeps: key → when it was first delivered, and in which queue id. */
export interface DuplicateRecords {
  dedupeSeen(key: string, windowMs: number, now: number): { readonly firstMs: number; readonly queueId: string } | undefined;
  dedupeRecord(key: string, now: number, queueId: string, windowMs: number): Promise<void>;
}

export interface DuplicateFilter {
  /** The key for this owner and message; undefined when there is none to go by. */
  key(owner: Identity | string, message: ParsedMessage): string | undefined;
  /** The key for a list address and message: a list is its own owner (two lists of one owner each get a cross-post). */
  listKey(list: string, message: ParsedMessage): string | undefined;
  /** The key for a remote subscriber's copy of an alias list's post: a retry of the list must not send it again. */
  subscriberKey(list: string, subscriber: string, message: ParsedMessage): string | undefined;
  /** The queue id of the first delivery within the window, or undefined. */
  seen(key: string): string | undefined;
  /** After a successful delivery. */
  record(key: string, queueId: string): Promise<void>;
}

export function createDuplicateFilter(records: DuplicateRecords, windowMs: () => number, now: () => number = Date.now): DuplicateFilter {
  return {
    key: (owner, message) => (typeof owner === 'string' ? undefined : dedupeKey(String(owner.uid), message.headers.get('message-id')?.[0])),
    listKey: (list, message) => dedupeKey(`list:${list}`, message.headers.get('message-id')?.[0]),
    subscriberKey: (list, subscriber, message) => dedupeKey(`list:${list}>${subscriber.toLowerCase()}`, message.headers.get('message-id')?.[0]),
    seen: (key) => records.dedupeSeen(key, windowMs(), now())?.queueId,
    record: (key, queueId) => records.dedupeRecord(key, now(), queueId, windowMs()),
  };
}
