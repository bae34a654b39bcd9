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
// Exports: createListsPlugin. Never throws for a lookup miss; an LMDB failure
// propagates to the chain, which logs it and fails open.
import type { TableReader } from '../../db/index.js';
import { lookupKeys, parseRecipient } from '../../mail/address.js';
import type { PolicyAction, PolicyPlugin, PolicyRequest } from '../types.js';

export interface ListsPluginOptions {
  readonly tables: TableReader;
  /** Synced rosters; list = the entry's key in the lists table. */
  readonly isSubscriber: (list: string, address: string) => boolean;
  readonly recipientDelimiter: string;
  /** After "REJECT 5.7.1 ". */
  readonly rejectText: string;
  readonly cacheTtlMs: number;
}

export function createListsPlugin(o: ListsPluginOptions): PolicyPlugin {
  const reject: PolicyAction = `REJECT 5.7.1 ${o.rejectText}`;
  const decide = (req: PolicyRequest): PolicyAction | undefined => {
    if (req.get('protocol_state') !== 'RCPT') return undefined;
    const recipient = req.get('recipient');
    if (recipient === '') return undefined;
    const hit = o.tables.lookup('lists', lookupKeys(parseRecipient(recipient, o.recipientDelimiter)));
    if (hit === undefined || hit.value.mode !== 'closed') return undefined;
    const sender = req.get('sender').toLowerCase();
    if (sender !== '' && (hit.value.subscribers.includes(sender) || o.isSubscriber(hit.key, sender))) return undefined;
    return reject;
  };
  return {
    name: 'lists',
    cacheTtlMs: o.cacheTtlMs,
    // Everything the answer depends on; other states are answered without a lookup, so not worth caching.
    cacheKey: (req) => (req.get('protocol_state') === 'RCPT' ? `${req.get('recipient')}\n${req.get('sender')}` : undefined),
    check: (req) => Promise.resolve(decide(req)),
  };
}
