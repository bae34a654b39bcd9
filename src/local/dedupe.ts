// Duplicate suppression: the same Message-ID to the same owner within
// dedupe.window is delivered once (procmail's formail -D, Sieve's
// "duplicate"). On for each local subscriber of an alias list — a list
// retried because one subscriber failed must not give the others a second
// copy — and wherever a rule asks for it. The records live in the state
// store (src/state); this is the key and the clock.
//
// Exports: createDuplicateFilter, DuplicateFilter, DuplicateRecords.
//
// Failure contract: never throws; a message without a Message-ID, or an
// owner that does not resolve, has no key and is never suppressed.
import type { ParsedMessage } from '../mail/message.js';
import type { Identity } from '../os/identity.js';

/** What the state store keeps: key → when it was first delivered. */
export interface DuplicateRecords {
  /** Whether `key` was recorded within the last `windowMs`. */
  dedupeSeen(key: string, windowMs: number, now: number): boolean;
  dedupeRecord(key: string, now: number): void;
}

export interface DuplicateFilter {
  /** The key for this owner and message; undefined when there is none to go by. */
  key(owner: Identity | string, message: ParsedMessage): string | undefined;
  seen(key: string): boolean;
  /** After a successful delivery. */
  record(key: string): void;
}

/** Message-IDs longer than this are not remembered (no real one is; a hostile one must not fill the store). */
const MAX_ID_CHARS = 998;

export function createDuplicateFilter(records: DuplicateRecords, windowMs: () => number, now: () => number = Date.now): DuplicateFilter {
  return {
    key(owner, message) {
      if (typeof owner === 'string') return undefined;
      const id = message.headers.get('message-id')?.[0]?.trim();
      if (id === undefined || id === '' || id.length > MAX_ID_CHARS) return undefined;
      return `${owner.uid}\0${id}`;
    },
    seen: (key) => records.dedupeSeen(key, windowMs(), now()),
    record: (key) => records.dedupeRecord(key, now()),
  };
}
