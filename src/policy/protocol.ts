// The Postfix policy delegation wire format (SMTPD_POLICY_README): the one
// parser for it. A request is "name=value" lines ended by an empty line; the
// reply is "action=…" and an empty line. Pure, no I/O: bytes in, typed items
// out, incrementally, so a request may arrive in any number of pieces (down to
// one byte at a time) and many requests may arrive in one piece.
//
// Exports: RequestReader (incremental parser), ReadItem, formatReply,
// policyRequest (a PolicyRequest from plain attributes, for callers and tests).
//
// Failure contract: push() never throws. A line without "=", an empty
// request, or a request whose "request" attribute is not smtpd_access_policy
// is reported as a `malformed` item at its blank line, so the caller can
// answer DUNNO and stay in step with the client. A request larger than the
// limit is reported once as `oversized` and the reader stops: there is no way
// back into step short of reading unbounded input, so the caller closes.
//
// Lines may end in LF (Postfix) or CRLF (a person with telnet). Values are
// read as UTF-8 (SMTPUTF8 addresses); bytes are counted as bytes. A repeated
// attribute: the last one counts.
//
// A request is kept as its own text and an attribute is found when asked for
// (get), not split into a Map up front: plugins read a handful of Postfix's
// ~27 attributes, and the 54 strings and the Map of an eager split were most
// of the garbage per request — young-generation collections that showed in
// the policy bench's p99.
import type { PolicyAction, PolicyRequest } from './types.js';

export type ReadItem =
  | { readonly kind: 'request'; readonly request: PolicyRequest }
  | { readonly kind: 'malformed'; readonly reason: string }
  | { readonly kind: 'oversized'; readonly limit: number };

const NONE: readonly ReadItem[] = Object.freeze([]);
const HIGH_BYTE = /[\x80-\xff]/;
const LF = 10;
const CR = 13;
const EQUALS = 61;

function utf8(latin1: string): string {
  return HIGH_BYTE.test(latin1) ? Buffer.from(latin1, 'latin1').toString('utf8') : latin1;
}

/** "\nNAME=" per attribute name asked for; names come from code, so this stays small, but it is bounded anyway. */
const needles = new Map<string, string>();
function needle(name: string): string {
  let n = needles.get(name);
  if (n === undefined) {
    n = `\n${name}=`;
    if (needles.size < 256) needles.set(name, n);
  }
  return n;
}

/**
 * One request as received: its lines, latin1 (one char per byte), each ended
 * by LF or CRLF, the blank line not included. Every line has a non-empty name
 * and an "=" (the reader checked).
 */
class WireRequest implements PolicyRequest {
  private map: Map<string, string> | undefined;

  constructor(
    private readonly text: string,
    private readonly high: boolean,
  ) {}

  get(name: string): string {
    const t = this.text;
    const at = t.lastIndexOf(needle(name));
    let start: number;
    if (at >= 0) start = at + name.length + 2;
    else if (t.startsWith(name) && t.charCodeAt(name.length) === EQUALS) start = name.length + 1;
    else return '';
    let end = t.indexOf('\n', start);
    if (end > start && t.charCodeAt(end - 1) === CR) end--;
    const value = t.slice(start, end);
    return this.high ? utf8(value) : value;
  }

  get attrs(): ReadonlyMap<string, string> {
    if (this.map !== undefined) return this.map;
    const map = new Map<string, string>();
    const t = this.text;
    for (let start = 0; start < t.length; ) {
      const nl = t.indexOf('\n', start);
      const end = nl > start && t.charCodeAt(nl - 1) === CR ? nl - 1 : nl;
      const eq = t.indexOf('=', start);
      const name = t.slice(start, eq);
      const value = t.slice(eq + 1, end);
      map.set(this.high ? utf8(name) : name, this.high ? utf8(value) : value);
      start = nl + 1;
    }
    this.map = map;
    return map;
  }
}

class AttributeRequest implements PolicyRequest {
  constructor(readonly attrs: ReadonlyMap<string, string>) {}
  get(name: string): string {
    return this.attrs.get(name) ?? '';
  }
}

/** A PolicyRequest from attributes, as the reader would have built it. */
export function policyRequest(attrs: Record<string, string> | ReadonlyMap<string, string>): PolicyRequest {
  return new AttributeRequest(attrs instanceof Map ? attrs : new Map(Object.entries(attrs)));
}

/** "action=ACTION\n\n": one string, so the caller writes a reply in one piece or not at all. */
export function formatReply(action: PolicyAction): string {
  return `action=${action}\n\n`;
}

function snippet(s: string): string {
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}…` : s);
}

export class RequestReader {
  /** Complete lines of the current request, not yet ended by its blank line (latin1, one char per byte). */
  private head = '';
  /** The unfinished last line. */
  private partial = '';
  private lines = 0;
  private problem: string | undefined;
  private stopped = false;

  constructor(private readonly maxBytes: number) {}

  /** True while part of a request has been read but not its blank line. */
  get inRequest(): boolean {
    return this.head.length > 0 || this.partial.length > 0;
  }

  push(chunk: Buffer): readonly ReadItem[] {
    if (this.stopped) return NONE;
    // latin1 maps each byte to one char: byte counts stay exact and a UTF-8
    // sequence split across chunks is put back together before it is decoded.
    // Pieces without a line end are only appended (V8 joins them lazily), so
    // a request dribbled in one byte at a time costs linear time, not quadratic.
    if (chunk.indexOf(LF) < 0) {
      this.partial += chunk.toString('latin1');
      return this.head.length + this.partial.length > this.maxBytes ? this.overflow(undefined) : NONE;
    }
    const text = this.partial === '' ? chunk.toString('latin1') : this.partial + chunk.toString('latin1');
    let out: ReadItem[] | undefined;
    let first = 0; // where the current request's lines in text begin
    let start = 0; // the current line
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      if (this.head.length + nl + 1 - first > this.maxBytes) return this.overflow(out);
      const end = nl > start && text.charCodeAt(nl - 1) === CR ? nl - 1 : nl;
      if (end === start) {
        (out ??= []).push(this.finish(this.head === '' ? text.slice(first, start) : this.head + text.slice(first, start)));
        this.head = '';
        first = nl + 1;
      } else {
        this.checkLine(text, start, end);
      }
      start = nl + 1;
    }
    if (first < start) this.head += text.slice(first, start);
    this.partial = start === 0 ? text : text.slice(start);
    if (this.head.length + this.partial.length > this.maxBytes) return this.overflow(out);
    return out ?? NONE;
  }

  private overflow(out: ReadItem[] | undefined): readonly ReadItem[] {
    this.stopped = true;
    this.head = '';
    this.partial = '';
    return [...(out ?? []), { kind: 'oversized', limit: this.maxBytes }];
  }

  private checkLine(text: string, start: number, end: number): void {
    this.lines++;
    if (this.problem !== undefined) return;
    const eq = text.indexOf('=', start);
    if (eq < 0 || eq >= end) this.problem = `line ${this.lines} has no "=": ${snippet(utf8(text.slice(start, end)))}`;
    else if (eq === start) this.problem = `line ${this.lines} has an empty attribute name`;
  }

  /** A complete request: its lines, each with its line end, without the blank line. */
  private finish(body: string): ReadItem {
    const problem = this.problem;
    const lines = this.lines;
    this.problem = undefined;
    this.lines = 0;
    if (problem !== undefined) return { kind: 'malformed', reason: problem };
    if (lines === 0) return { kind: 'malformed', reason: 'empty request (a blank line with no attributes before it)' };
    const request = new WireRequest(body, HIGH_BYTE.test(body));
    const type = request.get('request');
    if (type !== 'smtpd_access_policy') {
      return { kind: 'malformed', reason: request.attrs.has('request') ? `unknown request type ${snippet(type)}` : 'no "request" attribute' };
    }
    return { kind: 'request', request };
  }
}
