// Trace headers, as Postfix local(8) writes them: Return-Path (the envelope
// sender), Delivered-To (the recipient; also our loop marker) and one
// Received. Produced as LF-terminated lines to prepend to the stored message
// (or, without Return-Path, to a copy sent on). A message that came over TLS
// says so in its Received, as Postfix's does: "(using TLSv1.3 with cipher …)",
// and "with ESMTPS" (RFC 3848).
// Values come from the envelope, which smtp-server has parsed; control
// characters are stripped so a hostile HELO cannot inject header lines.
import type { Protocol, TlsSession } from './envelope.js';

export interface TraceInfo {
  readonly sender: string;
  readonly recipient: string;
  /** HELO/LHLO name the client gave. */
  readonly helo: string;
  readonly clientAddress: string;
  readonly protocol: Protocol;
  readonly hostname: string;
  readonly queueId: string;
  readonly arrival: Date;
  readonly tls?: TlsSession;
}

// Control characters are exactly what must not reach a header line.
// eslint-disable-next-line no-control-regex
const clean = (s: string): string => s.replace(/[\x00-\x1f\x7f]+/g, ' ');

/** RFC 5322 date-time, e.g. "Sat, 21 Nov 2026 09:30:25 +0000". */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

function transit(t: TraceInfo): string {
  const using = t.tls === undefined ? '' : `\t(using ${clean(t.tls.protocol)} with cipher ${clean(t.tls.cipher)})\n`;
  const protocol = t.tls !== undefined && t.protocol === 'ESMTP' ? 'ESMTPS' : t.protocol;
  const received =
    `Received: from ${clean(t.helo) || 'unknown'} (${clean(t.clientAddress) || 'localhost'})\n` + using +
    `\tby ${clean(t.hostname)} (mailprocd) with ${protocol} id ${t.queueId}\n` +
    `\tfor <${clean(t.recipient)}>; ${rfc5322Date(t.arrival)}\n`;
  return `Delivered-To: ${clean(t.recipient)}\n${received}`;
}

/** For a copy stored here (a file or a pipe): Return-Path, Delivered-To, Received. */
export function traceHeader(t: TraceInfo): Buffer {
  return Buffer.from(`Return-Path: <${clean(t.sender)}>\n${transit(t)}`, 'utf8');
}

/**
 * For a copy sent on (a forward, a list manager): Delivered-To — the loop
 * marker another hop brings back to us — and Received, without Return-Path,
 * which only the final delivery writes (RFC 5321 §4.4).
 */
export function relayTraceHeader(t: TraceInfo): Buffer {
  return Buffer.from(transit(t), 'utf8');
}
