// Recipient resolution: what the tables say about one RCPT address,
// each looked up in ../shared/DESIGN.md's order (user+ext@domain, user@domain,
// user+ext, user, @domain; first hit wins). Pure over a TableReader, so the
// tables can be faked in tests. Never throws beyond what the reader throws.
//
// Exports: resolveRecipient, isKnown, Resolution.

import { lookupKeys, type RecipientAddress } from '../mail/address.js';
import type { TableHit, TableReader } from './tables.js';

export interface Resolution {
  readonly rules?: TableHit<'rules'>;
  readonly uid?: TableHit<'uid'>;
  readonly gid?: TableHit<'gid'>;
  readonly list?: TableHit<'lists'>;
  readonly spam?: TableHit<'spam'>;
}

/**
 * The lookups run synchronously one after another, so with openTables'
 * reader they all read the same snapshot, even while a compile commits.
 */
export function resolveRecipient(tables: TableReader, address: RecipientAddress): Resolution {
  const keys = lookupKeys(address);
  const rules = tables.lookup('rules', keys);
  const uid = tables.lookup('uid', keys);
  const gid = tables.lookup('gid', keys);
  const list = tables.lookup('lists', keys);
  const spam = tables.lookup('spam', keys);
  return {
    ...(rules ? { rules } : {}),
    ...(uid ? { uid } : {}),
    ...(gid ? { gid } : {}),
    ...(list ? { list } : {}),
    ...(spam ? { spam } : {}),
  };
}

/**
 * A recipient we accept at RCPT: it has rules, a uid or is a list. A gid
 * or a spam entry alone does not make an address deliverable (there is no user to deliver as).
 */
export function isKnown(r: Resolution): boolean {
  return r.rules !== undefined || r.uid !== undefined || r.list !== undefined;
}
