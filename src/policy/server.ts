// The policy listeners (unix and TCP) and their connections. Knows the
// socket side of the protocol, not the plugins: each complete request goes
// to `decide`, and its answer goes back as one `action=…` reply in one write.
//
// Per connection, in order:
//  - many requests, one after another (also pipelined: replies keep order);
//  - a malformed request (see protocol.ts) is logged and answered DUNNO;
//  - an oversized request → logged, the requests before it answered, then
//    the connection closed with no reply to it;
//  - a request not finished within request_timeout, or idle_timeout without
//    a request → logged, connection closed, no reply;
//  - a client that closes mid-request: the partial request is dropped; the
//    complete ones before it are still answered;
//  - `decide` failing (it should not: the chain catches plugin errors) →
//    logged, connection closed without a reply, as SMTPD_POLICY_README asks
//    ("in case of trouble … log a warning and disconnect"); never half a reply.
// A client that does not read its replies is not read from until it does.
//
// Unix sockets: a stale socket file is removed before listen (anything else
// at that path is left alone and listen fails); the socket gets the
// configured mode and owner/group, as the LMTP listener's does.
//
// Exports: PolicyServer, PolicyServerOptions, BoundListener.
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log.js';
import { listenOn } from '../net/listen.js';
import type { ListenSpec } from './config.js';
import { formatReply, RequestReader, type ReadItem } from './protocol.js';
import type { PolicyAction, PolicyRequest } from './types.js';

export interface PolicyServerOptions {
  readonly listen: readonly ListenSpec[];
  readonly socket: { readonly mode: number; readonly owner?: string | undefined; readonly group?: string | undefined };
  readonly limits: { readonly requestSize: number; readonly requestTimeoutMs: number; readonly idleTimeoutMs: number; readonly connections: number };
  /** The answer to one request: at once when it can be, else a promise. May throw or reject on internal trouble. */
  readonly decide: (req: PolicyRequest) => PolicyAction | Promise<PolicyAction>;
  readonly log: Logger;
}

export interface BoundListener {
  readonly spec: string;
  readonly kind: 'unix' | 'tcp';
  /** Socket path (unix) or "" */
  readonly path: string;
  /** The bound port (tcp; the kernel's choice for port 0) or 0. */
  readonly port: number;
}

/** Requests parsed but not yet answered, per connection, before we stop reading from it. */
const MAX_QUEUED = 64;
/** How long close() lets in-flight requests finish before cutting connections. */
const CLOSE_GRACE_MS = 5_000;

class Connection {
  private readonly reader: RequestReader;
  private readonly queue: ReadItem[] = [];
  private busy = false;
  /** The client half-closed: answer what is complete, then end. */
  private ended = false;
  /** The server is closing: answer what is in flight, then end. */
  private draining = false;
  private closed = false;
  private writable = true;
  private requestTimer: NodeJS.Timeout | undefined;
  private readonly peer: string;

  constructor(
    private readonly socket: Socket,
    private readonly o: PolicyServerOptions,
    private readonly where: string,
    private readonly onClose: (c: Connection) => void,
  ) {
    this.reader = new RequestReader(o.limits.requestSize);
    this.peer = socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort ?? ''}` : where;
    if (socket.remoteAddress !== undefined) socket.setNoDelay(true);
    // Not setTimeout's callback argument: that is a one-time listener, and an idle check that finds us busy must come back.
    socket.setTimeout(o.limits.idleTimeoutMs);
    socket.on('timeout', () => this.onIdle());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.onEnd());
    socket.on('drain', () => {
      this.writable = true;
      this.resumeIfRoom();
    });
    socket.on('error', (err) => this.o.log.debug(`policy ${this.peer}: ${err.message}`));
    socket.on('close', () => {
      this.closed = true;
      this.clearRequestTimer();
      this.onClose(this);
    });
  }

  private onData(chunk: Buffer): void {
    for (const item of this.reader.push(chunk)) {
      if (item.kind === 'oversized') {
        // The requests before it are whole and still get their replies; nothing after it is read.
        this.o.log.warn(`policy ${this.peer}: request larger than ${item.limit} bytes; connection closed`);
        this.clearRequestTimer();
        this.draining = true;
        this.socket.pause();
        this.pump();
        return;
      }
      this.queue.push(item);
    }
    if (this.reader.inRequest) this.armRequestTimer();
    else this.clearRequestTimer();
    if (this.queue.length >= MAX_QUEUED) this.socket.pause();
    this.pump();
  }

  private pump(): void {
    while (!this.busy && !this.closed) {
      const item = this.queue.shift();
      if (item === undefined) break;
      if (item.kind === 'malformed') {
        this.o.log.warn(`policy ${this.peer}: malformed request (${item.reason}), answered DUNNO`);
        this.reply('DUNNO');
        continue;
      }
      if (item.kind !== 'request') continue;
      let answer: PolicyAction | Promise<PolicyAction>;
      try {
        answer = this.o.decide(item.request);
      } catch (err) {
        this.abort(`internal error, closing without a reply: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, 'error');
        return;
      }
      if (typeof answer === 'string') {
        this.reply(answer);
        continue;
      }
      this.busy = true;
      answer.then(
        (action) => {
          this.busy = false;
          if (this.closed) return;
          this.reply(action);
          this.pump();
        },
        (err: unknown) => {
          this.busy = false;
          this.abort(`internal error, closing without a reply: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, 'error');
        },
      );
      return;
    }
    if (this.closed || this.busy) return;
    if (this.ended) {
      this.socket.end();
      return;
    }
    if (this.draining) {
      this.finish();
      return;
    }
    this.resumeIfRoom();
  }

  private reply(action: PolicyAction): void {
    if (!this.socket.write(formatReply(action))) {
      this.writable = false;
      this.socket.pause();
    }
  }

  private resumeIfRoom(): void {
    if (this.writable && this.queue.length < MAX_QUEUED && !this.closed && this.socket.isPaused()) this.socket.resume();
  }

  private onEnd(): void {
    this.ended = true;
    this.clearRequestTimer();
    if (this.reader.inRequest) this.o.log.debug(`policy ${this.peer}: client closed in the middle of a request; dropped`);
    this.pump();
  }

  private onIdle(): void {
    // Waiting on our own answer is not the client being idle.
    if (this.busy || this.queue.length > 0) return;
    if (this.reader.inRequest) this.abort(`no complete request within ${this.o.limits.idleTimeoutMs} ms`);
    else {
      this.o.log.debug(`policy ${this.peer}: idle for ${this.o.limits.idleTimeoutMs} ms, closing`);
      this.socket.destroy();
    }
  }

  private armRequestTimer(): void {
    if (this.requestTimer !== undefined) return;
    this.requestTimer = setTimeout(() => {
      this.requestTimer = undefined;
      this.abort(`request not finished within ${this.o.limits.requestTimeoutMs} ms`);
    }, this.o.limits.requestTimeoutMs);
    this.requestTimer.unref();
  }

  private clearRequestTimer(): void {
    if (this.requestTimer === undefined) return;
    clearTimeout(this.requestTimer);
    this.requestTimer = undefined;
  }

  private abort(why: string, level: 'warn' | 'error' = 'warn'): void {
    this.o.log[level](`policy ${this.peer}: ${why}; connection closed`);
    this.clearRequestTimer();
    this.socket.destroy();
  }

  /** Server shutdown: an idle connection closes now, a busy one after its replies. */
  drain(): void {
    this.draining = true;
    this.socket.pause();
    if (!this.busy && this.queue.length === 0) this.finish();
  }

  /** Flushes what was written, then closes without waiting for the client's FIN (Postfix holds idle connections open). */
  private finish(): void {
    this.socket.end(() => this.socket.destroy());
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export class PolicyServer {
  private readonly servers: { readonly spec: ListenSpec; readonly server: Server }[] = [];
  private readonly connections = new Set<Connection>();
  private bound: BoundListener[] = [];

  constructor(private readonly o: PolicyServerOptions) {}

  get listening(): readonly BoundListener[] {
    return this.bound;
  }

  /** Listens on every address; on any failure closes those already open and rejects naming the address. */
  async start(): Promise<void> {
    try {
      for (const spec of this.o.listen) {
        const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket, spec.spec));
        server.maxConnections = this.o.limits.connections;
        await this.listenOn(server, spec);
      }
    } catch (err) {
      await this.close();
      throw err;
    }
    this.bound = this.servers.map(({ spec, server }) => {
      const a = server.address();
      return { spec: spec.spec, kind: spec.kind, path: spec.path, port: typeof a === 'object' && a !== null ? a.port : 0 };
    });
  }

  private async listenOn(server: Server, l: ListenSpec): Promise<void> {
    await listenOn(server, l, this.o.socket, 'policy.socket');
    server.on('error', (err) => this.o.log.warn(`policy ${l.spec}: ${err.message}`));
    this.servers.push({ spec: l, server });
  }

  private accept(socket: Socket, where: string): void {
    this.connections.add(new Connection(socket, this.o, where, (c) => this.connections.delete(c)));
  }

  /** Stops listening; lets connections finish their in-flight requests (up to a grace period), then cuts them. */
  async close(): Promise<void> {
    const closing = this.servers.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve())));
    this.servers.length = 0;
    for (const c of this.connections) c.drain();
    const grace = setTimeout(() => {
      for (const c of this.connections) c.destroy();
    }, CLOSE_GRACE_MS);
    await Promise.all(closing);
    clearTimeout(grace);
  }
}
