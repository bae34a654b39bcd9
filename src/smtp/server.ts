// LMTP and SMTP listeners on smtp-server. Knows the protocols, not mailboxes:
// RCPT is handed to the recipient layer (src/local: 550 5.1.1 for nobody's
// address, 552 5.2.3 over a per-address maxsize), DATA is read whole and
// handed on:
//   LMTP: one reply per accepted RCPT in RCPT order — also for a duplicate
//         RCPT, which smtp-server would otherwise collapse and answer one
//         reply short (RFC 2033 §4.2); local/intake.ts delivers it once.
//   SMTP: one reply, 250 only once the message is durable (local/intake.ts).
// Every reply goes through replies.ts; no error reaches smtp-server without a
// responseCode, and a failure's text that names paths or users (a leaf's, the
// spool's) reaches the log only: the client gets the code's standard text.
// Only <CRLF>.<CRLF> ends DATA (input-stream.ts); bare LF and bare CR stay
// message content.
// Abuse limits (limits.*): connections_per_client per IP address (421 4.7.0
// at connect; unix socket clients are not counted), command_timeout and
// data_min_rate (input-stream.ts), hard_error_limit (library-patches.ts).
// MAIL/RCPT addresses must be valid UTF-8 (501 5.1.7 / 553 5.1.3), and a
// non-ASCII local part needs SMTPUTF8 (553 5.6.7, as Postfix answers).
// STARTTLS (smtp.tls, SMTP only; LMTP never offers it): announced unless
// off; with required, MAIL before it gets 530 5.7.0. The certificate is
// swapped on SIGHUP (reloadTls) through smtp-server's updateSecureContext:
// the listening socket stays, sessions already in TLS keep theirs, the next
// STARTTLS gets the new one; a bad pair is logged and the old one stays. The
// negotiated protocol and cipher travel in the Envelope (tls) to the log lines.
import { createSecureContext, type TLSSocket } from 'node:tls';
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession, type SMTPServerEnvelope } from 'smtp-server';
import { readTlsPair, type Listen, type TlsPair } from '../config/index.js';
import type { IntakeHandlers, Recipient } from '../local/index.js';
import { addressProblem } from '../mail/address.js';
import { newQueueId, type Envelope, type TlsSession } from '../mail/envelope.js';
import { status, type Status } from '../mail/status.js';
import { boundPort, listenOn } from '../net/listen.js';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { patchSmtpServer, type SessionGuard } from './library-patches.js';
import { dataResult, outcomeReply, replyError } from './replies.js';
import { TLS_POLICY } from './tls.js';

export type { IntakeHandlers } from '../local/index.js';

interface Transaction {
  readonly queueId: string;
  readonly accepted: Recipient[];
}

// One per envelope object: smtp-server makes a new envelope per transaction,
// so RSET and a finished DATA start afresh without any bookkeeping here.
const transactions = new WeakMap<SMTPServerEnvelope, Transaction>();

function transactionOf(session: SMTPServerSession): Transaction {
  let t = transactions.get(session.envelope);
  if (!t) {
    t = { queueId: newQueueId(), accepted: [] };
    transactions.set(session.envelope, t);
  }
  return t;
}

function senderOf(session: SMTPServerSession): string {
  const from = session.envelope.mailFrom;
  return from === false ? '' : from.address;
}

/** The whole message; past `limit` bytes the rest is read and dropped (the reply will be 552). */
function readAll(stream: SMTPServerDataStream, limit: number): Promise<Buffer | Error> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    stream.on('data', (c: Buffer) => {
      bytes += c.length;
      if (bytes <= limit) chunks.push(c);
    });
    stream.on('error', (err: Error) => resolve(err));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
  });
}

/**
 * A listener error as a log line. A failed TLS handshake says who and
 * OpenSSL's reason ("unsupported protocol", "no shared cipher"), as Postfix's
 * "SSL_accept error from …" does, not OpenSSL's whole error string.
 */
function describeServerError(kind: string, spec: string, err: Error & { remoteAddress?: string; meta?: { message?: string } }): string {
  const text = err.meta?.message ?? err.message;
  const reason = /SSL routines:[^:]*:([^:]+):/.exec(text)?.[1];
  if (reason === undefined) return `${kind} ${spec}: ${err.message}`;
  return `${kind} client ${err.remoteAddress ?? spec}: TLS handshake failed: ${reason}`;
}

export class Listener {
  readonly server: SMTPServer;
  /** Open connections per client IP address (limits.connections_per_client). */
  private readonly perClient = new Map<string, number>();
  /** The sessions counted in perClient, to be uncounted when they close. */
  private readonly counted = new WeakSet<SMTPServerSession>();
  /** What each session's STARTTLS negotiated (onSecure); a plaintext session has no entry. */
  private readonly tlsSessions = new WeakMap<SMTPServerSession, TlsSession>();
  /** STARTTLS is announced: fixed at start (smtp.tls off or not), whatever a reload says. */
  readonly tlsOffered: boolean;
  /** The certificate and key in use, when tlsOffered. */
  private tlsPair: TlsPair | undefined;

  constructor(readonly kind: 'lmtp' | 'smtp', readonly listen: Listen, private readonly h: IntakeHandlers) {
    patchSmtpServer();
    const c = h.config();
    this.tlsOffered = kind === 'smtp' && c.smtp.tls !== 'off';
    if (this.tlsOffered) {
      // loadConfig has checked the pair; this reads it again (it may have changed since), for use.
      const pair = readTlsPair(c.smtp.tls_cert ?? '', c.smtp.tls_key ?? '');
      if ('problems' in pair) throw new Error(pair.problems.join('; '));
      this.tlsPair = pair;
    }
    const guard: SessionGuard = {
      limits: () => {
        const l = h.config().limits;
        return { commandTimeoutMs: l.command_timeout, dataMinRate: l.data_min_rate, hardErrorLimit: l.hard_error_limit };
      },
      ended: (address, why) => h.log.warn(`${kind} client ${address || listen.spec}: ${why}; connection closed`),
    };
    this.server = new SMTPServer({
      lmtp: kind === 'lmtp',
      name: c.hostname,
      banner: 'mailprocd',
      size: c.limits.message_size,
      hideSize: false,
      hidePIPELINING: false,
      hide8BITMIME: false,
      hideENHANCEDSTATUSCODES: false,
      hideDSN: true,
      hideSTARTTLS: !this.tlsOffered,
      hideREQUIRETLS: true,
      disabledCommands: this.tlsOffered ? ['AUTH'] : ['AUTH', 'STARTTLS'],
      ...(this.tlsPair !== undefined ? { ...TLS_POLICY, cert: this.tlsPair.cert, key: this.tlsPair.key } : {}),
      authOptional: true,
      disableReverseLookup: true, // no DNS from a delivery agent
      maxClients: c.limits.connections,
      maxRecipients: c.limits.recipients,
      socketTimeout: c.limits.client_timeout,
      // A backstop only: close() ends every session within limits.shutdown_grace itself.
      closeTimeout: c.limits.shutdown_grace + 5_000,
      logger: false,
      // Read by library-patches.ts (not an smtp-server option).
      ...{ mailprocd: guard },
      onConnect: (session, cb) => this.onConnect(session, cb),
      onSecure: (socket, session, cb) => this.onSecure(socket as TLSSocket, session, cb),
      onClose: (session) => this.onClose(session),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => {
        this.onData(stream, session).then((r) => cb(null, r), (err: unknown) => {
          h.log.error(`${kind} DATA handler failed: ${(err as Error).stack ?? String(err)}`);
          const e = replyError(status('4.3.0', 'Temporary internal error'));
          cb(null, kind === 'lmtp' ? transactionOf(session).accepted.map(() => e) : [e]);
        });
      },
    });
    // smtp-server reports a failed STARTTLS handshake once per TLS socket event ('error', '_tlsError'): one line each.
    const reported = new WeakSet<Error>();
    this.server.on('error', (err) => {
      if (reported.has(err)) return;
      reported.add(err);
      h.log.warn(describeServerError(kind, listen.spec, err));
    });
    if (this.tlsPair !== undefined) this.logCertificate('STARTTLS certificate', this.tlsPair);
  }

  /**
   * SIGHUP, after the configuration was reloaded: re-reads smtp.tls_cert and
   * smtp.tls_key and makes them the certificate of the next STARTTLS. A pair
   * that cannot be read or used is logged (naming key and file) and the one
   * in use stays; the listener never lacks a working context.
   */
  reloadTls(): void {
    if (this.kind !== 'smtp') return;
    const c = this.h.config().smtp;
    const spec = this.listen.spec;
    if (!this.tlsOffered || this.tlsPair === undefined) {
      if (c.tls !== 'off') this.h.log.warn(`smtp ${spec}: smtp.tls was off at start; STARTTLS is offered after a restart only`);
      return;
    }
    if (c.tls === 'off' || c.tls_cert === undefined || c.tls_key === undefined) {
      this.h.log.warn(`smtp ${spec}: smtp.tls is now off; STARTTLS stays offered until a restart`);
      return;
    }
    const pair = readTlsPair(c.tls_cert, c.tls_key);
    if ('problems' in pair) {
      for (const p of pair.problems) this.h.log.error(`smtp ${spec}: keeping the STARTTLS certificate in use (SHA256 ${this.tlsPair.fingerprint}): ${p}`);
      return;
    }
    if (pair.cert.equals(this.tlsPair.cert) && pair.key.equals(this.tlsPair.key)) return;
    const before = { context: this.server.secureContext, cert: this.server.options.cert, key: this.server.options.key };
    try {
      // With our policy, as updateSecureContext will build it: a pair this refuses must not reach it.
      createSecureContext({ ...TLS_POLICY, cert: pair.cert, key: pair.key });
      this.server.updateSecureContext({ cert: pair.cert, key: pair.key });
    } catch (err) {
      // updateSecureContext empties its context map before it builds the new one: put the old back.
      Object.assign(this.server.options, { cert: before.cert, key: before.key });
      this.server.secureContext = before.context;
      this.h.log.error(`smtp ${spec}: keeping the STARTTLS certificate in use (SHA256 ${this.tlsPair.fingerprint}): smtp.tls_cert: ${c.tls_cert} with ${c.tls_key} is refused (${(err as Error).message})`);
      return;
    }
    this.tlsPair = pair;
    this.logCertificate('STARTTLS certificate reloaded', pair);
  }

  private logCertificate(what: string, pair: TlsPair): void {
    const c = this.h.config().smtp;
    this.h.log.info(`smtp ${this.listen.spec}: ${what} ${c.tls_cert ?? ''} (SHA256 ${pair.fingerprint}, valid until ${pair.validTo}), key ${c.tls_key ?? ''}, smtp.tls ${c.tls}`);
  }

  async start(): Promise<void> {
    await listenOn(this.server.server, this.listen, this.h.config()[this.kind].socket, `${this.kind}.socket`);
  }

  /** The bound TCP port (tests listen on port 0). */
  port(): number {
    return boundPort(this.server.server);
  }

  /**
   * Stops accepting. A session between transactions (Postfix keeps idle LMTP
   * connections cached) gets 421 4.3.2 at once; one in a transaction — from
   * MAIL FROM to the reply after DATA, delivery included — may finish it
   * within limits.shutdown_grace and gets 421 4.3.2 then. Never a 250 for a
   * message that was not stored: a reply the delivery gives after the 421 is
   * not sent, and the client retries.
   */
  close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const goodbye = `4.3.2 ${this.h.config().hostname} shutting down, try again later`;
    // A connection not yet greeted has no envelope yet: it is between transactions too.
    const inTransaction = (c: SMTPConnection): boolean => Boolean((c.session.envelope as SMTPServerEnvelope | undefined)?.mailFrom);
    for (const c of this.server.connections) if (!inTransaction(c)) c.send(421, goodbye);
    const timer = setTimeout(() => {
      for (const c of this.server.connections) c.send(421, goodbye);
    }, this.h.config().limits.shutdown_grace);
    return closed.finally(() => clearTimeout(timer));
  }

  /** Postfix anvil's connection count: one IP address may hold limits.connections_per_client sessions. */
  private onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const ip = session.remoteAddress;
    const limit = this.h.config().limits.connections_per_client;
    if (!ip || limit === 0) return cb(); // a unix socket client: the socket's mode decides who connects
    const n = (this.perClient.get(ip) ?? 0) + 1;
    if (n > limit) {
      this.h.log.warn(`${this.kind} client ${ip}: more than ${limit} connections (limits.connections_per_client); refused`);
      this.h.metrics?.connectionRefused(this.kind, 'connections_per_client');
      return cb(replyError(status('4.7.0', `${this.h.config().hostname} Error: too many connections from ${ip}`, 421)));
    }
    this.perClient.set(ip, n);
    this.counted.add(session);
    cb();
  }

  private onClose(session: SMTPServerSession): void {
    if (!this.counted.delete(session)) return;
    const ip = session.remoteAddress;
    const n = (this.perClient.get(ip) ?? 1) - 1;
    if (n > 0) this.perClient.set(ip, n);
    else this.perClient.delete(ip);
  }

  /** After the STARTTLS handshake: what was negotiated, for the session's messages and the log. */
  private onSecure(socket: TLSSocket, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const t: TlsSession = { protocol: socket.getProtocol() ?? 'unknown', cipher: socket.getCipher().name };
    this.tlsSessions.set(session, t);
    this.h.log.info(`${this.kind} client ${session.remoteAddress || this.listen.spec}: TLS established: ${t.protocol} with cipher ${t.cipher}`);
    cb();
  }

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    // smtp.tls required (read afresh: a reload may switch optional <-> required). The session goes on.
    if (this.tlsOffered && !session.secure && this.h.config().smtp.tls === 'required') {
      return cb(replyError(status('5.7.0', 'Must issue a STARTTLS command first', 530)));
    }
    const problem = addressProblem(address.address, session.envelope.smtpUtf8 === true);
    if (problem === 'invalid-utf8') return cb(replyError(status('5.1.7', 'Bad sender address syntax (not valid UTF-8)', 501)));
    if (problem === 'needs-smtputf8') return cb(replyError(status('5.6.7', 'Must declare SMTPUTF8 to send unicode address', 553)));
    cb();
  }

  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const problem = addressProblem(address.address, session.envelope.smtpUtf8 === true);
    if (problem === 'invalid-utf8') return cb(replyError(status('5.1.3', 'Bad destination mailbox address syntax (not valid UTF-8)', 553)));
    if (problem === 'needs-smtputf8') return cb(replyError(status('5.6.7', 'Must declare SMTPUTF8 to send unicode address', 553)));
    const from = session.envelope.mailFrom;
    const declared = from === false || from.args === false ? NaN : Number(from.args.SIZE);
    const r = this.h.acceptRecipient(address.address, Number.isFinite(declared) ? declared : undefined);
    if ('code' in r) return cb(replyError(r));
    transactionOf(session).accepted.push(r);
    cb();
  }

  private async onData(stream: SMTPServerDataStream, session: SMTPServerSession): Promise<(string | Error)[]> {
    const t = transactionOf(session);
    const raw = await readAll(stream, this.h.config().limits.message_size);
    const each = (s: Status): (string | Error)[] => (this.kind === 'lmtp' ? t.accepted.map(() => dataResult(s)) : [dataResult(s)]);
    if (raw instanceof Error) return each(status('4.3.0', `Error reading message: ${raw.message}`));
    if (stream.sizeExceeded) {
      return each(status('5.3.4', `Message size exceeds fixed maximum message size ${this.h.config().limits.message_size}`, 552));
    }
    const tls = this.tlsSessions.get(session);
    const env: Envelope = {
      queueId: t.queueId,
      sender: senderOf(session),
      helo: session.hostNameAppearsAs ?? '',
      clientAddress: session.remoteAddress ?? '',
      protocol: this.kind === 'lmtp' ? 'LMTP' : 'ESMTP',
      arrival: new Date(),
      ...(tls !== undefined ? { tls } : {}),
    };
    if (this.kind === 'smtp') return [dataResult(outcomeReply(await this.h.enqueue(env, raw, t.accepted)))];
    const results = await this.h.deliverNow(env, raw, t.accepted);
    return t.accepted.map((a, i) => {
      const s = outcomeReply(results[i] ?? { status: status('4.3.0', 'Temporary internal error') });
      return dataResult(s.code.startsWith('2') ? status(s.code, `<${a.rcpt.address}> ${t.queueId} ${s.text}`) : s);
    });
  }
}
