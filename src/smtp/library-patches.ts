// Where smtp-server's behaviour is not what a delivery agent needs and no
// option changes it: patched here, once, on SMTPConnection's prototype. The
// patches reach private members, so they are written for exactly one
// version of the library (SMTP_SERVER_VERSION, pinned in package.json):
// patchSmtpServer() refuses any other installed version with a message that
// says what to do, and the daemon does not start. NOTES.md records each
// patch against the library's own behaviour (the diff to review before
// moving the pin).
//
// 1. Reply codes: smtp-server derives the enhanced code from the reply number
//    (550 → 5.1.1, 552 → 5.2.2 …), so it cannot say 5.2.3 or 4.2.0, and text
//    that already holds a code comes out doubled ("550 5.1.1 5.7.1 …"). A
//    reply whose text starts with an enhanced code of the reply's class is
//    sent as is. Every other error reply gets the library's code for its
//    number — also those the library sends without one (its 500 "EHLO not
//    allowed in LMTP server", 501 "Bad hostname syntax", 421 "You talk too
//    soon" …): RFC 2034 exempts only the greeting and the answer to
//    HELO/EHLO/LHLO. Its "421 Server shutting down" says 4.3.2 like our own
//    shutdown replies (server.ts close()); its "too many unrecognized
//    commands" says 4.7.0, like our error limit below.
// 2. Greeting delay: init() waits a fixed 100 ms before the 220 greeting "to
//    detect early talkers". With one connection per message — how Postfix's
//    LMTP client and most load drivers work — that caps 8 sessions at ~80
//    messages/s. We greet at once (after the same maxClients check, whose
//    421 now says 4.3.2); a client that talks before the greeting still gets
//    smtp-server's 421.
// 3. The enhanced code of a reply is looked up by a "context" that for an
//    unknown command is the command's own name, so a client that sends
//    "MAIL_FROM_OK" got "500 2.1.0": a code the client chose, of the wrong
//    class (RFC 2034 §4: a 5yz reply carries a 5.x.x code). A looked-up code
//    whose class is not the reply's is replaced by the reply's default.
// 4. The input parser: _createParser() builds our InputStream
//    (input-stream.ts: DATA decoded by data-decoder.ts, RFC 5321 dot-
//    unstuffing; deadlines for a command line and for DATA's progress)
//    instead of smtp-server's SMTPStream. Its errors end the session with
//    "421 <code> <host> Error: …".
// 5. Error limit (Postfix's smtpd_hard_error_limit): an error reply (4xx/5xx
//    other than 421) to a client's command counts; at the limit the session
//    ends with "421 4.7.0 <host> Error: too many errors". The per-recipient
//    results after DATA are outcomes, not client errors, and do not count;
//    a delivered message (a 250 after DATA) starts the count afresh.
//
// The listener hands its limits and a log hook over as the SMTPServer option
// `mailprocd` (SessionGuard); a server built without it gets the patches but
// no deadlines and no error limit.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { InputError, InputStream } from './input-stream.js';

/** The one version of smtp-server these patches were written and tested against. */
export const SMTP_SERVER_VERSION = '3.21.6';

/** What the patches need from the listener; passed as the SMTPServer option `mailprocd`. */
export interface SessionGuard {
  /** Read when a connection starts, so a reload applies to the next connections. */
  limits(): { readonly commandTimeoutMs: number; readonly dataMinRate: number; readonly hardErrorLimit: number };
  /** A session ended by one of these limits, for the log. */
  ended(remoteAddress: string, why: string): void;
}

const CODED = /^([245])\.\d{1,3}\.\d{1,3} /;
/** The commands whose replies RFC 2034 §3 exempts from enhanced codes (the library's skip list). */
const HELLO = new Set<unknown>(['HELO', 'EHLO', 'LHLO']);
let patched = false;

interface ConnectionInternals {
  send(this: ConnectionInternals, code: number, data?: unknown, context?: unknown): void;
  init(this: ConnectionInternals): void;
  _setListeners(this: ConnectionInternals, done: () => void): void;
  connectionReady(this: ConnectionInternals): void;
  _getEnhancedStatusCode(this: ConnectionInternals, code: number, context?: unknown): string;
  _createParser(this: ConnectionInternals): unknown;
  _onCommand(this: ConnectionInternals, command: Buffer, callback?: () => void): void;
  readonly name: string;
  readonly remoteAddress: string;
  readonly _parser: unknown;
  readonly _server: {
    readonly options: { readonly maxClients?: number; readonly maxCommandLength?: number; readonly mailprocd?: SessionGuard };
    readonly connections: { readonly size: number };
  };
  /** Ours: error replies to commands so far, and the limit read when the connection started. */
  _mailprocdErrors?: number;
  _mailprocdErrorLimit?: number;
}

/** undefined when `installed` is the version the patches were written for; else why the daemon must not start. */
export function checkSmtpServerVersion(installed: string | undefined): string | undefined {
  if (installed === SMTP_SERVER_VERSION) return undefined;
  return `smtp-server ${installed ?? '(version unknown)'} is installed, but mailprocd's patches to it (src/smtp/library-patches.ts) ` +
    `were written for exactly ${SMTP_SERVER_VERSION}: install that version (npm ci, with the package-lock.json) or, ` +
    'to move to another version, review the patches against it first (src/smtp/NOTES.md, "Patches to smtp-server")';
}

/** The version in the installed smtp-server's package.json (resolved as the listeners' imports are). */
export function installedSmtpServerVersion(): string | undefined {
  try {
    const pkg = JSON.parse(readFileSync(fileURLToPath(import.meta.resolve('smtp-server/package.json')), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : undefined;
  } catch {
    return undefined;
  }
}

/** Idempotent; called by the listeners before they start. Throws (a message for the administrator) on any other smtp-server version. */
export function patchSmtpServer(): void {
  if (patched) return;
  const wrong = checkSmtpServerVersion(installedSmtpServerVersion());
  if (wrong !== undefined) throw new Error(wrong);
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals;
  for (const name of ['send', 'init', '_setListeners', 'connectionReady', '_getEnhancedStatusCode', '_createParser', '_onCommand'] as const) {
    if (typeof proto[name] !== 'function') throw new Error(`bug: smtp-server SMTPConnection.${name} not found although the version is ${SMTP_SERVER_VERSION}`);
  }
  patched = true;

  const send = proto.send;
  proto.send = function patchedSend(code, data, context) {
    // A command during shutdown: 4.3.2 (system not accepting messages), as our own close() says, not the library's 4.4.2.
    if (code === 421 && data === 'Server shutting down') return send.call(this, code, `4.3.2 ${this.name} shutting down, try again later`, false);
    if (code === 421 && data === 'Error: too many unrecognized commands') return send.call(this, code, `4.7.0 ${this.name} Error: too many unrecognized commands`, false);
    const m = typeof data === 'string' ? CODED.exec(data) : null;
    if (m && m[1] === String(code)[0]) send.call(this, code, data, false);
    else send.call(this, code, data, code >= 400 && (context === false || HELLO.has(context)) ? undefined : context);
    countErrors(this, code, send);
  };

  const enhanced = proto._getEnhancedStatusCode;
  proto._getEnhancedStatusCode = function patchedEnhancedCode(code, context) {
    const got = enhanced.call(this, code, context);
    return got === '' || got[0] === String(code)[0] ? got : enhanced.call(this, code, undefined);
  };

  proto.init = function patchedInit() {
    this._setListeners(() => {
      const max = this._server.options.maxClients;
      if (max && this._server.connections.size > max) {
        return this.send(421, `4.3.2 ${this.name} Error: too many connections, try again later`, false);
      }
      setImmediate(() => this.connectionReady());
    });
  };

  proto._createParser = function patchedCreateParser() {
    const guard = this._server.options.mailprocd;
    const limits = guard?.limits();
    this._mailprocdErrorLimit = limits?.hardErrorLimit ?? 0;
    const parser = new InputStream({
      maxCommandLength: this._server.options.maxCommandLength,
      commandTimeoutMs: limits?.commandTimeoutMs ?? Infinity,
      dataMinRate: limits?.dataMinRate ?? 0,
    });
    parser.oncommand = (command, callback) => this._onCommand(command, callback);
    parser.on('error', (err: Error) => {
      guard?.ended(this.remoteAddress, err.message);
      this.send(421, `${err instanceof InputError ? err.code : '4.3.0'} ${this.name} Error: ${err.message}`, false);
    });
    return parser;
  };
}

/** Patch 5: after a reply is sent, counts it against the session's error limit. */
function countErrors(c: ConnectionInternals, code: number, send: ConnectionInternals['send']): void {
  const parser = c._parser;
  if (!(parser instanceof InputStream)) return;
  if (!parser.inCommand) {
    // Outside a command handler the only 250 is a result after DATA: mail was delivered.
    if (code === 250) c._mailprocdErrors = 0;
    return;
  }
  if (code < 400 || code === 421) return;
  const errors = (c._mailprocdErrors ?? 0) + 1;
  c._mailprocdErrors = errors;
  const limit = c._mailprocdErrorLimit ?? 0;
  if (limit > 0 && errors >= limit) {
    c._server.options.mailprocd?.ended(c.remoteAddress, `${errors} errors`);
    send.call(c, 421, `4.7.0 ${c.name} Error: too many errors`, false);
  }
}
