// The Sender Rewriting Scheme (Shevek's SRS paper, as libsrs2 and postsrsd
// implement it), so that a forward keeps passing the sender's SPF and a
// bounce of it still finds the original sender.
//
//   alice@example.org  →  SRS0=HHHH=TT=example.org=alice@our.domain
//   SRS0=HHHH=TT=example.org=alice@fwd.test  →  SRS1=GGGG=fwd.test==HHHH=TT=example.org=alice@our.domain
//
// HHHH: HMAC-SHA1 keyed with the secret over the lower-cased (A–Z only) UTF-8
// of TT, the domain and the local part (SRS1: the first forwarder's domain
// and the SRS0 address's rest, its separator included), base64, first 4
// characters; compared without regard to case on the way back, because
// some MTAs lower-case local parts. TT: the day number (Unix time / 86400)
// in two base32 characters (A–Z, 2–7), so it wraps every 1024 days; an
// address is good for maxAgeDays after the day it was made (libsrs2 and
// postsrsd: 21). Reversing an SRS1 gives the SRS0 address at the first
// forwarder, which is theirs to check. Addresses we make use "=" after the
// tag; ones we read may use "=", "+" or "-" (libsrs2's separators).
//
// Why not an npm package: `sender-rewriting-scheme` (1.0.0) and `srs.js`
// (0.1.0) are single-release packages with test setups from years ago
// (jest 24, mocha 1.x), and neither is compatible with libsrs2: both hash
// to hex rather than base64, neither lower-cases before hashing nor compares
// without regard to case, both round the day (Math.round) instead of
// truncating it, neither takes old secrets for rotation, and one is
// GPL-3.0 (this project is BSD-2-Clause; the other, sender-rewriting-scheme,
// also uses SHA-256). An address one of them made could not be reversed by
// postsrsd, nor the other way round. This module is small and follows the
// libsrs2 conventions above; the tests check it against vectors computed
// independently (test/fixtures/srs/).
//
// Not rewritten: the null sender, a sender without "@", and a sender in our
// own domain (libsrs2's default, without alwaysrewrite).
//
// Exports: srsForward, srsReverse, isSrsAddress, SrsForwardOptions,
// SrsReverseOptions, SrsReverse. Pure (the time is an argument); never throws.
import { createHmac } from 'node:crypto';

export interface SrsForwardOptions {
  /** The current secret (the first of SrsReverseOptions.secrets). */
  readonly secret: string;
  /** Our domain: the rewritten address's; a plain domain, or an address whose domain is taken. */
  readonly domain: string;
}

export interface SrsReverseOptions {
  /** The current secret first, then older ones still accepted while addresses made with them may come back. */
  readonly secrets: readonly string[];
  /** Days an SRS0 address stays good after the day it was made (libsrs2: 21). */
  readonly maxAgeDays: number;
}

export type SrsReverse = { readonly address: string } | { readonly error: string };

const TIME_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const TIME_SLOTS = 1024; // two base32 characters
const DAY_MS = 86_400_000;
const HASH_LENGTH = 4;
const SEPARATOR = '=';
const TAG_RE = /^SRS([01])[=+-]/i;

/** Lower case for A–Z only, as C's tolower in the C locale: what libsrs2 hashes. */
const asciiLower = (s: string): string => s.replace(/[A-Z]+/g, (m) => m.toLowerCase());

function hash(secret: string, parts: readonly string[]): string {
  const mac = createHmac('sha1', Buffer.from(secret, 'utf8'));
  for (const p of parts) mac.update(asciiLower(p), 'utf8');
  return mac.digest('base64').slice(0, HASH_LENGTH);
}

function stamp(now: Date): string {
  const day = Math.floor(now.getTime() / DAY_MS);
  return `${TIME_CHARS.charAt((day >> 5) & 31)}${TIME_CHARS.charAt(day & 31)}`;
}

/** Days since the stamp was made, counting from the 1024-day wrap; undefined for a malformed stamp. */
function stampAge(text: string, now: Date): number | undefined {
  if (text.length !== 2) return undefined;
  let then = 0;
  for (const c of text.toUpperCase()) {
    const v = TIME_CHARS.indexOf(c);
    if (v < 0) return undefined;
    then = (then << 5) | v;
  }
  let today = Math.floor(now.getTime() / DAY_MS) % TIME_SLOTS;
  while (today < then) today += TIME_SLOTS;
  return today - then;
}

function splitAddress(address: string): { local: string; domain: string } | undefined {
  const at = address.lastIndexOf('@');
  return at > 0 && at < address.length - 1 ? { local: address.slice(0, at), domain: address.slice(at + 1) } : undefined;
}

/** Is this local part (or address) an SRS0 or SRS1 one? */
export function isSrsAddress(address: string): boolean {
  return TAG_RE.test(address);
}

/**
 * The envelope sender for a message we forward on behalf of `sender`. The
 * null sender, a sender without a domain and one in our domain come back as
 * they are.
 */
export function srsForward(sender: string, o: SrsForwardOptions, now: Date): string {
  const parts = splitAddress(sender);
  const ours = o.domain.slice(o.domain.lastIndexOf('@') + 1);
  if (parts === undefined || parts.domain.toLowerCase() === ours.toLowerCase()) return sender;
  const { local, domain } = parts;
  const tag = TAG_RE.exec(local)?.[1];
  if (tag === '0') {
    // An SRS0 address of another forwarder: keep it whole behind their domain.
    const rest = local.slice(4);
    return `SRS1${SEPARATOR}${hash(o.secret, [domain, rest])}${SEPARATOR}${domain}${SEPARATOR}${rest}@${ours}`;
  }
  if (tag === '1') {
    // An SRS1 address: the first forwarder's domain and its SRS0 part stay, the hash becomes ours.
    const m = /^SRS1[=+-][^=]+=([^=]+)=(.+)$/is.exec(local);
    if (m) {
      const [, firstHost = '', rest = ''] = m;
      return `SRS1${SEPARATOR}${hash(o.secret, [firstHost, rest])}${SEPARATOR}${firstHost}${SEPARATOR}${rest}@${ours}`;
    }
    // Malformed: rewritten like any other sender below, which still reverses to exactly this address.
  }
  const tt = stamp(now);
  return `SRS0${SEPARATOR}${hash(o.secret, [tt, domain, local])}${SEPARATOR}${tt}${SEPARATOR}${domain}${SEPARATOR}${local}@${ours}`;
}

function hashMatches(given: string, secrets: readonly string[], parts: readonly string[]): boolean {
  if (given.length < HASH_LENGTH) return false;
  const want = given.slice(0, HASH_LENGTH).toLowerCase();
  return secrets.some((s) => hash(s, parts).toLowerCase() === want);
}

/**
 * Where a bounce to an SRS address of ours goes: the original sender (SRS0),
 * or the SRS0 address at the forwarder before us (SRS1). An error says why
 * not (not SRS, malformed, a hash that no secret made, too old); the caller
 * refuses such a recipient rather than guessing.
 */
export function srsReverse(address: string, o: SrsReverseOptions, now: Date): SrsReverse {
  const local = splitAddress(address)?.local ?? address;
  const tag = TAG_RE.exec(local)?.[1];
  if (tag === undefined) return { error: 'not an SRS address' };
  if (o.secrets.length === 0) return { error: 'no SRS secret configured' };
  if (tag === '1') {
    const m = /^SRS1[=+-]([^=]+)=([^=]+)=(.+)$/is.exec(local);
    if (!m) return { error: 'malformed SRS1 address (want SRS1=HASH=DOMAIN=REST)' };
    const [, given = '', host = '', rest = ''] = m;
    if (!hashMatches(given, o.secrets, [host, rest])) return { error: 'SRS1 hash does not match (not made here, or with a secret no longer kept)' };
    return { address: `SRS0${rest}@${host}` };
  }
  const m = /^SRS0[=+-]([^=]+)=([^=]+)=([^=]+)=(.+)$/is.exec(local);
  if (!m) return { error: 'malformed SRS0 address (want SRS0=HASH=TT=DOMAIN=LOCAL)' };
  const [, given = '', tt = '', host = '', user = ''] = m;
  const age = stampAge(tt, now);
  if (age === undefined) return { error: `bad SRS0 timestamp "${tt}"` };
  if (!hashMatches(given, o.secrets, [tt, host, user])) return { error: 'SRS0 hash does not match (not made here, or with a secret no longer kept)' };
  if (age > o.maxAgeDays) return { error: `SRS0 address expired (made ${age} days ago, good for ${o.maxAgeDays})` };
  return { address: `${user}@${host}` };
}
