// Talking to spamd: one request per connection (spamd answers once and
// closes), over a unix socket or TCP. The bytes are protocol.ts's business;
// this file only moves them and keeps time.
//
// Exports: ping, check, symbols, report, reportIfSpam, processMessage,
// headers, tell; SpamdTarget, SpamcOptions.
//
// Failure contract: every failure rejects with a SpamdError (protocol.ts)
// whose kind the caller turns into fail-open or fail-closed:
// - 'connect'   no connection (ENOENT, ECONNREFUSED, EACCES ...), or it broke
//               (EPIPE, ECONNRESET) before a complete reply;
// - 'timeout'   no connection within connectTimeoutMs, or no complete reply
//               within timeoutMs of connecting (sending, spamd's work and the
//               reply all count);
// - 'protocol', 'server', 'too-large' as the reader says.
// A request that cannot be sent (bad user name, bad TELL options, a bad
// timeout) rejects with RangeError: a bug or bad configuration. On every path
// the socket is destroyed and both timers are cleared before the promise
// settles; nothing is left listening.
//
// The request goes out in one corked write, then the write side is shut
// (spamd reads the message's last line until EOF when it has no final
// newline). One write matters: spamd answers some refusals (TELL without
// --allow-tell, a bad header) as soon as it has read the request head, and
// closes; a message written in a second write then meets EPIPE, and Node
// destroys the socket before the refusal sitting in the receive buffer is
// read. Messages larger than the socket buffer can still lose the refusal
// that way: they get kind 'connect' with the errno instead of spamd's text.
import { connect, type Socket } from 'node:net';
import {
  DEFAULT_MAX_REPLY_BYTES,
  formatRequest,
  ReplyReader,
  REWRITE_ALLOWANCE,
  SpamdError,
  type SpamdCommand,
  type SpamdReplies,
  type SpamResult,
  type TellRequest,
  type TellResult,
} from './protocol.js';

export type SpamdTarget = { readonly path: string } | { readonly host: string; readonly port: number };

export interface SpamcOptions {
  readonly target: SpamdTarget;
  /** Sent as "User:": whose preferences spamd applies (with -x and no SQL/LDAP, none: spamd's own). */
  readonly user?: string;
  /** Time to get a connection; default 10 s. */
  readonly connectTimeoutMs?: number;
  /** Time from connection to complete reply; default 120 s (spamd's own child timeout is 300 s). */
  readonly timeoutMs?: number;
  /** Cap on the reply's bytes; default 1 MiB, and for PROCESS and HEADERS the message's size plus 64 KiB. */
  readonly maxReplyBytes?: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_TIMEOUT_MS = 120_000;

/** Resolves when spamd answers PING. */
export async function ping(o: SpamcOptions): Promise<void> {
  await exchange(o, 'PING', undefined, undefined);
}

/** Spam or not, with score and threshold (CHECK). */
export function check(o: SpamcOptions, message: Buffer): Promise<SpamResult> {
  return exchange(o, 'CHECK', message, undefined);
}

/** CHECK plus the names of the rules that hit (SYMBOLS). */
export function symbols(o: SpamcOptions, message: Buffer): Promise<SpamdReplies['SYMBOLS']> {
  return exchange(o, 'SYMBOLS', message, undefined);
}

/** CHECK plus spamd's report text (REPORT). */
export function report(o: SpamcOptions, message: Buffer): Promise<SpamdReplies['REPORT']> {
  return exchange(o, 'REPORT', message, undefined);
}

/** Like report, but the text is '' when the message is not spam (REPORT_IFSPAM). */
export function reportIfSpam(o: SpamcOptions, message: Buffer): Promise<SpamdReplies['REPORT_IFSPAM']> {
  return exchange(o, 'REPORT_IFSPAM', message, undefined);
}

/** CHECK plus the message as spamd rewrites it, X-Spam-* headers added (PROCESS). */
export function processMessage(o: SpamcOptions, message: Buffer): Promise<SpamdReplies['PROCESS']> {
  return exchange(o, 'PROCESS', message, undefined);
}

/** Like processMessage, but only the rewritten header block (HEADERS). */
export function headers(o: SpamcOptions, message: Buffer): Promise<SpamdReplies['HEADERS']> {
  return exchange(o, 'HEADERS', message, undefined);
}

/** Learn, forget, report or revoke (TELL; spamd needs --allow-tell, else kind 'server', exit code 69). */
export function tell(o: SpamcOptions, message: Buffer, request: TellRequest): Promise<TellResult> {
  return exchange(o, 'TELL', message, request);
}

function describeTarget(t: SpamdTarget): string {
  if ('path' in t) return `unix:${t.path}`;
  return t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

function millis(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number of milliseconds, not ${v}`);
  return v;
}

function errnoOf(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  return typeof e.code === 'string' ? e.code : String(e.message ?? err);
}

async function exchange<C extends SpamdCommand>(o: SpamcOptions, command: C, message: Buffer | undefined, tellRequest: TellRequest | undefined): Promise<SpamdReplies[C]> {
  const request = formatRequest(command, message, { ...(o.user === undefined ? {} : { user: o.user }), ...(tellRequest === undefined ? {} : { tell: tellRequest }) });
  const connectMs = millis('connectTimeoutMs', o.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS);
  const replyMs = millis('timeoutMs', o.timeoutMs, DEFAULT_TIMEOUT_MS);
  const rewrites = command === 'PROCESS' || command === 'HEADERS';
  const cap = o.maxReplyBytes ?? (rewrites ? (message?.length ?? 0) + REWRITE_ALLOWANCE : DEFAULT_MAX_REPLY_BYTES);
  if (!Number.isSafeInteger(cap) || cap <= 0) throw new RangeError(`maxReplyBytes must be a positive integer, not ${cap}`);
  const reader = new ReplyReader(command, cap);
  const where = describeTarget(o.target);

  return new Promise<SpamdReplies[C]>((resolve, reject) => {
    let settled = false;
    let connected = false;
    let received = 0;
    let replyTimer: NodeJS.Timeout | undefined;
    const socket: Socket = 'path' in o.target
      ? connect({ path: o.target.path })
      : connect({ host: o.target.host, port: o.target.port });

    const settle = (err: unknown, value?: SpamdReplies[C]): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(replyTimer);
      socket.removeListener('connect', onConnect);
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      // 'error' stays: a destroyed socket emits nothing more, and if it did, onError ignores it.
      socket.destroy();
      if (err === undefined) resolve(value as SpamdReplies[C]);
      else reject(err instanceof SpamdError || err instanceof RangeError ? err : new SpamdError('protocol', `reply to ${command} from ${where}: ${String(err)}`, { cause: err }));
    };

    const connectTimer = setTimeout(() => {
      settle(new SpamdError('timeout', `no connection to spamd at ${where} within ${connectMs} ms`));
    }, connectMs);

    const onConnect = (): void => {
      connected = true;
      clearTimeout(connectTimer);
      replyTimer = setTimeout(() => {
        settle(new SpamdError('timeout', `no complete reply to ${command} from spamd at ${where} within ${replyMs} ms (${received} bytes received)`));
      }, replyMs);
      socket.cork();
      for (const piece of request) socket.write(piece);
      socket.uncork();
      socket.end();
    };

    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      try {
        const r = reader.push(chunk);
        if (r !== undefined) settle(undefined, r);
      } catch (err) {
        settle(err);
      }
    };

    const onEnd = (): void => {
      try {
        settle(undefined, reader.end());
      } catch (err) {
        settle(err);
      }
    };

    const onError = (err: unknown): void => {
      if (settled) return;
      const what = connected
        ? `connection to spamd at ${where} broken before a complete reply to ${command} (${received} bytes received): ${errnoOf(err)}`
        : `cannot connect to spamd at ${where}: ${errnoOf(err)}`;
      settle(new SpamdError('connect', what, { cause: err }));
    };

    socket.once('connect', onConnect);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.on('error', onError);
  });
}
