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
// Room for Postfix (limits.connections per listener, connections_per_client
// per TCP client address): every Postfix smtpd process keeps one cached
// connection, idle between its requests, for up to
// smtpd_policy_service_max_idle (300 s). So when a listener or a client
// address is at its limit, the connection that has been idle the longest
// (no request in progress, nothing unanswered) is closed to let the new one
// in — Postfix reconnects on its next request (smtpd_policy_service_try_limit
// 2). Only when every connection in the way is in the middle of a request is
// the new one closed at once, and logged. A local user cannot hold the
// listener with idle connections; one that keeps every slot busy mid-request
// is cut by request_timeout. Unix socket clients have no address: only the
// socket's mode (0660 by default) and the per-listener limit apply to them.
//
// Unix sockets: a stale socket file is removed before listen (anything else
// at that path is left alone and listen fails); the socket gets the
// configured mode and owner/group, as the LMTP listener's does.
//
// Exports: PolicyServer, PolicyServerOptions, BoundListener.
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log.js';
import { listenOn } from '../net/listen.js';
import type { Listen as ListenSpec } from '../config/index.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import { formatReply, RequestReader, type ReadItem } from './protocol.js';
import type { PolicyAction, PolicyRequest } from './types.js';

export interface PolicyServerOptions {
  readonly listen: readonly ListenSpec[];
  readonly socket: { readonly mode: number; readonly owner?: string | undefined; readonly group?: string | undefined };
  readonly limits: {
    readonly requestSize: number;
    readonly requestTimeoutMs: number;
    readonly idleTimeoutMs: number;
    /** Per listener. */
    readonly connections: number;
    /** Per TCP client address, across the listeners; 0 = no limit. */
    readonly connectionsPerClient: number;
  };
  /** The answer to one request: at once when it can be, else a promise. May throw or reject on internal trouble. */
  readonly decide: (req: PolicyRequest) => PolicyAction | Promise<PolicyAction>;
  readonly log: Logger;
  /** Counts connections closed by a limit (src/metrics); undefined: nothing is counted. */
  readonly metrics?: MetricsEvents | undefined;
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
  /** When the connection last finished a reply (or opened): the longest idle makes room first. */
  lastActive = performance.now();

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

  /** Waiting for the client's next request: nothing read of it yet, nothing of ours unanswered. */
  get idle(): boolean {
    return !this.busy && !this.closed && !this.draining && this.queue.length === 0 && !this.reader.inRequest;
  }

  /** Closed to let a new connection in (see the header). */
  makeRoom(why: string): void {
    this.o.log.info(`policy ${this.peer}: idle ${Math.round(performance.now() - this.lastActive)} ms, closed to make room (${why})`);
    this.closed = true; // no more replies, even if bytes are on their way
    this.clearRequestTimer();
    this.socket.destroy();
  }

  private reply(action: PolicyAction): void {
    this.lastActive = performance.now();
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
  /** Open connections per listener (by its spec) and per TCP client address. */
  private readonly byListener = new Map<string, Set<Connection>>();
  private readonly byClient = new Map<string, Set<Connection>>();
  private bound: BoundListener[] = [];

  constructor(private readonly o: PolicyServerOptions) {}

  get listening(): readonly BoundListener[] {
    return this.bound;
  }

  /** Listens on every address; on any failure closes those already open and rejects naming the address. */
  async start(): Promise<void> {
    try {
      for (const spec of this.o.listen) {
        // No server.maxConnections: it would turn a newcomer away while idle connections hold the room (see the header).
        const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket, spec.spec));
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
    const mine = this.byListener.get(where) ?? new Set<Connection>();
    this.byListener.set(where, mine);
    if (!this.makeRoom(mine, this.o.limits.connections, `${where} has ${mine.size} connections, limits.connections`)) {
      this.o.log.warn(`policy ${where}: ${mine.size} connections (limits.connections), all in the middle of a request; new connection from ${socket.remoteAddress ?? 'the unix socket'} closed`);
      this.o.metrics?.connectionRefused('policy', 'connections');
      socket.destroy();
      return;
    }
    const ip = socket.remoteAddress;
    const perClient = this.o.limits.connectionsPerClient;
    let theirs: Set<Connection> | undefined;
    if (ip !== undefined && perClient > 0) {
      theirs = this.byClient.get(ip) ?? new Set<Connection>();
      if (!this.makeRoom(theirs, perClient, `${ip} has ${theirs.size} connections, limits.connections_per_client`)) {
        this.o.log.warn(`policy ${where}: ${theirs.size} connections from ${ip} (limits.connections_per_client), all in the middle of a request; new connection closed`);
        this.o.metrics?.connectionRefused('policy', 'connections_per_client');
        socket.destroy();
        return;
      }
      this.byClient.set(ip, theirs);
    }
    const c = new Connection(socket, this.o, where, (gone) => {
      this.connections.delete(gone);
      mine.delete(gone);
      if (theirs !== undefined && ip !== undefined) {
        theirs.delete(gone);
        if (theirs.size === 0 && this.byClient.get(ip) === theirs) this.byClient.delete(ip);
      }
    });
    this.connections.add(c);
    mine.add(c);
    theirs?.add(c);
  }

  /** True when `group` has room for one more, after closing its longest-idle connection if it was full. */
  private makeRoom(group: Set<Connection>, limit: number, why: string): boolean {
    if (group.size < limit) return true;
    let oldest: Connection | undefined;
    for (const c of group) if (c.idle && (oldest === undefined || c.lastActive < oldest.lastActive)) oldest = c;
    if (oldest === undefined) return false;
    oldest.makeRoom(why);
    // destroy() reports 'close' later: take it out now so the count is right at once.
    for (const set of [group, this.connections, ...this.byListener.values(), ...this.byClient.values()]) set.delete(oldest);
    return true;
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
