// The message as the rest of the code sees it: the bytes the client sent
// (dot-unstuffed by the listener) with CRLF turned into LF — the on-disk form
// of Maildir and mbox — plus the few header facts rules and loop detection
// need. Bare CR and bare LF are kept as they are: bytes are preserved, only the
// CRLF pair is normalised. Header values are decoded text for matching
// (header-text.ts: RFC 2047 encoded words, raw UTF-8, else latin1), read from
// the bytes and never written back: the delivered body is the bytes as sent.
// Pure; never throws on malformed input (a message without a header/body
// separator is all header; a header line without a colon is ignored for
// matching but still delivered byte for byte).
import { decodeHeaderText, needsDecoding } from './header-text.js';

export interface ParsedMessage {
  /** Message bytes with CRLF → LF. */
  readonly body: Buffer;
  /** Size in bytes as received (before normalisation), as SIZE counts it. */
  readonly receivedSize: number;
  /**
   * Header fields, name lower-cased → values in order, unfolded (one space per
   * fold), trimmed and decoded (=?UTF-8?B?SW52b2ljZQ==?= → "Invoice"; raw
   * UTF-8 as UTF-8, other 8-bit bytes as latin1). For matching only.
   */
  readonly headers: ReadonlyMap<string, readonly string[]>;
}

const CR = 0x0d;
const LF = 0x0a;

/** CRLF → LF in one pass; returns the input itself when there is no CRLF. */
export function normaliseLineEndings(raw: Buffer): Buffer {
  let i = raw.indexOf('\r\n');
  if (i < 0) return raw;
  const out = Buffer.allocUnsafe(raw.length);
  let o = 0;
  let start = 0;
  while (i >= 0) {
    o += raw.copy(out, o, start, i);
    out[o++] = LF;
    start = i + 2;
    i = raw.indexOf('\r\n', start);
  }
  o += raw.copy(out, o, start);
  return out.subarray(0, o);
}

/** End of the header block in an LF message: index of the empty line, or the length if none. */
export function headerEnd(body: Buffer): number {
  if (body[0] === LF) return 0;
  const i = body.indexOf('\n\n');
  return i < 0 ? body.length : i + 1;
}

export function parseHeaders(body: Buffer): Map<string, string[]> {
  const headers = new Map<string, string[]>();
  // latin1: one character per byte, so that splitting lines and finding
  // colons cannot be thrown off by the bytes; decoding comes per value, and
  // only when the block has anything to decode (most messages have not).
  const block = body.subarray(0, headerEnd(body)).toString('latin1');
  const decode = needsDecoding(block);
  let name = '';
  let value = '';
  const flush = (): void => {
    if (name === '') return;
    const key = name.toLowerCase();
    const list = headers.get(key);
    // Trimmed again after decoding: an encoded word may begin or end with a space.
    const v = decode ? decodeHeaderText(value.trim()).trim() : value.trim();
    if (list) list.push(v);
    else headers.set(key, [v]);
    name = '';
  };
  for (const line of block.split('\n')) {
    if (line === '') continue;
    const first = line.charCodeAt(0);
    if ((first === 0x20 || first === 0x09) && name !== '') {
      value += ` ${line.trim()}`; // folded continuation
      continue;
    }
    flush();
    const colon = line.indexOf(':');
    if (colon > 0 && !/[\s]/.test(line.slice(0, colon))) {
      name = line.slice(0, colon);
      value = line.slice(colon + 1).replace(/\r$/, '');
    }
  }
  flush();
  return headers;
}

export function parseMessage(raw: Buffer): ParsedMessage {
  const body = normaliseLineEndings(raw);
  return { body, receivedSize: raw.length, headers: parseHeaders(body) };
}

/** True when a Delivered-To field already names this address (mail forwarding loop). */
export function hasDeliveredTo(headers: ReadonlyMap<string, readonly string[]>, address: string): boolean {
  const want = address.toLowerCase();
  return (headers.get('delivered-to') ?? []).some((v) => v.replace(/^<|>$/g, '').trim().toLowerCase() === want);
}

/** Number of Received fields: RFC 5321 §6.3 loop detection counts them. */
export function hopCount(headers: ReadonlyMap<string, readonly string[]>): number {
  return headers.get('received')?.length ?? 0;
}

export { CR, LF };
