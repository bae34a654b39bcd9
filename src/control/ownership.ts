// Who owns an address, for what its owner may change (policies, rules) over
// their own control socket. Decided from the compiled tables alone:
//   - the uid table names a user for the address by an exact key
//     (user+ext@domain or user@domain, most specific first): that user;
//   - no uid entry at all under any key, the address is no list, and the
//     rules table has it by an exact key: the default delivery user (delivery.user; nobody when
//     the daemon runs as root), whose mailbox it is — so the embedded
//     default's example addresses are nobody's;
//   - anything else (a catch-all @domain, a domain-less key user or
//     user+ext, a list) makes no one an owner: one user could otherwise claim
//     every address it covers.
// Not root (a developer's `npm start`), every address the daemon accepts is
// its own user's. Root is never an owner (nothing runs as root for a user).
// `owner` is what records keep to notice that the address changed hands: the
// uid table's value, or "" for the default user's.
//
// Exports: ownerOfAddress, deliveryOwnerOf, Ownership, OwnershipOptions.
// Never throws but for LMDB trouble.
import { ownerOf } from '../classify/plan.js';
import { isKnown, resolveRecipient, type TableReader } from '../db/index.js';
import { lookupKeys, parseRecipient } from '../mail/address.js';
import { resolveIdentity, type Identity } from '../os/identity.js';

export interface OwnershipOptions {
  readonly tables: TableReader;
  readonly recipientDelimiter: string;
  /** delivery.user (and its group): who mail is delivered as when the uid table names no one. */
  readonly defaultUser: { readonly user: string; readonly group?: string };
  /** Is the daemon root? Not root, every known address is `self`'s. */
  readonly asRoot: boolean;
  readonly self: Identity;
}

export interface Ownership {
  /** The uid table's exact value, or "" (the default user's, or not root). */
  readonly owner: string;
  /** The user the address's mail is delivered as. */
  readonly identity: Identity;
}

const exact = (key: string): boolean => key.indexOf('@') > 0;

/** The address's owner by name, or undefined when no one owns it (see the header). */
export async function ownerOfAddress(o: OwnershipOptions, address: string): Promise<Ownership | undefined> {
  const rcpt = parseRecipient(address.toLowerCase(), o.recipientDelimiter);
  const r = resolveRecipient(o.tables, rcpt);
  if (!o.asRoot) return isKnown(r) ? { owner: '', identity: o.self } : undefined;
  const named = o.tables.lookup('uid', lookupKeys(rcpt).filter(exact));
  if (named !== undefined) {
    const id = await resolveIdentity(named.value);
    return typeof id !== 'string' && id.uid !== 0 ? { owner: named.value, identity: id } : undefined;
  }
  if (r.uid !== undefined || r.list !== undefined || r.rules === undefined || !exact(r.rules.key)) return undefined;
  const id = await resolveIdentity(o.defaultUser.user, o.defaultUser.group);
  return typeof id !== 'string' && id.uid !== 0 ? { owner: '', identity: id } : undefined;
}

/**
 * For root acting on any address the daemon accepts: the user its mail is
 * delivered as (the uid table's, catch-all included, else the default) and
 * the record's `owner` value; a string says why there is none.
 */
export async function deliveryOwnerOf(o: OwnershipOptions, address: string): Promise<Ownership | string> {
  const rcpt = parseRecipient(address.toLowerCase(), o.recipientDelimiter);
  const r = resolveRecipient(o.tables, rcpt);
  if (!isKnown(r)) return `${address}: no such address here (the tables do not know it)`;
  const named = o.tables.lookup('uid', lookupKeys(rcpt).filter(exact));
  const who = ownerOf({
    ...(r.uid !== undefined ? { uid: r.uid.value } : {}),
    ...(r.gid !== undefined ? { gid: r.gid.value } : {}),
    defaults: { destination: { kind: 'discard' }, user: o.defaultUser.user, ...(o.defaultUser.group !== undefined ? { group: o.defaultUser.group } : {}) },
  });
  const id = await resolveIdentity(who.user, who.group);
  if (typeof id === 'string') return `${address}: ${id}`;
  if (id.uid === 0) return `${address} is delivered as root: no one's own rules apply to it`;
  return { owner: named?.value ?? '', identity: id };
}
