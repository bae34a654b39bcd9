// Keys the policy code builds from what a client sends (a sender, a
// recipient, a client address): a client decides their length, LMDB does
// not take every length, and an exception in a lookup used to turn a closed
// list's REJECT into DUNNO. This module says what fits and makes anything fit.
//
// LMDB (as lmdb-js 3.x builds it, default page size) stores keys of at most
// 1978 bytes, and lmdb-js cannot even *encode* a string key of more than
// ~4092 bytes for a read ("String does not fit in target buffer") — so a
// get() with a long key throws too. lmdb-js writes a string key as its UTF-8
// bytes, plus one escape byte when the first character's code is below 28;
// keyBytes() counts the same way (strings under 64 characters are encoded
// differently but never come near the limit). A test checks MAX_KEY_BYTES
// against the store's own maxKeySize, so an lmdb upgrade that changes it is seen.
//
// Exports: MAX_KEY_BYTES, keyBytes, fitsKey, storageKey, boundedKey. Pure; never throws.
import { createHash } from 'node:crypto';

export const MAX_KEY_BYTES = 1978;

/** The bytes lmdb-js stores for this string key. */
export function keyBytes(key: string): number {
  return Buffer.byteLength(key, 'utf8') + (key.charCodeAt(0) < 28 ? 1 : 0);
}

/** Can LMDB hold (and so a lookup find) this key? A key that cannot fit is simply not there. */
export function fitsKey(key: string): boolean {
  // Cheap first: a UTF-8 character is at most 3 bytes per UTF-16 unit.
  return key.length * 3 + 1 <= MAX_KEY_BYTES || keyBytes(key) <= MAX_KEY_BYTES;
}

/**
 * The key to store `key` under: itself when it fits, else a fixed-length
 * digest of it. "\0" starts no key the policy code builds from real data (a
 * client network, an address), so a digest key cannot meet a plain one; two
 * long keys meet only if SHA-256 collides.
 */
export function storageKey(key: string): string {
  return fitsKey(key) ? key : digestKey(key);
}

/**
 * For keys kept in memory (rate-limit counters): itself up to maxChars, else
 * the digest, so a flood of 30 kB senders costs 72 bytes a key, not 30 kB.
 */
export function boundedKey(key: string, maxChars: number): string {
  return key.length <= maxChars ? key : digestKey(key);
}

function digestKey(key: string): string {
  return `\0sha256:${createHash('sha256').update(key, 'utf8').digest('base64url')}`;
}
