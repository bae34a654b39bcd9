// One SMTP (or LMTP) peer we hand mail to — the MTA for bounces, forwards
// and vacation replies, a list manager's LMTP runner — through
// nodemailer's connection pool: connections are opened on demand, up to
// `maxConnections`, kept and reused across messages (connection caching, as
// Postfix's scache does), and replaced when the peer closes them. STARTTLS
// per relay.tls (src/config/relay.ts).
//
// Exports: SmtpRelay, Relay, RelayTarget, RelayOptions, OutboundMessage, parseRelayTarget.
//
// Failure contract: send() never throws and never rejects. It answers one
// Status per envelope recipient, in order, decided where the answer came
// from (relay/smtp-reply.ts): 2.0.0 for a recipient the peer accepted the
// message for, the peer's own 4xx/5xx for one it refused (at RCPT, or after
// DATA in LMTP), 4.4.x for all when the peer could not be reached or the
// session broke, and 4.7.4 when TLS is required and the peer has none. The
// message bytes go out as given (raw): no header is added or re-folded, so
// signatures survive.
import { connect, type Socket } from 'node:net';
import { createTransport, type Transporter } from 'nodemailer';
import type SMTPPool from 'nodemailer/lib/smtp-pool/index.js';
import { status, type Status } from '../mail/status.js';
import { statusFromReply, statusFromSendError } from './smtp-reply.js';

/** A TCP peer, or a unix socket (a list manager's LMTP: "lmtp:unix:PATH"). */
export type RelayTarget = { readonly host: string; readonly port: number; readonly path?: undefined } | { readonly path: string };

/** "HOST:PORT" or "[IPv6]:PORT" → target; a bad spec throws (config validation catches it first). */
export function parseRelayTarget(spec: string): RelayTarget {
  const cut = spec.lastIndexOf(':');
  const port = Number(spec.slice(cut + 1));
  if (cut <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad relay address ${JSON.stringify(spec)}: expected HOST:PORT`);
  return { host: spec.slice(0, cut).replace(/^\[(.*)\]$/, '$1'), port };
}

export interface OutboundMessage {
  /** Envelope sender; '' is the null sender <>. */
  readonly from: string;
  readonly to: readonly string[];
  /** The whole message, CRLF or LF line endings (nodemailer sends CRLF). */
  readonly raw: Buffer;
}

export interface RelayOptions {
  /** Our name in EHLO/LHLO. */
  readonly name: string;
  /** Connections open to this peer at once (a per-destination cap). Default 5. */
  readonly maxConnections?: number;
  /** Connect, greeting and per-reply timeout. Default 30 s. */
  readonly timeoutMs?: number;
  /** Speak LMTP instead of SMTP (one reply per recipient after DATA). */
  readonly lmtp?: boolean;
  /**
   * STARTTLS: optional = when offered, certificate not verified (Postfix's
   * "may"); required = never in clear; off (default) = never.
   */
  readonly tls?: 'off' | 'optional' | 'required';
}

/** Anything that takes a message on for its recipients: an SMTP/LMTP peer, or the sendmail program. */
export interface Relay {
  /** For log lines: "127.0.0.1:25", "unix:/path", "sendmail". */
  readonly where: string;
  /** One Status per recipient of `m.to`, in order; never rejects. */
  send(m: OutboundMessage): Promise<Status[]>;
  close(): void;
}

/** Messages one connection carries before it is replaced (Postfix smtp_connection_reuse_count_limit is unlimited; nodemailer's default 100 is fine). */
const MESSAGES_PER_CONNECTION = 100;

const has8bit = (b: Buffer): boolean => b.some((c) => c >= 0x80);

interface RejectedError {
  readonly recipient?: string;
  readonly response?: string;
  readonly responseCode?: number;
}

/** A connected unix socket for nodemailer's getSocket hook (it dials TCP only). */
function unixSocket(path: string, timeoutMs: number, callback: (err: Error | null, socket?: { connection: Socket }) => void): void {
  const socket = connect(path);
  const timer = setTimeout(() => socket.destroy(new Error(`connection to unix:${path} timed out`)), timeoutMs);
  socket.once('connect', () => {
    clearTimeout(timer);
    socket.removeListener('error', failed);
    callback(null, { connection: socket });
  });
  const failed = (err: Error): void => {
    clearTimeout(timer);
    callback(err);
  };
  socket.once('error', failed);
}

export class SmtpRelay implements Relay {
  readonly where: string;
  private readonly tls: 'off' | 'optional' | 'required';
  private readonly transport: Transporter<SMTPPool.SentMessageInfo>;

  constructor(readonly target: RelayTarget, opts: RelayOptions) {
    const timeout = opts.timeoutMs ?? 30_000;
    const tls = opts.tls ?? 'off';
    this.tls = tls;
    let peer: Record<string, unknown>;
    if (target.path !== undefined) {
      this.where = `unix:${target.path}`;
      const path = target.path;
      peer = { host: 'localhost', port: 0, getSocket: (_o: unknown, cb: (err: Error | null, s?: { connection: Socket }) => void) => unixSocket(path, timeout, cb) };
    } else {
      this.where = `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`;
      peer = { host: target.host, port: target.port };
    }
    const options: SMTPPool.Options = {
      pool: true,
      ...peer,
      secure: false,
      ignoreTLS: tls === 'off',
      requireTLS: tls === 'required',
      // Opportunistic TLS as Postfix's "may": encrypt when offered, no
      // certificate check (a relay's name rarely matches what we dial), and a
      // failed STARTTLS goes on in clear unless TLS is required.
      opportunisticTLS: tls === 'optional',
      tls: { rejectUnauthorized: false, minVersion: 'TLSv1.2' },
      name: opts.name,
      lmtp: opts.lmtp ?? false,
      maxConnections: opts.maxConnections ?? 5,
      maxMessages: MESSAGES_PER_CONNECTION,
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
      logger: false,
      debug: false,
    } as SMTPPool.Options;
    this.transport = createTransport(options);
  }

  /** One Status per recipient of `m.to`, in order; never rejects. */
  async send(m: OutboundMessage): Promise<Status[]> {
    if (m.to.length === 0) return [];
    // use8BitMime: BODY=8BITMIME when the bytes need it and the peer offers it
    // (nodemailer's envelope extension, not in the types).
    const envelope = { from: m.from, to: [...m.to], use8BitMime: has8bit(m.raw) };
    try {
      const info = await this.transport.sendMail({
        envelope: envelope as unknown as { from: string; to: string[] },
        raw: m.raw,
        disableFileAccess: true,
        disableUrlAccess: true,
      });
      const refused = new Map<string, Status>();
      for (const e of ((info as { rejectedErrors?: RejectedError[] }).rejectedErrors ?? [])) {
        if (e.recipient !== undefined) refused.set(e.recipient, this.refusal(e));
      }
      const rejected = new Set((info.rejected ?? []).map(String));
      const accepted = status('2.0.0', `sent to ${this.where}: ${String(info.response ?? '').trim()}`);
      return m.to.map((to) => refused.get(to) ?? (rejected.has(to) ? status('5.0.0', `${this.where} rejected <${to}>`) : accepted));
    } catch (err) {
      // Every recipient refused: nodemailer throws, with each refusal attached.
      const each = (err as { rejectedErrors?: RejectedError[] }).rejectedErrors;
      if (Array.isArray(each) && each.length > 0) {
        const byRecipient = new Map(each.filter((e) => e.recipient !== undefined).map((e) => [e.recipient as string, this.refusal(e)]));
        const whole = statusFromSendError(err, this.where);
        return m.to.map((to) => byRecipient.get(to) ?? whole);
      }
      const e = err as { code?: string; command?: string };
      // TLS required and not to be had: Postfix defers such mail (4.7.4) — the relay may offer it later, or the admin fix it.
      const s = this.tls === 'required' && (e.code === 'ETLS' || e.command === 'STARTTLS')
        ? status('4.7.4', `${this.where} does not offer STARTTLS (or it failed), and relay.tls is required`)
        : statusFromSendError(err, this.where);
      return m.to.map(() => s);
    }
  }

  /** Closes pooled connections; sends after this fail with 4.4.x. */
  close(): void {
    this.transport.close();
  }

  private refusal(e: RejectedError): Status {
    if (typeof e.responseCode === 'number' && typeof e.response === 'string') {
      const s = statusFromReply(e.responseCode, e.response);
      return status(s.code, `${this.where} said: ${s.text}`, s.reply);
    }
    return statusFromSendError(e, this.where);
  }
}
