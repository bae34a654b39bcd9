// A loopback SMTP sink for tests that send mail out (bounces, forwards): an
// smtp-server on 127.0.0.1 with an ephemeral port, no TLS, no auth required,
// no reverse lookups, that records every message it accepts as
// { from, to[], raw, bodyType } (from is '' for the null sender) and can be told to
// refuse the next message with a given reply at RCPT or after DATA.
// Replies go out as given: enhanced status codes are hidden (smtp-server's
// default), so a test that wants one writes it into the text ("4.7.1 …").
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerError, type SMTPServerSession } from 'smtp-server';

export interface SinkMessage {
  /** The MAIL FROM address; '' for the null sender <>. */
  readonly from: string;
  readonly to: readonly string[];
  /** The message as received (dot-unstuffed, CRLF). */
  readonly raw: Buffer;
  /** MAIL FROM's BODY= parameter as smtp-server saw it ('7bit' without one). */
  readonly bodyType: string;
  /** The TLS protocol of the session (after STARTTLS), e.g. 'TLSv1.3'; undefined in clear. */
  readonly tls?: string;
}

export interface SinkOptions {
  /** Offer STARTTLS with this key and certificate (PEM). Default: no TLS. */
  readonly tls?: { readonly key: Buffer; readonly cert: Buffer };
}

export interface Refusal {
  /** 4xx or 5xx */
  readonly code: number;
  /** Reply text; may start with an enhanced code, which is sent as is. */
  readonly text: string;
  /** When to refuse: at the first RCPT or after the data (default). */
  readonly at?: 'rcpt' | 'data';
}

export interface SmtpSink {
  readonly port: number;
  readonly messages: readonly SinkMessage[];
  /** TCP connections accepted so far (to see connection reuse). */
  readonly connections: () => number;
  /** The next message is refused with this reply (once). */
  refuseNext(r: Refusal): void;
  close(): Promise<void>;
}

function refusal(r: Refusal): SMTPServerError {
  const err: SMTPServerError = new Error(r.text);
  err.responseCode = r.code;
  return err;
}

export async function startSmtpSink(opts: SinkOptions = {}): Promise<SmtpSink> {
  const messages: SinkMessage[] = [];
  let connections = 0;
  let next: Refusal | undefined;
  const take = (at: 'rcpt' | 'data'): Refusal | undefined => {
    if (next === undefined || (next.at ?? 'data') !== at) return undefined;
    const r = next;
    next = undefined;
    return r;
  };
  const server = new SMTPServer({
    disableReverseLookup: true,
    authOptional: true,
    ...(opts.tls !== undefined
      ? { key: opts.tls.key, cert: opts.tls.cert, disabledCommands: ['AUTH'] }
      : { hideSTARTTLS: true, disabledCommands: ['STARTTLS', 'AUTH'] }),
    logger: false,
    name: 'sink.test',
    onConnect(_session, callback) {
      connections++;
      callback();
    },
    onRcptTo(_address, _session, callback) {
      const r = take('rcpt');
      callback(r === undefined ? undefined : refusal(r));
    },
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('error', (err: Error) => callback(err));
      stream.on('end', () => {
        const r = take('data');
        if (r !== undefined) {
          callback(refusal(r));
          return;
        }
        const from = session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address;
        messages.push({
          from,
          to: session.envelope.rcptTo.map((a) => a.address),
          raw: Buffer.concat(chunks),
          bodyType: session.envelope.bodyType ?? '7bit',
          ...(session.secure ? { tls: (session as unknown as { tlsOptions?: { version?: string } }).tlsOptions?.version ?? 'TLS' } : {}),
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', () => undefined); // a client's broken connection is not a test failure
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    messages,
    connections: () => connections,
    refuseNext(r: Refusal) {
      next = r;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
