// Address parsing for lookups: splits "user+ext@domain" into its parts with a
// configurable recipient delimiter, and lists the lookup keys in the order
// ../shared/DESIGN.md gives: user+ext@domain, user@domain, user+ext, user, @domain.
// A quoted local part is the same mailbox as its unquoted form when that is
// a plain dot-atom (RFC 5321 §4.1.2: "bob"@x and bob@x are one mailbox), so
// it is unquoted before lookup; one that needs its quotes ("a b", "a@b")
// stays quoted and matches no user's key. addressProblem tells MAIL/RCPT
// addresses that are not valid UTF-8, or not ASCII without SMTPUTF8.
// Pure; never throws on odd input (a local part without a domain is allowed,
// as LMTP from Postfix's local transport may send one).

export interface RecipientAddress {
  /** The address as given in RCPT, without angle brackets (quotes kept). */
  readonly address: string;
  /** Local part including any extension, original case, unquoted when it is a dot-atom. */
  readonly local: string;
  /** Local part without the extension, original case. */
  readonly user: string;
  /** The extension after the delimiter, original case; "" when none. */
  readonly extension: string;
  /** Domain in lower case; "" when the address has none. */
  readonly domain: string;
}

/** RFC 5322 atext, plus the UTF-8 of RFC 6531; a dot-atom is atoms joined by single periods. */
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10FFFF}-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\u{10FFFF}-]+)*$/u;
const QUOTED = /^"((?:[^"\\]|\\.)*)"$/su;

/** `"bob.smith"` → `bob.smith`; a quoted string whose content is no dot-atom, or no quoted string at all, as it is. */
export function unquoteLocalPart(local: string): string {
  const m = QUOTED.exec(local);
  if (!m) return local;
  const content = (m[1] as string).replace(/\\(.)/gsu, '$1');
  return DOT_ATOM.test(content) ? content : local;
}

/**
 * Why a MAIL or RCPT address (as smtp-server decoded the command: bytes that
 * are not UTF-8 became U+FFFD) must be refused, or undefined. Without
 * SMTPUTF8 the local part must be ASCII (RFC 6531); the domain is not
 * checked for it, as smtp-server turns an ASCII "xn--" domain into Unicode.
 */
export function addressProblem(address: string, smtpUtf8: boolean): 'invalid-utf8' | 'needs-smtputf8' | undefined {
  if (address.includes('\uFFFD')) return 'invalid-utf8';
  if (smtpUtf8) return undefined;
  const at = address.lastIndexOf('@');
  const local = at >= 0 ? address.slice(0, at) : address;
  return /[\u0080-\u{10FFFF}]/u.test(local) ? 'needs-smtputf8' : undefined;
}

export function parseRecipient(address: string, delimiter: string): RecipientAddress {
  const at = address.lastIndexOf('@');
  const local = unquoteLocalPart(at >= 0 ? address.slice(0, at) : address);
  const domain = at >= 0 ? address.slice(at + 1).toLowerCase() : '';
  let user = local;
  let extension = '';
  if (delimiter !== '') {
    // Postfix splits at the first delimiter character; so do we.
    let cut = -1;
    for (const ch of delimiter) {
      const i = local.indexOf(ch);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut > 0) {
      user = local.slice(0, cut);
      extension = local.slice(cut + 1);
    }
  }
  return { address, local, user, extension, domain };
}

/** Lookup keys, most specific first, lower-cased (tables are case-insensitive, like Postfix's). */
export function lookupKeys(r: RecipientAddress): string[] {
  const keys: string[] = [];
  const add = (k: string): void => {
    const lk = k.toLowerCase();
    if (lk !== '' && !keys.includes(lk)) keys.push(lk);
  };
  if (r.domain !== '') {
    if (r.extension !== '') add(`${r.local}@${r.domain}`);
    add(`${r.user}@${r.domain}`);
  }
  if (r.extension !== '') add(r.local);
  add(r.user);
  if (r.domain !== '') add(`@${r.domain}`);
  return keys;
}
