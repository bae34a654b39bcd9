// Duplicate suppression keys (RFC 7352's idea, Dovecot's duplicate database):
// one message reaching one owner twice — through two of their addresses, a
// list and a direct copy, a redirect — is recognised by its Message-ID. The
// records themselves live in src/state/store.ts (dedupeSeen, dedupeRecord).
//
// Exports: dedupeKey. Pure; never throws.

/** The first well-formed <msg-id> of a Message-ID field value (RFC 5322 §3.6.4), as written. */
const MSG_ID_RE = /<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>/;

/**
 * The key under which `owner` (an address or user name, compared without
 * regard to case) remembers having had the message whose Message-ID field
 * is `messageId`; undefined when there is no usable Message-ID (such a
 * message is never taken for a duplicate). The id is kept as written: its
 * left part is case-sensitive.
 */
export function dedupeKey(owner: string, messageId: string | undefined): string | undefined {
  const id = messageId === undefined ? undefined : MSG_ID_RE.exec(messageId)?.[0];
  // U+001F as in vacationKey: in no address or msg-id, and not NUL (lmdb-js reads a long key with NUL as an array).
  return id === undefined ? undefined : `${owner.toLowerCase()}\x1f${id}`;
}
