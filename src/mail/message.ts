// The message as the rest of the code sees it: the bytes the client sent
// (dot-unstuffed by the listener) with CRLF turned into LF — the on-disk form
// of Maildir and mbox — plus the few header facts rules and loop detection
// need. Bare CR and bare LF are kept as they are: bytes are preserved, only the
// CRLF pair is normalised. Pure; never throws on malformed input (a message
// without a header/body separator is all header; a header line without a
// colon is ignored for matching but still delivered byte for byte).

export interface ParsedMessage {
  /** Message bytes with CRLF → LF. */
  readonly body: Buffer;
  /** Size in bytes as received (before normalisation), as SIZE counts it. */
  readonly receivedSize: number;
  /** Header fields, name lower-cased → unfolded values in order. */
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
  const block = body.subarray(0, headerEnd(body)).toString('latin1');
  let name = '';
  let value = '';
  const flush = (): void => {
    if (name === '') return;
    const key = name.toLowerCase();
    const list = headers.get(key);
    const v = value.trim();
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
