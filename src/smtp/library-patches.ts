// The two places where smtp-server's behaviour is not what a delivery agent
// needs and no option changes it; both are patched here, once, on
// SMTPConnection's prototype, and checked at start so that a version of the
// library whose internals moved fails loudly instead of misbehaving
// (package.json pins smtp-server to ~3.21).
//
// 1. Reply codes: smtp-server derives the enhanced code from the reply number
//    (550 → 5.1.1, 552 → 5.2.2 …), so it cannot say 5.2.3 or 4.2.0, and text
//    that already holds a code comes out doubled ("550 5.1.1 5.7.1 …"). A
//    reply whose text starts with an enhanced code of the reply's class is
//    sent as is; every other reply (the library's own 503, 501, 421 …) keeps
//    the library's code, except its "421 Server shutting down", which says
//    4.3.2 like our own shutdown replies (src/smtp/server.ts close()).
// 2. Greeting delay: init() waits a fixed 100 ms before the 220 greeting "to
//    detect early talkers". With one connection per message — how Postfix's
//    LMTP client and most load drivers work — that caps 8 sessions at ~80
//    messages/s. We greet at once (after the same maxClients check); a client
//    that talks before the greeting still gets smtp-server's 421.
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

const CODED = /^([245])\.\d{1,3}\.\d{1,3} /;
let patched = false;

interface ConnectionInternals {
  send(this: ConnectionInternals, code: number, data?: unknown, context?: unknown): void;
  init(this: ConnectionInternals): void;
  _setListeners(this: ConnectionInternals, done: () => void): void;
  connectionReady(this: ConnectionInternals): void;
  readonly name: string;
  readonly _server: { readonly options: { readonly maxClients?: number }; readonly connections: { readonly size: number } };
}

/** Idempotent; called by the listeners before they start. */
export function patchSmtpServer(): void {
  if (patched) return;
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals;
  for (const name of ['send', 'init', '_setListeners', 'connectionReady'] as const) {
    if (typeof proto[name] !== 'function') throw new Error(`bug: smtp-server SMTPConnection.${name} not found (library version changed?)`);
  }
  patched = true;
  const send = proto.send;
  proto.send = function patchedSend(code, data, context) {
    // A command during shutdown: 4.3.2 (system not accepting messages), as our own close() says, not the library's 4.4.2.
    if (code === 421 && data === 'Server shutting down') return send.call(this, code, `4.3.2 ${this.name} shutting down, try again later`, false);
    if (typeof data === 'string') {
      const m = CODED.exec(data);
      if (m && m[1] === String(code)[0]) return send.call(this, code, data, false);
    }
    return send.call(this, code, data, context);
  };
  proto.init = function patchedInit() {
    this._setListeners(() => {
      const max = this._server.options.maxClients;
      if (max && this._server.connections.size > max) {
        return this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
      }
      setImmediate(() => this.connectionReady());
    });
  };
}
