// The SPAMC/SPAMD wire format, as SpamAssassin 4.0.1's spamd speaks it: the one
// module that builds requests and reads replies. Pure, no I/O: a request is
// built as bytes, a reply is read incrementally from whatever pieces the socket
// delivers (one byte at a time or all at once gives the same result, and the
// same kind of error; an error quotes what had arrived when it was found).
//
// Exports: formatRequest (the request bytes), ReplyReader (push / end → the
// typed result for the command), SpamdError (every fault, with a kind), the
// result types, PROTOCOL_VERSION and the size limits.
//
// Failure contract: formatRequest throws RangeError for a request that cannot
// be sent (a user name outside spamd's character set, TELL options spamd
// refuses or would misread): those are bugs or bad configuration. Everything
// that comes back over the wire is judged by the reader, which throws
// SpamdError, never anything else:
// - 'server'    spamd answered with a non-zero sysexits code (exitCode holds it;
//               EX_PROTOCOL 76 for a request it could not read, EX_UNAVAILABLE
//               69 for TELL without --allow-tell, EX_TIMEOUT 79 ...);
// - 'protocol'  the bytes are not a reply: no or bad status line, a version
//               other than 1.x, a header that is not "Name: value", a score
//               that is not a number, a missing Spam or Content-length header,
//               a rule name outside [A-Za-z0-9_], a reply that ends early ...;
// - 'too-large' the reply (or the body its Content-length announces) exceeds
//               the reader's limit.
// Every error message is one line of printable ASCII: a reply's own bytes are
// quoted with \xNN escapes, so nothing spamd sends reaches a log or a header raw.
//
// What spamd really sends (spamd/spamd.raw, 4.0.1), and so what is accepted:
// - the status line is "SPAMD/1.1 0 EX_OK"; errors are "SPAMD/1.0 CODE text"
//   followed by nothing (the connection closes); PING's answer is
//   "SPAMD/1.5 0 PONG" and nothing else, not even an empty line;
// - CHECK's reply has no Content-length: the empty line ends it;
// - TELL's reply has no Content-length either, and one CRLF too many after the
//   empty line ("...\r\n" . "\r\n\r\n"); bytes after a reply's end are
//   ignored, which is how that stray CRLF is read;
// - SKIP has no reply at all: the connection just closes;
// - a reply is complete when its framing says so (the status line for an error
//   or PING, the empty line, then Content-length bytes), not when spamd closes:
//   spamd may go on with Bayes expiry after answering (bug 3466) before it
//   closes the connection;
// - header names are matched without regard to case, lines may end in LF or
//   CRLF, unknown headers are ignored (the PROTOCOL document asks for both);
//   a known header given twice is an error.
import { SYSEXITS_TABLE } from '../../mail/sysexits.js';

export const PROTOCOL_VERSION = 'SPAMC/1.5';

export type SpamdCommand = 'CHECK' | 'SYMBOLS' | 'REPORT' | 'REPORT_IFSPAM' | 'PROCESS' | 'HEADERS' | 'TELL' | 'PING' | 'SKIP';

/** The databases TELL sets or removes a message in: the local Bayes store, remote reporting (Razor, Pyzor ...). */
export type TellDatabase = 'local' | 'remote';

/**
 * TELL's three request headers. spamc's usual uses: learn spam/ham
 * { messageClass, set: ['local'] }; forget { remove: ['local'] }; report
 * { messageClass: 'spam', set: ['local', 'remote'] }; revoke { messageClass:
 * 'ham', set: ['local'], remove: ['remote'] }.
 */
export interface TellRequest {
  readonly messageClass?: 'spam' | 'ham';
  readonly set?: readonly TellDatabase[];
  readonly remove?: readonly TellDatabase[];
}

export interface RequestOptions {
  /** Sent as "User:" so spamd uses that user's preferences; omitted when absent. */
  readonly user?: string;
  /** Required for TELL, refused for every other command. */
  readonly tell?: TellRequest;
}

export interface SpamResult {
  readonly isSpam: boolean;
  /** The score as spamd formats it ("%2.1f"), as a number. */
  readonly score: number;
  /** The threshold (required_score) of the user spamd checked for. */
  readonly required: number;
}

export interface TellResult {
  /** What spamd reports it did ("DidSet:"); empty when there was nothing to do (already learned). */
  readonly didSet: readonly TellDatabase[];
  readonly didRemove: readonly TellDatabase[];
}

/** The result of each command, by command. */
export interface SpamdReplies {
  readonly CHECK: SpamResult;
  /** The names of the rules that hit; each matches [A-Za-z0-9_]+. */
  readonly SYMBOLS: SpamResult & { readonly tests: readonly string[] };
  /** The report text (read as UTF-8). */
  readonly REPORT: SpamResult & { readonly report: string };
  /** The report when the message is spam, '' when it is not. */
  readonly REPORT_IFSPAM: SpamResult & { readonly report: string };
  /** The message as spamd rewrote it, bytes as received. */
  readonly PROCESS: SpamResult & { readonly message: Buffer };
  /** The rewritten message's header block, up to and including the empty line. */
  readonly HEADERS: SpamResult & { readonly headers: Buffer };
  readonly TELL: TellResult;
  /** The version on spamd's PONG line ("1.5"). */
  readonly PING: { readonly version: string };
  readonly SKIP: { readonly skipped: true };
}

export type SpamdErrorKind = 'connect' | 'timeout' | 'protocol' | 'server' | 'too-large';

/**
 * Every way a spamd exchange fails. `kind` says whose fault it is:
 * 'connect' no connection, or it broke before a reply; 'timeout' no
 * connection or no complete reply in time; 'protocol' the reply is not
 * SPAMD; 'server' spamd refused with a sysexits code (in exitCode);
 * 'too-large' the reply exceeds the limit.
 */
export class SpamdError extends Error {
  override readonly name = 'SpamdError';
  readonly kind: SpamdErrorKind;
  /** The sysexits code spamd answered with (kind 'server' only). */
  readonly exitCode: number | undefined;

  constructor(kind: SpamdErrorKind, message: string, options: { exitCode?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.exitCode = options.exitCode;
  }
}

/** A reply whose status line and headers together exceed this is not spamd (its own are under 200 bytes). */
export const HEADER_LIMIT = 16 * 1024;
/** The reader's default cap on a whole reply; PROCESS and HEADERS need the message's size plus REWRITE_ALLOWANCE. */
export const DEFAULT_MAX_REPLY_BYTES = 1024 * 1024;
/** What spamd may add to a message it rewrites: its X-Spam-* headers, or with report_safe the report and MIME wrapping. */
export const REWRITE_ALLOWANCE = 64 * 1024;

const COMMANDS: ReadonlySet<string> = new Set<SpamdCommand>(['CHECK', 'SYMBOLS', 'REPORT', 'REPORT_IFSPAM', 'PROCESS', 'HEADERS', 'TELL', 'PING', 'SKIP']);
const WITH_BODY: ReadonlySet<SpamdCommand> = new Set<SpamdCommand>(['SYMBOLS', 'REPORT', 'REPORT_IFSPAM', 'PROCESS', 'HEADERS']);
/**
 * spamd takes any bytes 0x20-0xFF in "User:"; this is the narrower set spamd
 * itself untaints a user name with (its vpopmail branch): Unix names and
 * virtual users such as alice@example.org.
 */
const USER_NAME = /^[-:,.=+A-Za-z0-9_@~]{1,255}$/;
const DATABASES: ReadonlySet<string> = new Set<TellDatabase>(['local', 'remote']);

// ---------------------------------------------------------------- requests

/**
 * The request for `command`: [head] for PING and SKIP, [head, message] for the
 * rest, so the caller writes the message bytes as given (never re-encoded).
 * The head is what spamc 4.0.1 sends, header for header in spamc's order.
 */
export function formatRequest(command: SpamdCommand, message: Buffer | undefined, options: RequestOptions = {}): Buffer[] {
  if (!COMMANDS.has(command)) throw new RangeError(`unknown spamd command ${JSON.stringify(command)}`);
  if (options.user !== undefined && !USER_NAME.test(options.user)) {
    throw new RangeError(`user name ${JSON.stringify(options.user)} cannot be sent to spamd: it must match ${USER_NAME.source}`);
  }
  if (options.tell !== undefined && command !== 'TELL') throw new RangeError(`TELL options given for ${command}`);
  if (command === 'PING' || command === 'SKIP') {
    // spamc sends no User: with PING; since protocol 1.5 both end with an empty line (bug 6187).
    if (message !== undefined) throw new RangeError(`${command} carries no message`);
    return [Buffer.from(`${command} ${PROTOCOL_VERSION}\r\n\r\n`, 'latin1')];
  }
  if (message === undefined) throw new RangeError(`${command} needs a message`);
  let head = `${command} ${PROTOCOL_VERSION}\r\n`;
  if (command === 'TELL') {
    if (options.tell === undefined) throw new RangeError('TELL needs its options (messageClass, set, remove)');
    head += tellHeaders(options.tell);
  }
  if (options.user !== undefined) head += `User: ${options.user}\r\n`;
  head += `Content-length: ${message.length}\r\n\r\n`;
  return [Buffer.from(head, 'latin1'), message];
}

function tellHeaders(tell: TellRequest): string {
  const set = databases('set', tell.set);
  const remove = databases('remove', tell.remove);
  if (set.length === 0 && remove.length === 0) throw new RangeError('TELL needs something to set or remove');
  for (const db of set) {
    if (remove.includes(db)) throw new RangeError(`TELL cannot set and remove ${db} at once (spamd refuses it)`);
  }
  // spamd learns a message given "Set: local" without a class as ham, silently.
  if (set.length > 0 && tell.messageClass === undefined) throw new RangeError('TELL with set needs a messageClass (spamd would learn it as ham)');
  if (tell.messageClass !== undefined && tell.messageClass !== 'spam' && tell.messageClass !== 'ham') {
    throw new RangeError(`TELL messageClass must be spam or ham, not ${JSON.stringify(tell.messageClass)}`);
  }
  let h = '';
  if (tell.messageClass !== undefined) h += `Message-class: ${tell.messageClass}\r\n`;
  if (set.length > 0) h += `Set: ${set.join(',')}\r\n`;
  if (remove.length > 0) h += `Remove: ${remove.join(',')}\r\n`;
  return h;
}

/** The databases in spamc's order (local, then remote), each once. */
function databases(what: string, list: readonly TellDatabase[] | undefined): TellDatabase[] {
  for (const db of list ?? []) {
    if (!DATABASES.has(db)) throw new RangeError(`TELL ${what}: ${JSON.stringify(db)} is neither local nor remote`);
  }
  return (['local', 'remote'] as const).filter((db) => list?.includes(db) === true);
}

// ------------------------------------------------------------------ replies

const LF = 0x0a;
const CR = 0x0d;
const MAGIC = Buffer.from('SPAMD/', 'latin1');
const STATUS_LINE = /^SPAMD\/(\d{1,4})\.(\d{1,4}) +(\d{1,3})(?: +(.*))?$/;
const HEADER_LINE = /^([^\s:]+):[ \t]*(.*?)[ \t]*$/;
const NUMBER = '[+-]?\\d{1,15}(?:\\.\\d{1,15})?';
const SPAM_VALUE = new RegExp(`^(True|False|Yes|No)[ \\t]*;[ \\t]*(${NUMBER})[ \\t]*/[ \\t]*(${NUMBER})$`, 'i');
const RULE_NAME = /^[A-Za-z0-9_]+$/;
/** The bytes a status or header line may hold: tab and printable ASCII. */
const LINE_TEXT = /^[\t\x20-\x7e]*$/;

/** The sysexits name spamd gave a code (its %resphash: sysexits.h plus its own EX_TIMEOUT). */
function exitName(code: number): string {
  if (code === 79) return 'EX_TIMEOUT';
  const row = SYSEXITS_TABLE[code];
  return row !== undefined && row.name.startsWith('EX_') ? row.name : 'unknown code';
}

/** Bytes for an error message: printable ASCII kept, the rest as \xNN, at most `max` bytes shown. */
export function quoteBytes(bytes: Buffer, max = 80): string {
  let out = '';
  for (const b of bytes.subarray(0, max)) {
    out += b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return `"${out}"${bytes.length > max ? `... (${bytes.length} bytes)` : ''}`;
}

function protocolError(message: string): SpamdError {
  return new SpamdError('protocol', message);
}

interface Head {
  readonly spam: SpamResult | undefined;
  readonly contentLength: number | undefined;
  readonly didSet: readonly TellDatabase[] | undefined;
  readonly didRemove: readonly TellDatabase[] | undefined;
}

/**
 * Reads one reply to `command`. push() each piece as it arrives: it returns
 * the result once the reply is complete (and the same result for any later
 * piece), undefined while more is needed, or throws SpamdError as soon as the
 * bytes so far cannot be a good reply. end() when the connection closes: the
 * result, or SpamdError for a reply that ended early.
 */
export class ReplyReader<C extends SpamdCommand> {
  /** Bytes up to the end of the headers (bounded by HEADER_LIMIT). */
  private head: Buffer = Buffer.alloc(0);
  private parsed: Head | undefined;
  private readonly body: Buffer[] = [];
  private bodyBytes = 0;
  private result: SpamdReplies[C] | undefined;
  private failure: SpamdError | undefined;

  constructor(
    readonly command: C,
    readonly maxBytes: number = DEFAULT_MAX_REPLY_BYTES,
  ) {
    if (!COMMANDS.has(command)) throw new RangeError(`unknown spamd command ${JSON.stringify(command)}`);
  }

  push(chunk: Buffer): SpamdReplies[C] | undefined {
    if (this.result !== undefined) return this.result;
    if (this.failure !== undefined) throw this.failure;
    try {
      return this.take(chunk);
    } catch (err) {
      if (err instanceof SpamdError) this.failure = err;
      throw err;
    }
  }

  end(): SpamdReplies[C] {
    if (this.result !== undefined) return this.result;
    if (this.failure !== undefined) throw this.failure;
    const c = this.command;
    if (c === 'SKIP' && this.head.length === 0) return this.done({ skipped: true } as SpamdReplies[C]);
    if (this.head.length === 0) throw protocolError(`spamd closed the connection without a reply to ${c}`);
    if (this.parsed === undefined) {
      const where = this.head.indexOf(LF) < 0 ? 'status line' : 'headers';
      throw protocolError(`reply to ${c} truncated in the ${where} after ${this.head.length} bytes: ${quoteBytes(this.head)}`);
    }
    throw protocolError(`reply to ${c} truncated: Content-length ${this.parsed.contentLength ?? 0}, only ${this.bodyBytes} bytes of body`);
  }

  private done(r: SpamdReplies[C]): SpamdReplies[C] {
    this.result = r;
    this.head = Buffer.alloc(0);
    this.body.length = 0;
    return r;
  }

  private take(chunk: Buffer): SpamdReplies[C] | undefined {
    if (this.parsed === undefined) {
      if (this.command === 'SKIP' && chunk.length > 0) throw protocolError(`spamd answered SKIP, which has no reply: ${quoteBytes(chunk)}`);
      this.head = this.head.length === 0 ? chunk : Buffer.concat([this.head, chunk]);
      const prefix = this.head.subarray(0, MAGIC.length);
      if (!MAGIC.subarray(0, prefix.length).equals(prefix)) throw protocolError(`not a SPAMD reply: ${quoteBytes(firstLine(this.head))}`);
      const statusEnd = this.head.indexOf(LF);
      if (statusEnd < 0) return this.tooLongHead();
      const version = this.status(this.head.subarray(0, statusEnd));
      // An error (non-zero code, thrown above) and PING end with their status line.
      if (this.command === 'PING') return this.done({ version } as SpamdReplies[C]);
      const headEnd = endOfHeaders(this.head, statusEnd + 1);
      if (headEnd < 0) return this.tooLongHead();
      this.parsed = this.headers(statusEnd + 1, headEnd);
      const rest = this.head.subarray(headEnd);
      this.head = this.head.subarray(0, headEnd);
      if (rest.length > 0) this.addBody(rest);
    } else {
      this.addBody(chunk);
    }
    const want = this.parsed.contentLength ?? 0;
    if (this.bodyBytes < want) return undefined;
    const body = Buffer.concat(this.body, this.bodyBytes).subarray(0, want);
    return this.done(this.interpret(this.parsed, body));
  }

  private addBody(piece: Buffer): void {
    const want = this.parsed?.contentLength ?? 0;
    if (this.bodyBytes >= want) return; // past the end: ignored (TELL's stray CRLF)
    this.body.push(piece);
    this.bodyBytes += piece.length;
  }

  private tooLongHead(): undefined {
    const limit = Math.min(HEADER_LIMIT, this.maxBytes);
    if (this.head.length > limit) {
      throw new SpamdError(this.maxBytes < HEADER_LIMIT ? 'too-large' : 'protocol', `reply to ${this.command}: status line and headers longer than ${limit} bytes: ${quoteBytes(this.head)}`);
    }
    return undefined;
  }

  /** The status line's version; a non-zero code is thrown as the server's refusal. */
  private status(raw: Buffer): string {
    const line = stripCR(raw);
    if (!LINE_TEXT.test(line.toString('latin1'))) throw protocolError(`status line with control or 8-bit bytes: ${quoteBytes(line)}`);
    const m = STATUS_LINE.exec(line.toString('latin1'));
    if (m === null) throw protocolError(`malformed status line: ${quoteBytes(line)}`);
    const [, major, minor, code, text] = m as unknown as [string, string, string, string, string | undefined];
    if (Number(major) !== 1) throw protocolError(`unsupported protocol version SPAMD/${major}.${minor} (this client speaks SPAMD/1.x): ${quoteBytes(line)}`);
    const exit = Number(code);
    if (exit !== 0) {
      throw new SpamdError('server', `spamd refused ${this.command}: ${exit} ${exitName(exit)}: ${text ?? ''}`.trimEnd(), { exitCode: exit });
    }
    return `${major}.${minor}`;
  }

  private headers(from: number, to: number): Head {
    let spam: SpamResult | undefined;
    let contentLength: number | undefined;
    let didSet: TellDatabase[] | undefined;
    let didRemove: TellDatabase[] | undefined;
    const seen = new Set<string>();
    for (let start = from; ; ) {
      const nl = this.head.indexOf(LF, start);
      const line = stripCR(this.head.subarray(start, nl));
      start = nl + 1;
      if (line.length === 0) break;
      const text = line.toString('latin1');
      if (!LINE_TEXT.test(text)) throw protocolError(`header line with control or 8-bit bytes: ${quoteBytes(line)}`);
      const m = HEADER_LINE.exec(text);
      if (m === null) throw protocolError(`header line not in "Name: value" form: ${quoteBytes(line)}`);
      const name = (m[1] ?? '').toLowerCase();
      const value = m[2] ?? '';
      if (name !== 'spam' && name !== 'content-length' && name !== 'didset' && name !== 'didremove') continue;
      if (seen.has(name)) throw protocolError(`header ${m[1]} given twice: ${quoteBytes(line)}`);
      seen.add(name);
      if (name === 'spam') spam = parseSpam(value, line);
      else if (name === 'content-length') contentLength = parseLength(value, line);
      else if (name === 'didset') didSet = parseDatabases(value, line);
      else didRemove = parseDatabases(value, line);
    }
    const c = this.command;
    if (c !== 'TELL' && spam === undefined) throw protocolError(`reply to ${c} has no Spam header`);
    if (WITH_BODY.has(c) && contentLength === undefined) throw protocolError(`reply to ${c} has no Content-length header`);
    if (contentLength !== undefined && to + contentLength > this.maxBytes) {
      throw new SpamdError('too-large', `reply to ${c} announces ${contentLength} bytes of body, more than the limit of ${this.maxBytes} bytes for the whole reply`);
    }
    return { spam, contentLength, didSet, didRemove };
  }

  private interpret(h: Head, body: Buffer): SpamdReplies[C] {
    const spam = h.spam as SpamResult;
    let r: SpamdReplies[SpamdCommand];
    switch (this.command) {
      case 'CHECK': r = spam; break;
      case 'SYMBOLS': r = { ...spam, tests: parseTests(body) }; break;
      case 'REPORT':
      case 'REPORT_IFSPAM': r = { ...spam, report: body.toString('utf8') }; break;
      case 'PROCESS': r = { ...spam, message: body }; break;
      case 'HEADERS': r = { ...spam, headers: body }; break;
      case 'TELL': r = { didSet: h.didSet ?? [], didRemove: h.didRemove ?? [] }; break;
      default: throw new Error(`bug: no interpretation for ${this.command}`);
    }
    return r as SpamdReplies[C];
  }
}

function firstLine(b: Buffer): Buffer {
  const nl = b.indexOf(LF);
  return nl < 0 ? b : b.subarray(0, nl);
}

function stripCR(line: Buffer): Buffer {
  return line.length > 0 && line[line.length - 1] === CR ? line.subarray(0, -1) : line;
}

/** The offset after the empty line that ends the headers (lines from `from`), or -1 if it has not arrived. */
function endOfHeaders(b: Buffer, from: number): number {
  for (let start = from; ; ) {
    const nl = b.indexOf(LF, start);
    if (nl < 0) return -1;
    if (nl === start || (nl === start + 1 && b[start] === CR)) return nl + 1;
    start = nl + 1;
  }
}

function parseSpam(value: string, line: Buffer): SpamResult {
  const m = SPAM_VALUE.exec(value);
  if (m === null) throw protocolError(`Spam header is not "True|False ; SCORE / REQUIRED": ${quoteBytes(line)}`);
  const verdict = (m[1] ?? '').toLowerCase();
  // + 0 turns spamd's "-0.0" into 0.
  return { isSpam: verdict === 'true' || verdict === 'yes', score: Number(m[2]) + 0, required: Number(m[3]) + 0 };
}

function parseLength(value: string, line: Buffer): number {
  if (!/^\d{1,15}$/.test(value)) throw protocolError(`Content-length is not a number of bytes: ${quoteBytes(line)}`);
  return Number(value);
}

function parseDatabases(value: string, line: Buffer): TellDatabase[] {
  const out: TellDatabase[] = [];
  for (const part of value.split(',')) {
    const db = part.trim();
    if (!DATABASES.has(db)) throw protocolError(`${quoteBytes(line)}: ${JSON.stringify(db)} is neither local nor remote`);
    if (!out.includes(db as TellDatabase)) out.push(db as TellDatabase);
  }
  return out;
}

/** SYMBOLS' body: rule names separated by commas; older spamd ended the line with CRLF, so trailing CR/LF are dropped. */
function parseTests(body: Buffer): string[] {
  let end = body.length;
  while (end > 0 && (body[end - 1] === LF || body[end - 1] === CR)) end--;
  if (end === 0) return [];
  const text = body.subarray(0, end).toString('latin1');
  const tests = text.split(',');
  for (const t of tests) {
    if (!RULE_NAME.test(t)) throw protocolError(`SYMBOLS: rule name ${quoteBytes(Buffer.from(t, 'latin1'))} is not [A-Za-z0-9_]+`);
  }
  return tests;
}
