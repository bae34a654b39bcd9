// LMTP and SMTP listeners on smtp-server. Knows the protocols, not mailboxes:
// RCPT is decided against the tables (550 5.1.1 for nobody's address, 552
// 5.2.3 over a per-address maxsize), DATA is read whole and handed on:
//   LMTP: delivered at once, one reply per accepted RCPT in RCPT order — also
//         for a duplicate RCPT, which smtp-server would otherwise collapse and
//         answer one reply short (RFC 2033 §4.2); a duplicate is delivered once
//         and gets a copy of the first one's reply, as Dovecot does.
//   SMTP: written to the durable spool (fsync) before the 250; the queue
//         delivers it afterwards.
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
import type { Config, Listen } from '../config/index.js';
import type { Logger } from '../log.js';
import { addressProblem, parseRecipient, type RecipientAddress } from '../mail/address.js';
import { hopCount, parseMessage, type ParsedMessage } from '../mail/message.js';
import { isSuccess, status, statusWord, type Status } from '../mail/status.js';
import type { TraceInfo } from '../mail/trace.js';
import { addressSizeLimit } from '../classify/plan.js';
import { boundPort, listenOn } from '../net/listen.js';
import { newQueueId } from '../queue/queue-id.js';
import type { RecipientOutcome, ResolvedRecipient } from '../workers/dispatch.js';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { patchSmtpServer, type SessionGuard } from './library-patches.js';
import { clientStatus, dataResult, outcomeReply, replyError } from './replies.js';

export interface AcceptedRecipient {
  readonly rcpt: RecipientAddress;
  readonly resolved: ResolvedRecipient;
}

export interface IntakeEnvelope {
  readonly queueId: string;
  readonly sender: string;
  readonly helo: string;
  readonly clientAddress: string;
  readonly protocol: TraceInfo['protocol'];
  readonly arrival: Date;
}

export interface IntakeHandlers {
  readonly config: () => Config;
  readonly log: Logger;
  /** Table lookup; undefined = nobody owns the address. */
  readonly resolve: (rcpt: RecipientAddress) => ResolvedRecipient | undefined;
  /** LMTP: deliver now. */
  readonly deliver: (env: IntakeEnvelope, message: ParsedMessage, r: AcceptedRecipient) => Promise<RecipientOutcome>;
  /** SMTP: make durable; 2.x.x only once fsynced. */
  readonly enqueue: (env: IntakeEnvelope, raw: Buffer, recipients: readonly AcceptedRecipient[]) => Promise<Status>;
  /**
   * LMTP past lmtp.window: spool the message durably for the recipients whose
   * delivery is still running and let the queue record their outcomes. 2.x.x
   * (then our reply is 250) only once fsynced.
   */
  readonly adopt: (env: IntakeEnvelope, raw: Buffer, running: readonly { address: string; outcome: Promise<RecipientOutcome> }[]) => Promise<Status>;
}

interface Transaction {
  readonly queueId: string;
  readonly accepted: AcceptedRecipient[];
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
    const c = this.h.config();
    const problem = addressProblem(address.address, session.envelope.smtpUtf8 === true);
    if (problem === 'invalid-utf8') return cb(replyError(status('5.1.3', 'Bad destination mailbox address syntax (not valid UTF-8)', 553)));
    if (problem === 'needs-smtputf8') return cb(replyError(status('5.6.7', 'Must declare SMTPUTF8 to send unicode address', 553)));
    const rcpt = parseRecipient(address.address, c.delivery.recipient_delimiter);
    let resolved: ResolvedRecipient | undefined;
    try {
      resolved = this.h.resolve(rcpt);
    } catch (err) {
      this.h.log.error(`table lookup for ${rcpt.address} failed: ${(err as Error).message}`);
      return cb(replyError(status('4.3.0', `<${rcpt.address}>: Temporary lookup failure`)));
    }
    if (resolved === undefined) {
      return cb(replyError(status('5.1.1', `<${rcpt.address}>: Recipient address rejected: User unknown`)));
    }
    const limit = addressSizeLimit(resolved.rules);
    const from = session.envelope.mailFrom;
    const declared = from === false || from.args === false ? NaN : Number(from.args.SIZE);
    if (limit !== undefined && Number.isFinite(declared) && declared > limit) {
      return cb(replyError(status('5.2.3', `<${rcpt.address}>: Message too large for this recipient (limit ${limit} bytes)`, 552)));
    }
    transactionOf(session).accepted.push({ rcpt, resolved });
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
    const env: IntakeEnvelope = {
      queueId: t.queueId,
      sender: senderOf(session),
      helo: session.hostNameAppearsAs ?? '',
      clientAddress: session.remoteAddress ?? '',
      protocol: this.kind === 'lmtp' ? 'LMTP' : 'ESMTP',
      arrival: new Date(),
    };
    this.h.log.info('', { from: env.sender, size: raw.length, nrcpt: t.accepted.length, proto: env.protocol }, env.queueId);
    const message = parseMessage(raw);
    if (hopCount(message.headers) >= 100) {
      return each(status('5.4.6', `Too many hops (${hopCount(message.headers)} Received header fields): mail forwarding loop`));
    }
    if (this.kind === 'smtp') {
      // A spool failure names the spool's paths: main.ts logs it, the client gets the code's text.
      const s = await this.h.enqueue(env, raw, t.accepted);
      return [dataResult(isSuccess(s) ? s : clientStatus(s))];
    }
    // LMTP: deliver each distinct recipient once; duplicates share the first one's outcome.
    const byAddress = new Map<string, { rcpt: AcceptedRecipient; outcome: Promise<RecipientOutcome>; done?: RecipientOutcome }>();
    let handedOver = false; // past the window: the queue logs and records what is still running
    for (const a of t.accepted) {
      const key = a.rcpt.address.toLowerCase();
      if (byAddress.has(key)) continue;
      const entry: { rcpt: AcceptedRecipient; outcome: Promise<RecipientOutcome>; done?: RecipientOutcome } = {
        rcpt: a,
        outcome: this.h.deliver(env, message, a).then((o) => {
          entry.done = o;
          if (!handedOver) {
            const delay = ((Date.now() - env.arrival.getTime()) / 1000).toFixed(3);
            this.h.log.info(o.detail ?? o.status.text, { to: a.rcpt.address, relay: o.relay, delay, delays: o.delays, dsn: o.status.code, status: statusWord(o.status) }, env.queueId);
          }
          return o;
        }),
      };
      byAddress.set(key, entry);
    }
    const c = this.h.config();
    let timer: NodeJS.Timeout | undefined;
    const inTime = await Promise.race([
      Promise.all([...byAddress.values()].map((e) => e.outcome)).then(() => true),
      new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), c.lmtp.window); }),
    ]);
    clearTimeout(timer);
    const late = new Map<string, Status>();
    if (!inTime) {
      handedOver = true;
      const running = [...byAddress.values()].filter((e) => e.done === undefined);
      let s: Status;
      let reply: Status;
      if (c.lmtp.on_timeout === 'queue') {
        s = await this.h.adopt(env, raw, running.map((e) => ({ address: e.rcpt.rcpt.address, outcome: e.outcome })));
        reply = isSuccess(s) ? s : clientStatus(s); // a spool failure names the spool's paths
      } else {
        s = status('4.3.0', `delivery is taking longer than ${Math.round(c.lmtp.window / 1000)} s; try again later`);
        reply = s;
      }
      for (const e of running) late.set(e.rcpt.rcpt.address.toLowerCase(), reply);
      this.h.log.warn(`delivery window of ${c.lmtp.window} ms passed for ${running.length} recipient(s): ${s.code} ${s.text}`, undefined, env.queueId);
    }
    return t.accepted.map((a) => {
      const key = a.rcpt.address.toLowerCase();
      const s = late.get(key) ?? outcomeReply(byAddress.get(key)?.done as RecipientOutcome);
      return dataResult(s.code.startsWith('2') ? status(s.code, `<${a.rcpt.address}> ${t.queueId} ${s.text}`) : s);
    });
  }
}
