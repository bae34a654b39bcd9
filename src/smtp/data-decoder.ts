// DATA as it comes off the wire, decoded (RFC 5321 §4.5.2, §2.3.8): the
// bytes of one message in, the mail text out, chunk by chunk in any split.
//   - A line ends with CRLF only; a bare LF or a bare CR is message content
//     and starts no line.
//   - A line that starts with a period loses that period, whatever follows
//     (dot-unstuffing), as Postfix and Dovecot do. smtp-server removed it only
//     when a second period followed, so a client that does not stuff kept
//     its ".foo".
//   - The message ends at <CRLF>.<CRLF> only (or "." CRLF as the very first
//     line: an empty message). The CRLF before the period is the last line's
//     end and stays in the text; what follows the terminator is returned
//     untouched, for the command parser (pipelined commands, or smuggling
//     attempts that must stay commands, never mail).
// Pure: no I/O, no clock; a chunk's tail that may begin a terminator is held
// back until the next chunk says what it is. Exports DataDecoder.

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF_DOT = Buffer.from('\r\n.');

export interface DecodedChunk {
  /** Mail text decoded from this chunk (and what was held back before it); may be empty. */
  readonly body: Buffer;
  /** Present once the terminator was seen: the bytes after it, which are not mail. */
  readonly rest?: Buffer;
}

export class DataDecoder {
  /** The previous chunk's tail: a CR, a CRLF, or a line-leading "." / ".\r" that may end the message. */
  private held: Buffer | undefined;
  /** Nothing of this message consumed yet: position 0 of the next chunk is a line start. */
  private atStart = true;

  /** Decodes one chunk; after a result with `rest`, the decoder is spent. */
  push(input: Buffer): DecodedChunk {
    const chunk = this.held !== undefined ? Buffer.concat([this.held, input]) : input;
    this.held = undefined;
    const len = chunk.length;
    const parts: Buffer[] = [];
    let from = 0; // first byte not yet emitted
    let hold = len; // bytes from here wait for the next chunk
    let search = 0;
    let first = this.atStart;
    for (;;) {
      // The next line-leading period: at the very start of the message, else after a CRLF.
      let dot: number;
      if (first) {
        first = false;
        if (len === 0) break;
        if (chunk[0] !== DOT) continue;
        dot = 0;
      } else {
        const at = chunk.indexOf(CRLF_DOT, search);
        if (at < 0) break;
        dot = at + 2;
      }
      const lineStart = dot === 0 ? 0 : dot - 2;
      if (dot + 1 >= len || (chunk[dot + 1] === CR && dot + 2 >= len)) {
        hold = lineStart; // "." or ".\r" at the end: the terminator or a stuffed line; the next bytes say which
        break;
      }
      if (chunk[dot + 1] === CR && chunk[dot + 2] === LF) {
        parts.push(chunk.subarray(from, dot));
        this.atStart = false;
        return { body: Buffer.concat(parts), rest: chunk.subarray(dot + 3) };
      }
      parts.push(chunk.subarray(from, dot));
      from = dot + 1;
      search = dot + 1;
      if (dot === 0) this.atStart = false; // the stuffing period was the first byte consumed
    }
    if (hold === len) {
      // A chunk that ends in CR or CRLF may be followed by ".": keep those for the next one.
      if (len - 1 >= from && chunk[len - 1] === CR) hold = len - 1;
      else if (len - 2 >= from && chunk[len - 2] === CR && chunk[len - 1] === LF) hold = len - 2;
    }
    if (hold < len) this.held = Buffer.from(chunk.subarray(hold));
    parts.push(chunk.subarray(from, Math.max(from, hold)));
    const body = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
    if (body.length > 0) this.atStart = false;
    return { body };
  }
}
