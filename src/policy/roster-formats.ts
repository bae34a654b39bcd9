// The two formats a list roster is read from, the one parser for each:
//  - a page of Mailman 3's REST roster (GET /3.1/lists/{list}/roster/member):
//    {"start":0,"total_size":N,"entries":[{"email":"a@example.org",…},…]}
//  - a subscriber file: one address per line; blank lines and lines whose
//    first non-blank character is "#" are ignored.
// Pure: text or decoded JSON in, addresses (lower case) or one error out.
// An entry without a plausible address is skipped and named (a roster with
// one odd address must not stop the other subscribers from syncing); a page
// of the wrong shape is an error (the whole sync fails and the old roster stays).
//
// Exports: parseMailmanPage, parseSubscriberFile, RosterPage, RosterLines.

/** Same test as the lists table's subscribers= (src/db/source.ts). */
const ADDRESS_RE = /^[^@\s,]+@[^@\s,]+$/;
/**
 * RFC 5321 4.5.3.1.3: a path is at most 256 octets with its angle brackets.
 * A longer "address" is nobody's, and one too long for an LMDB key would
 * make the roster write throw (src/policy/keys.ts).
 */
const MAX_ADDRESS_BYTES = 254;
const isAddress = (s: string): boolean => ADDRESS_RE.test(s) && Buffer.byteLength(s, 'utf8') <= MAX_ADDRESS_BYTES;

export type RosterPage =
  | { readonly ok: true; readonly emails: readonly string[]; readonly skipped: readonly string[]; readonly total: number }
  | { readonly ok: false; readonly error: string };

export type RosterLines = { readonly emails: readonly string[]; readonly skipped: readonly string[] };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseMailmanPage(body: unknown): RosterPage {
  if (!isRecord(body)) return { ok: false, error: 'expected a JSON object' };
  const total = body.total_size;
  if (typeof total !== 'number' || !Number.isInteger(total) || total < 0) return { ok: false, error: 'no total_size' };
  // Mailman leaves "entries" out when a list has no members.
  const entries = body.entries ?? [];
  if (!Array.isArray(entries)) return { ok: false, error: '"entries" is not an array' };
  const emails: string[] = [];
  const skipped: string[] = [];
  for (const e of entries) {
    const email = isRecord(e) && typeof e.email === 'string' ? e.email.trim().toLowerCase() : undefined;
    if (email !== undefined && isAddress(email)) emails.push(email);
    else skipped.push(JSON.stringify(isRecord(e) ? (e.email ?? e) : e).slice(0, 100));
  }
  return { ok: true, emails, skipped, total };
}

export function parseSubscriberFile(text: string): RosterLines {
  const emails: string[] = [];
  const skipped: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const email = line.toLowerCase();
    if (isAddress(email)) emails.push(email);
    else skipped.push(line.slice(0, 100));
  }
  return { emails, skipped };
}
