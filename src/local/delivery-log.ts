// The one writer of the delivery log line — for LMTP deliveries answered at
// once and for the queue's attempts alike — Postfix style:
//   QUEUEID: to=<alice@example.test>, relay=maildir, delay=0.012,
//            delays=0/0/0.01/0, dsn=2.0.0, status=sent (Saved)
// delay = seconds since arrival; delays = a/b/c/d from the outcome's numeric
// timings (src/mail/outcome.ts), formatted here and nowhere else. The text in
// parentheses is the detail (what the leaves said: paths, owners) when there
// is one: the log is where an administrator reads them, never the client.
// A message that came over TLS adds "tls=TLSv1.3, cipher=TLS_AES_…" after
// dsn= (so readers of Postfix's field order still find theirs); a plaintext
// one adds nothing. The intake line (intake.ts) carries the same two fields.
//
// The same record, when it is final (delivered, or refused for good), goes to
// the decision log (decision-log.ts) for `mailproc rules log`: one writer of
// both, from one outcome record.
//
// The metrics event for the line (src/mail/metrics-events.ts) is raised here
// too, from the same record: the counters and the log never disagree.
//
// Exports: logDelivery, formatSeconds. Never throws (the logger, the decision log and the metrics do not).
import type { Logger } from '../log.js';
import type { TlsSession } from '../mail/envelope.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import type { RecipientOutcome } from '../mail/outcome.js';
import { isTemporary, statusWord, type Status } from '../mail/status.js';
import type { DecisionLog } from './decision-log.js';

/** Seconds as Postfix prints them in delays=: 3 decimals below 10 s, 1 above, trailing zeros dropped. */
export function formatSeconds(ms: number): string {
  return (Math.max(0, ms) / 1000).toFixed(ms < 10_000 ? 3 : 1).replace(/\.?0+$/, '') || '0';
}

export interface DeliveryLogEntry {
  readonly queueId: string;
  readonly to: string;
  /** The address it was expanded from (an alias list), Postfix's orig_to=. */
  readonly origTo?: string;
  readonly outcome: RecipientOutcome;
  /** The status finally recorded, when the queue changed it (a temporary failure past the lifetime: 5.4.7). */
  readonly final?: Status;
  readonly arrival: Date;
  /** The TLS session the message came over (Envelope.tls); absent for plaintext. */
  readonly tls?: TlsSession;
  /** For tests; default Date.now(). */
  readonly now?: number;
}

export function logDelivery(log: Logger, e: DeliveryLogEntry, decisions?: DecisionLog, metrics?: MetricsEvents): void {
  const s = e.final ?? e.outcome.status;
  const decision = e.outcome.decision;
  if (decisions !== undefined && decision !== undefined && !isTemporary(s)) void decisions.record(e.queueId, e.to, s.code, decision, e.now !== undefined ? new Date(e.now) : undefined);
  const text = s === e.outcome.status ? e.outcome.detail ?? s.text : s.text;
  const t = e.outcome.timing;
  const delays = t === undefined ? undefined
    : `${formatSeconds(t.beforeMs)}/${formatSeconds(t.slotMs)}/${formatSeconds(t.transferMs)}/${formatSeconds(t.workMs)}`;
  const delayMs = Math.max(0, (e.now ?? Date.now()) - e.arrival.getTime());
  const delay = (delayMs / 1000).toFixed(3);
  metrics?.recipientLogged({ code: s.code, relay: e.outcome.relay, timing: t, delayMs });
  log.info(text, { to: e.to, ...(e.origTo !== undefined ? { orig_to: e.origTo } : {}), relay: e.outcome.relay, delay, delays, dsn: s.code, ...tlsFields(e.tls), status: statusWord(s) }, e.queueId);
}

/** The log fields of a TLS session: none for plaintext. The intake line uses them too. */
export function tlsFields(tls: TlsSession | undefined): { tls?: string; cipher?: string } {
  return tls === undefined ? {} : { tls: tls.protocol, cipher: tls.cipher };
}
