// lists: only subscribers may post to a closed list. At protocol_state=RCPT,
// a recipient that is an entry of the lists table (same lookup order as
// delivery: user+ext@domain, user@domain, user+ext, user, @domain) is checked:
//   closed     the sender must be a subscriber, else "REJECT 5.7.1 <text>";
//   open       anyone may post (DUNNO);
//   moderated  anyone may post (DUNNO): the list manager holds a
//              non-subscriber's post for the moderators, so refusing it here
//              would take that decision away from them.
// Subscribers are the table entry's `subscribers=` plus the roster synced from
// the list manager (list-sync.ts), compared without regard to case. The null
// sender is nobody's subscriber: bounces go to the list's -bounces address,
// not the posting address. Every other state, and a recipient that is no
// list, gets no opinion.
//
// Addresses of any length are answered: a lookup key too long for LMDB
// (keys.ts) cannot be in the table or the roster, so it is not looked up
// (a sender of 4076+ characters used to make the roster lookup throw, and
// the chain let the non-subscriber through).
//
// Exports: createListsPlugin. Never throws for a lookup miss or a long
// address; an LMDB failure propagates to the chain, which logs it and
// answers this plugin's onError: fail closed (FAIL_CLOSED, DEFER_IF_PERMIT
// 4.3.0), because letting a non-subscriber through is the one thing a closed
// list must not do, and a temporary refusal costs a subscriber only a retry.
import type { TableReader } from '../../db/index.js';
import { lookupKeys, parseRecipient } from '../../mail/address.js';
import { boundedKey } from '../../state/index.js';
import { FAIL_CLOSED, type PolicyAction, type PolicyPlugin, type PolicyRequest } from '../types.js';

export interface ListsPluginOptions {
  readonly tables: TableReader;
  /** Synced rosters; list = the entry's key in the lists table. */
  readonly isSubscriber: (list: string, address: string) => boolean;
  readonly recipientDelimiter: string;
  /** After "REJECT 5.7.1 ". */
  readonly rejectText: string;
  readonly cacheTtlMs: number;
  /**
   * The tables' compile generation. With it, what the lists table says about
   * a recipient is kept (subscribers as a Set) until the next compile instead
   * of decoded from LMDB on every request: a list of 500 subscribers is ~20 KB
   * of garbage per decode, and the collections that follow show in p99.
   */
  readonly generation?: () => number;
}

interface ClosedList {
  readonly key: string;
  readonly subscribers: ReadonlySet<string>;
}

const MEMO_MAX = 10_000;
/** Longer recipients are remembered by digest: 10 000 of them must not cost 10 000 × 30 kB. */
const MEMO_KEY_CHARS = 512;

export function createListsPlugin(o: ListsPluginOptions): PolicyPlugin {
  const reject: PolicyAction = `REJECT 5.7.1 ${o.rejectText}`;
  let memoGeneration = -1;
  const memo = new Map<string, ClosedList | null>(); // recipient → closed list, or null: not a closed list
  const closedListOf = (recipient: string): ClosedList | null => {
    const gen = o.generation?.();
    const memoKey = boundedKey(recipient, MEMO_KEY_CHARS);
    if (gen !== undefined) {
      if (gen !== memoGeneration) {
        memo.clear();
        memoGeneration = gen;
      }
      const known = memo.get(memoKey);
      if (known !== undefined) return known;
    }
    const hit = o.tables.lookup('lists', lookupKeys(parseRecipient(recipient, o.recipientDelimiter)));
    const found = hit === undefined || hit.value.mode !== 'closed' ? null : { key: hit.key, subscribers: new Set(hit.value.subscribers) };
    if (gen !== undefined) {
      if (memo.size >= MEMO_MAX) memo.clear();
      memo.set(memoKey, found);
    }
    return found;
  };
  const decide = (req: PolicyRequest): PolicyAction | undefined => {
    if (req.get('protocol_state') !== 'RCPT') return undefined;
    const recipient = req.get('recipient');
    if (recipient === '') return undefined;
    const list = closedListOf(recipient.toLowerCase());
    if (list === null) return undefined;
    const sender = req.get('sender').toLowerCase();
    if (sender !== '' && (list.subscribers.has(sender) || o.isSubscriber(list.key, sender))) return undefined;
    return reject;
  };
  return {
    name: 'lists',
    cacheTtlMs: o.cacheTtlMs,
    onError: FAIL_CLOSED,
    // Everything the answer depends on; other states are answered without a lookup, so not worth caching.
    cacheKey: (req) => (req.get('protocol_state') === 'RCPT' ? `${req.get('recipient')}\n${req.get('sender')}` : undefined),
    check: decide,
  };
}
