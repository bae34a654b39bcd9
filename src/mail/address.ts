// Address parsing for lookups: splits "user+ext@domain" into its parts with a
// configurable recipient delimiter, and lists the lookup keys in the order
// DESIGN.md gives: user+ext@domain, user@domain, user+ext, user, @domain.
// Pure; never throws on odd input (a local part without a domain is allowed,
// as LMTP from Postfix's local transport may send one).

export interface RecipientAddress {
  /** The address as given in RCPT, without angle brackets. */
  readonly address: string;
  /** Local part including any extension, original case. */
  readonly local: string;
  /** Local part without the extension, original case. */
  readonly user: string;
  /** The extension after the delimiter, original case; "" when none. */
  readonly extension: string;
  /** Domain in lower case; "" when the address has none. */
  readonly domain: string;
}

export function parseRecipient(address: string, delimiter: string): RecipientAddress {
  const at = address.lastIndexOf('@');
  const local = at >= 0 ? address.slice(0, at) : address;
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
