// The envelope of one message as every floor sees it — intake, the recipient
// layer, the queue and the trace header — so that none of them needs another's
// types (the queue does not import smtp). Also the one maker of queue ids.
//
// Exports: Envelope, Protocol, TlsSession, newQueueId(). Pure but for the
// clock and randomness in newQueueId.
import { randomBytes } from 'node:crypto';

/** How the message reached us, as the Received header's "with" clause says it. */
export type Protocol = 'LMTP' | 'ESMTP' | 'SMTP';

/** The TLS session a message came over (STARTTLS on the SMTP listener), as the log lines print it. */
export interface TlsSession {
  /** Negotiated protocol version, as OpenSSL names it: "TLSv1.3", "TLSv1.2". */
  readonly protocol: string;
  /** OpenSSL's name of the cipher suite, e.g. "TLS_AES_256_GCM_SHA384". */
  readonly cipher: string;
}

export interface Envelope {
  readonly queueId: string;
  /** Envelope sender; "" is the null sender <>. */
  readonly sender: string;
  /** HELO/EHLO/LHLO name the client gave. */
  readonly helo: string;
  /** Client IP address; "" for a unix socket. */
  readonly clientAddress: string;
  readonly protocol: Protocol;
  /** End of DATA (or, for a spooled message, when it was first received). */
  readonly arrival: Date;
  /** Set when the message came over TLS; absent for plaintext (and for spool entries written before it existed). */
  readonly tls?: TlsSession;
}

/**
 * Queue ids: 10+ upper-case hex digits, time-ordered like Postfix's long ids
 * (enough to sort by arrival), random enough to never collide between processes.
 */
export function newQueueId(): string {
  const time = Date.now().toString(16).toUpperCase().padStart(11, '0');
  return `${time}${randomBytes(3).toString('hex').toUpperCase()}`;
}
