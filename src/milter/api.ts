// The milter filter API: what a filter written for mailprocd implements, and
// what the built-in checks (the policy chain at RCPT, the site spam check at
// end of message) implement too — one contract for both, as pymilter gives
// Python. A filter module's default export is a factory; the server calls it
// once per MTA connection, so a filter keeps per-connection state in its own
// fields, and calls the methods it defines in SMTP order.
//
// Exports: MilterFilter, MilterFilterFactory, MilterSession, EomSession,
// ConnectInfo, MilterResult, MilterVerdict, MilterEvent, MILTER_EVENTS,
// eventsOf, verdictOf.
//
// Semantics (the server enforces them; filters only return):
// - Each method returns a verdict or nothing (= continue), or a promise of one.
//   A throw or a rejected promise is the filter's failure: the server answers
//   with the failure action from config (tempfail or continue), never a hang.
// - Several filters on one connection are asked in config order, built-ins
//   first; the first verdict other than continue decides for the event, except
//   accept: a filter that accepts is not asked again for the rest of the
//   message (connection, when it accepts at connect or helo), and the message
//   is accepted for everyone only when every filter has accepted.
// - reject/tempfail at envrcpt refuse that recipient only (as in libmilter);
//   at any other event they refuse the message (or the connection at
//   connect/helo). discard at any event throws the message away after a 250.
// - skip is valid only from body (no more body chunks for this filter);
//   elsewhere it is taken as continue.
// - A reply code and text (MilterVerdict's object form) go to the SMTP client
//   as given: code 4xx with tempfail, 5xx with reject; the enhanced code too.
// - Modifications are available only in eom (EomSession); calling one
//   elsewhere throws a TypeError (a bug in the filter, handled as a failure).
// - Header values and body chunks are the MTA's bytes: raw Buffers, never
//   re-folded or decoded; `value` is a latin1 reading of the same bytes (every
//   byte one char, so it round-trips), for filters that only compare ASCII.

/** The events a filter may handle, in SMTP order; the negotiated protocol steps follow from which ones are defined. */
export const MILTER_EVENTS = [
  'connect', 'helo', 'envfrom', 'envrcpt', 'data', 'header', 'eoh', 'body', 'eom', 'abort', 'close', 'unknown',
] as const;
export type MilterEvent = (typeof MILTER_EVENTS)[number];

export type MilterResult = 'continue' | 'reject' | 'tempfail' | 'discard' | 'accept' | 'skip';

/**
 * What a method returns. A bare result uses the MTA's default reply (Postfix:
 * 550 5.7.1 / 451 4.7.1 "Service unavailable - try again later"); the object
 * form sets it: { result: 'reject', code: '550', xcode: '5.7.1', text: 'No thanks' }.
 * undefined (or returning nothing) is continue.
 */
export type MilterVerdict =
  | MilterResult
  | { readonly result: MilterResult; readonly code?: string; readonly xcode?: string; readonly text?: string }
  | undefined
  | void;

export interface ConnectInfo {
  /** The client's host name as the MTA resolved it ("unknown" or "[192.0.2.1]" when it did not). */
  readonly hostname: string;
  readonly family: 'inet' | 'inet6' | 'unix' | 'unknown';
  /** IP address (inet, inet6) or socket path (unix); "" for unknown. */
  readonly address: string;
  /** TCP port, 0 when not inet. */
  readonly port: number;
}

/** Per-connection view every method gets. */
export interface MilterSession {
  /**
   * The MTA's macros sent so far on this connection, by name without braces
   * for one-letter names and with them otherwise, as Postfix names them:
   * "i" (queue id), "j", "{auth_authen}", "{client_addr}", "{rcpt_addr}", …
   * Later stages overwrite earlier values of the same name.
   */
  macro(name: string): string | undefined;
  /** The recipients accepted so far in this message (addresses without angle brackets), in order. */
  readonly recipients: readonly string[];
  /** The envelope sender of this message ("" for the null sender), once envfrom was seen. */
  readonly sender: string | undefined;
}

/** The session in eom, with the modification actions (libmilter's smfi_* at end of message). */
export interface EomSession extends MilterSession {
  /** Appends a header. value is sent as given: fold it yourself with "\n\t" (a bare LF: the MTA adds the CR, as libmilter's smfi_addheader says). */
  addHeader(name: string, value: string | Buffer): void;
  /** Inserts a header at index (0 = before the first header). */
  insertHeader(index: number, name: string, value: string | Buffer): void;
  /** Changes the index-th (1-based) header named name; value null deletes it. */
  changeHeader(name: string, index: number, value: string | Buffer | null): void;
  /** Adds an envelope recipient, with optional ESMTP arguments ("NOTIFY=NEVER"). */
  addRecipient(address: string, esmtpArgs?: string): void;
  deleteRecipient(address: string): void;
  /** Changes the envelope sender, with optional ESMTP arguments. */
  changeSender(address: string, esmtpArgs?: string): void;
  /** Replaces the body; call it repeatedly to send the new body in pieces (they are concatenated). */
  replaceBody(chunk: string | Buffer): void;
  /** Puts the message on hold in the MTA's quarantine (Postfix: the hold queue) with a reason. */
  quarantine(reason: string): void;
  /** Tells the MTA we are still working (resets its timeout); for long checks. */
  progress(): void;
}

/**
 * One filter instance per MTA connection. Every method is optional; the server
 * asks the MTA not to send the events no filter handles (fewer round trips).
 */
export interface MilterFilter {
  connect?(s: MilterSession, info: ConnectInfo): MilterVerdict | Promise<MilterVerdict>;
  helo?(s: MilterSession, name: string): MilterVerdict | Promise<MilterVerdict>;
  /** sender without angle brackets ("" for <>); args are the ESMTP parameters ("SIZE=123", "BODY=8BITMIME"). */
  envfrom?(s: MilterSession, sender: string, args: readonly string[]): MilterVerdict | Promise<MilterVerdict>;
  /** recipient without angle brackets. */
  envrcpt?(s: MilterSession, recipient: string, args: readonly string[]): MilterVerdict | Promise<MilterVerdict>;
  data?(s: MilterSession): MilterVerdict | Promise<MilterVerdict>;
  /** One header as the MTA has it: raw is the value's bytes (continuation lines included), value their latin1 reading. */
  header?(s: MilterSession, name: string, value: string, raw: Buffer): MilterVerdict | Promise<MilterVerdict>;
  eoh?(s: MilterSession): MilterVerdict | Promise<MilterVerdict>;
  /** One body chunk (the MTA chooses the size, at most 64 KiB), CRLF line ends as the MTA sends them. */
  body?(s: MilterSession, chunk: Buffer): MilterVerdict | Promise<MilterVerdict>;
  eom?(s: EomSession): MilterVerdict | Promise<MilterVerdict>;
  /** The message was aborted (RSET, or an earlier refusal); the connection goes on. No verdict is used. */
  abort?(s: MilterSession): void | Promise<void>;
  /** The connection ended. No verdict is used. */
  close?(s: MilterSession): void | Promise<void>;
  /** An SMTP command the MTA did not know. */
  unknown?(s: MilterSession, command: string): MilterVerdict | Promise<MilterVerdict>;
}

/** A filter module's default export: called once per MTA connection. */
export type MilterFilterFactory = () => MilterFilter;

/** The events a filter defines (methods present on the instance or its prototype chain). */
export function eventsOf(filter: MilterFilter): Set<MilterEvent> {
  const out = new Set<MilterEvent>();
  for (const e of MILTER_EVENTS) if (typeof (filter as Record<string, unknown>)[e] === 'function') out.add(e);
  return out;
}

export interface NormalizedVerdict {
  readonly result: MilterResult;
  readonly code?: string;
  readonly xcode?: string;
  readonly text?: string;
}

const RESULTS: ReadonlySet<string> = new Set<MilterResult>(['continue', 'reject', 'tempfail', 'discard', 'accept', 'skip']);

/**
 * A method's return value as one record; throws a TypeError naming what is
 * wrong for anything else (a bug in the filter: the caller applies the failure
 * action). A code must agree with the result (4xx tempfail, 5xx reject).
 */
export function verdictOf(v: unknown): NormalizedVerdict {
  if (v === undefined || v === null) return { result: 'continue' };
  if (typeof v === 'string') {
    if (!RESULTS.has(v)) throw new TypeError(`milter filter returned "${v}"; expected one of ${[...RESULTS].join(', ')}`);
    return { result: v as MilterResult };
  }
  if (typeof v !== 'object') throw new TypeError(`milter filter returned a ${typeof v}; expected a result name or { result, code, xcode, text }`);
  const o = v as Record<string, unknown>;
  const result = o.result;
  if (typeof result !== 'string' || !RESULTS.has(result)) throw new TypeError(`milter filter returned result ${JSON.stringify(result)}; expected one of ${[...RESULTS].join(', ')}`);
  const code = o.code === undefined ? undefined : String(o.code);
  const xcode = o.xcode === undefined ? undefined : String(o.xcode);
  const text = o.text === undefined ? undefined : String(o.text);
  if (code !== undefined) {
    const want = result === 'reject' ? '5' : result === 'tempfail' ? '4' : undefined;
    if (want === undefined) throw new TypeError(`milter filter set code ${code} with result ${result}: a code goes with reject (5xx) or tempfail (4xx)`);
    if (!/^[45]\d\d$/.test(code) || code[0] !== want) throw new TypeError(`milter filter set code ${code} with result ${result}: expected ${want}xx`);
  }
  if (xcode !== undefined && !/^[45]\.\d{1,3}\.\d{1,3}$/.test(xcode)) throw new TypeError(`milter filter set enhanced code ${xcode}: expected 4.x.x or 5.x.x`);
  if (text !== undefined && /[\r\n\0]/.test(text)) throw new TypeError('milter filter reply text contains CR, LF or NUL');
  return { result: result as MilterResult, code, xcode, text };
}
