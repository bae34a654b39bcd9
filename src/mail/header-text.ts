// Header values as text a person would read, for matching rules against
// (`header:Subject=Invoice*`): one unfolded field value, as parseHeaders
// reads it (one character per byte), becomes decoded text:
//   - raw 8-bit bytes are UTF-8 when they form valid UTF-8 (RFC 6532), else
//     latin1, one character per byte (what old clients mean more often than not);
//   - RFC 2047 encoded words (=?charset?B|Q?…?=, any charset libmime knows:
//     UTF-8, ISO-8859-x, windows-125x, KOI8, the Japanese ones…) are decoded,
//     and whitespace between adjacent encoded words is dropped (§6.2).
// The charset work is libmime's (nodemailer's decoder), not ours. Exports
// decodeHeaderText and needsDecoding. Pure; never throws: a value libmime
// cannot make sense of is returned with the raw bytes decoded and the rest as
// it was. Only the copy used for matching is decoded; the delivered message
// bytes are never touched.
//
// Speed: this runs in the master for every header field of every message.
// A value without "=?" and without a byte >= 0x80 — nearly every header of
// nearly every message — is returned as it is after one regex test, and a
// header block that has neither is not looked at value by value at all
// (parseHeaders asks needsDecoding once for the whole block).
import { Buffer, isUtf8 } from 'node:buffer';
import libmime from 'libmime';

const NEEDS_DECODING = /=\?|[\u0080-\u00ff]/;
const EIGHT_BIT = /[\u0080-\u00ff]/;

/** True when text read as latin1 has an encoded word or an 8-bit byte in it. */
export function needsDecoding(latin1: string): boolean {
  return NEEDS_DECODING.test(latin1);
}

/**
 * One header field value, read as latin1 and unfolded, as decoded text.
 * Values that need nothing come back as the same string.
 */
export function decodeHeaderText(latin1: string): string {
  if (!NEEDS_DECODING.test(latin1)) return latin1;
  let text = latin1;
  if (EIGHT_BIT.test(text)) {
    const bytes = Buffer.from(text, 'latin1');
    if (isUtf8(bytes)) text = bytes.toString('utf8');
  }
  if (!text.includes('=?')) return text;
  try {
    return libmime.decodeWords(text);
  } catch {
    // libmime handles unknown charsets and bad base64 itself; this is for
    // whatever it did not foresee: match on the undecoded words then.
    return text;
  }
}
