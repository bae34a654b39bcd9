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
// read as UTF-8 (SMTPUTF8 addresses); bytes are counted as bytes.
import type { PolicyAction, PolicyRequest } from './types.js';

export type ReadItem =
  | { readonly kind: 'request'; readonly request: PolicyRequest }
  | { readonly kind: 'malformed'; readonly reason: string }
  | { readonly kind: 'oversized'; readonly limit: number };

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

const NONE: readonly ReadItem[] = Object.freeze([]);
const HIGH_BYTE = /[\x80-\xff]/;
const CR = 13;

/** "action=ACTION\n\n": one string, so the caller writes a reply in one piece or not at all. */
export function formatReply(action: PolicyAction): string {
  return `action=${action}\n\n`;
}

function snippet(s: string): string {
  return JSON.stringify(s.length > 60 ? `${s.slice(0, 60)}…` : s);
}

function utf8(latin1: string): string {
  return HIGH_BYTE.test(latin1) ? Buffer.from(latin1, 'latin1').toString('utf8') : latin1;
}

export class RequestReader {
  /** The unfinished last line, one char per byte (latin1). */
  private partial = '';
  private attrs = new Map<string, string>();
  /** Bytes of the current request in complete lines. */
  private bytes = 0;
  private lines = 0;
  private problem: string | undefined;
  private stopped = false;

  constructor(private readonly maxBytes: number) {}

  /** True while part of a request has been read but not its blank line. */
  get inRequest(): boolean {
    return this.bytes > 0 || this.partial.length > 0;
  }

  push(chunk: Buffer): readonly ReadItem[] {
    if (this.stopped) return NONE;
    // latin1 maps each byte to one char: byte counts stay exact and a UTF-8
    // sequence split across chunks is put back together before it is decoded.
    const text = this.partial === '' ? chunk.toString('latin1') : this.partial + chunk.toString('latin1');
    const high = HIGH_BYTE.test(text);
    let out: ReadItem[] | undefined;
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      this.bytes += nl - start + 1;
      if (this.bytes > this.maxBytes) return this.overflow(out);
      const end = nl > start && text.charCodeAt(nl - 1) === CR ? nl - 1 : nl;
      if (end === start) (out ??= []).push(this.finish());
      else this.addLine(text, start, end, high);
      start = nl + 1;
    }
    this.partial = start === 0 ? text : text.slice(start);
    if (this.bytes + this.partial.length > this.maxBytes) return this.overflow(out);
    return out ?? NONE;
  }

  private overflow(out: ReadItem[] | undefined): readonly ReadItem[] {
    this.stopped = true;
    this.partial = '';
    this.attrs = new Map();
    return [...(out ?? []), { kind: 'oversized', limit: this.maxBytes }];
  }

  private addLine(text: string, start: number, end: number, high: boolean): void {
    this.lines++;
    if (this.problem !== undefined) return;
    const eq = text.indexOf('=', start);
    if (eq < 0 || eq >= end) {
      this.problem = `line ${this.lines} has no "=": ${snippet(utf8(text.slice(start, end)))}`;
    } else if (eq === start) {
      this.problem = `line ${this.lines} has an empty attribute name`;
    } else {
      const name = text.slice(start, eq);
      const value = text.slice(eq + 1, end);
      this.attrs.set(high ? utf8(name) : name, high ? utf8(value) : value);
    }
  }

  private finish(): ReadItem {
    const attrs = this.attrs;
    const problem = this.problem;
    this.attrs = new Map();
    this.problem = undefined;
    this.bytes = 0;
    this.lines = 0;
    if (problem !== undefined) return { kind: 'malformed', reason: problem };
    if (attrs.size === 0) return { kind: 'malformed', reason: 'empty request (a blank line with no attributes before it)' };
    const type = attrs.get('request');
    if (type !== 'smtpd_access_policy') {
      return { kind: 'malformed', reason: type === undefined ? 'no "request" attribute' : `unknown request type ${snippet(type)}` };
    }
    return { kind: 'request', request: new AttributeRequest(attrs) };
  }
}
