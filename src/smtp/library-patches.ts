// The places where smtp-server's behaviour is not what a delivery agent
// needs and no option changes it; each is patched here, once, on
// SMTPConnection's prototype, and checked at start so that a version of the
// library whose internals moved fails loudly instead of misbehaving
// (package.json pins smtp-server to ~3.21).
//
// 1. Reply codes: smtp-server derives the enhanced code from the reply number
//    (550 → 5.1.1, 552 → 5.2.2 …), so it cannot say 5.2.3 or 4.2.0, and text
//    that already holds a code comes out doubled ("550 5.1.1 5.7.1 …"). A
//    reply whose text starts with an enhanced code of the reply's class is
//    sent as is; every other reply (the library's own 503, 501, 421 …) keeps
//    the library's code, except its "421 Server shutting down", which says
//    4.3.2 like our own shutdown replies (src/smtp/server.ts close()).
// 2. Greeting delay: init() waits a fixed 100 ms before the 220 greeting "to
//    detect early talkers". With one connection per message — how Postfix's
//    LMTP client and most load drivers work — that caps 8 sessions at ~80
//    messages/s. We greet at once (after the same maxClients check); a client
//    that talks before the greeting still gets smtp-server's 421.
// 3. The enhanced code of a reply is looked up by a "context" that for an
//    unknown command is the command's own name, so a client that sends
//    "MAIL_FROM_OK" got "500 2.1.0": a code the client chose, of the wrong
//    class (RFC 2034 §4: a 5yz reply carries a 5.x.x code). A looked-up code
//    whose class is not the reply's is replaced by the reply's default.
// 4. Dot-unstuffing in DATA: the library removes a line's leading period only
//    when another period follows, and counts a bare LF as a line end there.
//    RFC 5321 §4.5.2: a line (ended by CRLF only, §2.3.8) that starts with a
//    period and has more on it loses that period, whatever follows, as Postfix
//    and Dovecot do; a bare LF starts no line. The end of DATA is unchanged:
//    <CRLF>.<CRLF> only (the smuggling tests in test/smtp hold it there).
import type { PassThrough } from 'node:stream';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';

const CODED = /^([245])\.\d{1,3}\.\d{1,3} /;
let patched = false;

interface ConnectionInternals {
  send(this: ConnectionInternals, code: number, data?: unknown, context?: unknown): void;
  init(this: ConnectionInternals): void;
  _setListeners(this: ConnectionInternals, done: () => void): void;
  connectionReady(this: ConnectionInternals): void;
  _getEnhancedStatusCode(this: ConnectionInternals, code: number, context?: unknown): string;
  readonly name: string;
  readonly _server: { readonly options: { readonly maxClients?: number }; readonly connections: { readonly size: number } };
}

interface StreamInternals {
  _dataStream: PassThrough | null;
  /** Bytes held back from the last chunk (the start of a CRLF "." sequence). */
  _lastBytes: Buffer | false;
  /** Nothing of this DATA consumed yet: position 0 is a line start. */
  _atDataStart: boolean;
  _feedDataStream(this: StreamInternals, chunk: Buffer, done: () => void): void;
  _countDataBytes(this: StreamInternals, len: number): void;
  _endDataMode(this: StreamInternals, chunk: Buffer | false, remainder: Buffer, done: () => void): void;
}

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const CRLF_DOT = Buffer.from('\r\n.');

/**
 * One chunk of DATA (see 4. above): the bytes up to the end of the message
 * go to the data stream with each line-leading period removed; at <CRLF>.<CRLF>
 * data mode ends and what follows goes back to the command parser. The tail
 * of a chunk that may begin such a sequence is held back for the next one.
 */
function feedDataStream(this: StreamInternals, input: Buffer, done: () => void): void {
  const out = this._dataStream;
  const chunk = this._lastBytes !== false && this._lastBytes.length > 0 ? Buffer.concat([this._lastBytes, input]) : input;
  this._lastBytes = false;
  const len = chunk.length;
  const parts: Buffer[] = [];
  let from = 0; // first byte not yet emitted
  let hold = len; // bytes from here wait for the next chunk
  let search = 0;
  let first = this._atDataStart;
  for (;;) {
    // The next line-leading period: at the very start of DATA, else after a CRLF.
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
      hold = lineStart; // ".", or ".\r": the end of DATA or a stuffed line; the next bytes say which
      break;
    }
    if (chunk[dot + 1] === CR && chunk[dot + 2] === LF) {
      // <CRLF>.<CRLF>: the CRLF before the period is the message's last line end.
      parts.push(chunk.subarray(from, dot));
      const body = Buffer.concat(parts);
      this._countDataBytes(body.length);
      this._endDataMode(body.length > 0 ? body : false, chunk.subarray(dot + 3), done);
      return;
    }
    parts.push(chunk.subarray(from, dot));
    from = dot + 1;
    search = dot + 1;
    if (dot === 0) this._atDataStart = false; // the stuffing period was the first byte consumed
  }
  if (hold === len) {
    // A chunk that ends in CR or CRLF may be followed by ".": keep those for the next one.
    if (len - 1 >= from && chunk[len - 1] === CR) hold = len - 1;
    else if (len - 2 >= from && chunk[len - 2] === CR && chunk[len - 1] === LF) hold = len - 2;
  }
  if (hold < len) this._lastBytes = Buffer.from(chunk.subarray(hold));
  parts.push(chunk.subarray(from, Math.max(from, hold)));
  const body = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  if (body.length === 0) return done();
  this._countDataBytes(body.length);
  if (out === null || !out.writable) return done();
  if (out.write(body) || out.destroyed) return done();
  // Wait for the application to read before taking more from the socket; a destroyed stream only closes.
  const resume = (): void => {
    out.removeListener('drain', resume);
    out.removeListener('close', resume);
    done();
  };
  out.once('drain', resume);
  out.once('close', resume);
}

/** Idempotent; called by the listeners before they start. */
export function patchSmtpServer(): void {
  if (patched) return;
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals;
  for (const name of ['send', 'init', '_setListeners', 'connectionReady', '_getEnhancedStatusCode'] as const) {
    if (typeof proto[name] !== 'function') throw new Error(`bug: smtp-server SMTPConnection.${name} not found (library version changed?)`);
  }
  const stream = SMTPStream.prototype as unknown as StreamInternals;
  for (const name of ['_feedDataStream', '_countDataBytes', '_endDataMode'] as const) {
    if (typeof stream[name] !== 'function') throw new Error(`bug: smtp-server SMTPStream.${name} not found (library version changed?)`);
  }
  patched = true;
  stream._feedDataStream = feedDataStream;
  const send = proto.send;
  proto.send = function patchedSend(code, data, context) {
    // A command during shutdown: 4.3.2 (system not accepting messages), as our own close() says, not the library's 4.4.2.
    if (code === 421 && data === 'Server shutting down') return send.call(this, code, `4.3.2 ${this.name} shutting down, try again later`, false);
    if (typeof data === 'string') {
      const m = CODED.exec(data);
      if (m && m[1] === String(code)[0]) return send.call(this, code, data, false);
    }
    return send.call(this, code, data, context);
  };
  const enhanced = proto._getEnhancedStatusCode;
  proto._getEnhancedStatusCode = function patchedEnhancedCode(code, context) {
    const got = enhanced.call(this, code, context);
    return got === '' || got[0] === String(code)[0] ? got : enhanced.call(this, code, undefined);
  };
  proto.init = function patchedInit() {
    this._setListeners(() => {
      const max = this._server.options.maxClients;
      if (max && this._server.connections.size > max) {
        return this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
      }
      setImmediate(() => this.connectionReady());
    });
  };
}
