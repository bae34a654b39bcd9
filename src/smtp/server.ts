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
import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession, type SMTPServerEnvelope } from 'smtp-server';
import type { Listen } from '../config/index.js';
import type { IntakeHandlers, Recipient } from '../local/index.js';
import { addressProblem } from '../mail/address.js';
import { newQueueId, type Envelope } from '../mail/envelope.js';
import { status, type Status } from '../mail/status.js';
import { boundPort, listenOn } from '../net/listen.js';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { patchSmtpServer, type SessionGuard } from './library-patches.js';
import { dataResult, outcomeReply, replyError } from './replies.js';

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

export class Listener {
  readonly server: SMTPServer;
  /** Open connections per client IP address (limits.connections_per_client). */
  private readonly perClient = new Map<string, number>();
  /** The sessions counted in perClient, to be uncounted when they close. */
  private readonly counted = new WeakSet<SMTPServerSession>();

  constructor(readonly kind: 'lmtp' | 'smtp', readonly listen: Listen, private readonly h: IntakeHandlers) {
    patchSmtpServer();
    const c = h.config();
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
      hideSTARTTLS: true,
      hideREQUIRETLS: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
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
    this.server.on('error', (err) => h.log.warn(`${kind} ${listen.spec}: ${err.message}`));
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

  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
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
    const env: Envelope = {
      queueId: t.queueId,
      sender: senderOf(session),
      helo: session.hostNameAppearsAs ?? '',
      clientAddress: session.remoteAddress ?? '',
      protocol: this.kind === 'lmtp' ? 'LMTP' : 'ESMTP',
      arrival: new Date(),
    };
    if (this.kind === 'smtp') return [dataResult(outcomeReply(await this.h.enqueue(env, raw, t.accepted)))];
    const results = await this.h.deliverNow(env, raw, t.accepted);
    return t.accepted.map((a, i) => {
      const s = outcomeReply(results[i] ?? { status: status('4.3.0', 'Temporary internal error') });
      return dataResult(s.code.startsWith('2') ? status(s.code, `<${a.rcpt.address}> ${t.queueId} ${s.text}`) : s);
    });
  }
}
