// The milter listeners (unix and TCP) and their connections. Knows the
// socket side: bytes → packets (protocol.ts) → one MilterConversation per
// connection (session.ts), strictly in order, one command at a time.
//
// Per connection:
//  - commands are handled one after another; the MTA waits for our reply
//    to most of them, but macros and events negotiated without a reply
//    (SMFIP_NR_*) arrive back to back: they queue, and past MAX_QUEUED
//    commands or MAX_QUEUED_BYTES the socket is not read until the queue is
//    worked off;
//  - a protocol error (a bad length, a packet over limits.packet_size, an
//    unknown command, a field cut short, a command before OPTNEG) is logged
//    once, the filters get abort/close, and the connection is closed: the
//    MTA applies its milter_default_action; other connections go on;
//  - QUIT closes after the filters' close; QUIT_NC starts over with new
//    filter instances on the same connection;
//  - the MTA going away (mid-message or not): the commands not yet handled
//    are dropped, the one in progress finishes, then abort (mid-message) and
//    close are called — nothing is kept for a closed connection;
//  - nothing from the MTA for limits.idle_timeout while we are not working
//    on its command → closed (logged at debug: Postfix holds idle milter
//    connections for a whole SMTP session);
//  - a filter never leaves the MTA hanging: the conversation bounds every
//    call by filter_timeout and answers per on_filter_error.
//
// limits.connections counts every listener together; past it a new
// connection is closed at once and logged (the MTA applies
// milter_default_action to that SMTP session). Unix sockets: a stale socket
// file is removed before listen, and the socket gets the configured mode and
// owner/group (src/net/listen.ts), as the policy and LMTP sockets do.
//
// close(): stops listening; a connection between commands is closed at once,
// one in the middle of a command after its reply; after CLOSE_GRACE_MS the
// rest are cut. The filters of every connection get their close.
//
// Exports: MilterServer, MilterServerOptions, BoundListener.
import { createServer, type Server, type Socket } from 'node:net';
import type { Listen as ListenSpec } from '../config/index.js';
import type { Logger } from '../log.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import { listenOn } from '../net/listen.js';
import { PacketDecoder, parseCommand, type MtaCommand } from './protocol.js';
import { MilterConversation, type NamedFilter } from './session.js';

export interface MilterServerOptions {
  readonly listen: readonly ListenSpec[];
  readonly socket: { readonly mode: number; readonly owner?: string | undefined; readonly group?: string | undefined };
  readonly limits: {
    /** Across every listener. */
    readonly connections: number;
    readonly packetSize: number;
    readonly idleTimeoutMs: number;
  };
  readonly filters: readonly NamedFilter[];
  readonly filterTimeoutMs: number;
  readonly onFilterError: 'tempfail' | 'continue';
  readonly log: Logger;
  readonly metrics?: MetricsEvents | undefined;
}

export interface BoundListener {
  readonly spec: string;
  readonly kind: 'unix' | 'tcp';
  /** Socket path (unix) or "". */
  readonly path: string;
  /** The bound port (tcp; the kernel's choice for port 0) or 0. */
  readonly port: number;
}

/** Commands read but not yet handled before we stop reading (NR events come without waiting for us). */
const MAX_QUEUED = 256;
/** The same in bytes, as packet sizes: a client cannot make us hold 256 packets of limits.packet_size each. */
const MAX_QUEUED_BYTES = 1024 * 1024;
/** How long close() lets a command in progress finish. */
const CLOSE_GRACE_MS = 5_000;

class Connection {
  private readonly decoder: PacketDecoder;
  private readonly conversation: MilterConversation;
  private readonly queue: { readonly cmd: MtaCommand; readonly size: number }[] = [];
  private queuedBytes = 0;
  private busy = false;
  /** The pump working through the queue, awaited before the filters are closed. */
  private running: Promise<void> = Promise.resolve();
  /** No more commands are handled: closing (error, QUIT, the MTA gone, shutdown). */
  private stopping = false;
  private ended: Promise<void> | undefined;
  private readonly peer: string;

  constructor(
    private readonly socket: Socket,
    private readonly o: MilterServerOptions,
    where: string,
    private readonly onClose: (c: Connection) => void,
  ) {
    this.peer = socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort ?? ''}` : where;
    this.decoder = new PacketDecoder(o.limits.packetSize);
    this.conversation = new MilterConversation({
      filters: o.filters, filterTimeoutMs: o.filterTimeoutMs, onFilterError: o.onFilterError, log: o.log, peer: this.peer,
      send: (bytes) => {
        if (!this.socket.destroyed && this.socket.writable) this.socket.write(bytes);
      },
    });
    if (socket.remoteAddress !== undefined) socket.setNoDelay(true);
    socket.setTimeout(o.limits.idleTimeoutMs);
    socket.on('timeout', () => this.onIdle());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.gone('closed by the MTA'));
    socket.on('error', (err) => this.o.log.debug(`milter ${this.peer}: ${err.message}`));
    socket.on('close', () => {
      this.gone('connection lost');
      void this.finish().then(() => this.onClose(this));
    });
  }

  private onData(chunk: Buffer): void {
    if (this.stopping) return;
    for (const p of this.decoder.push(chunk)) {
      const cmd = p.kind === 'packet' ? parseCommand(p) : p;
      if (cmd.kind === 'error') {
        this.protocolError(cmd.reason);
        return;
      }
      const size = p.kind === 'packet' ? p.data.length : 0;
      this.queue.push({ cmd, size });
      this.queuedBytes += size;
    }
    if (this.full) this.socket.pause();
    if (!this.busy) {
      this.busy = true;
      this.running = this.pump();
    }
  }

  private async pump(): Promise<void> {
    try {
      for (let item = this.queue.shift(); item !== undefined && !this.stopping; item = this.queue.shift()) {
        this.queuedBytes -= item.size;
        // A command the filters answer at once is handled without a turn of the event loop.
        const handled = this.conversation.handle(item.cmd);
        const step = handled instanceof Promise ? await handled : handled;
        if (step === 'quit') {
          this.stopping = true;
          this.o.log.debug(`milter ${this.peer}: QUIT`);
          this.socket.end();
        } else if (step !== 'more') {
          this.protocolError(step.error);
        }
        if (!this.stopping && !this.full && this.socket.isPaused()) this.socket.resume();
      }
    } catch (err) {
      // A bug of ours (the conversation answers filter failures itself): the MTA gets its default action.
      this.o.log.error(`milter ${this.peer}: internal error, connection closed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      this.stopping = true;
      this.queue.length = 0;
      this.queuedBytes = 0;
    } finally {
      this.busy = false;
    }
    if (this.stopping) this.close();
  }

  private get full(): boolean {
    return this.queue.length >= MAX_QUEUED || this.queuedBytes >= MAX_QUEUED_BYTES;
  }

  /** Logged once; the connection closes after the command in progress. */
  private protocolError(reason: string): void {
    if (this.stopping) return;
    this.o.log.warn(`milter ${this.peer}: protocol error: ${reason}; connection closed`);
    this.stop();
  }

  private gone(why: string): void {
    if (this.stopping) return;
    if (this.decoder.buffered > 0 || this.queue.length > 0) this.o.log.debug(`milter ${this.peer}: ${why} with a command unfinished; dropped`);
    this.stop();
  }

  private stop(): void {
    this.stopping = true;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.socket.pause();
    if (!this.busy) this.close();
  }

  private onIdle(): void {
    if (this.busy) {
      // Our own filter is slow, not the MTA idle: look again after another period (the event fires once per arming).
      this.socket.setTimeout(this.o.limits.idleTimeoutMs);
      return;
    }
    this.o.log.debug(`milter ${this.peer}: nothing from the MTA for ${this.o.limits.idleTimeoutMs} ms (milter.limits.idle_timeout); closing`);
    this.stop();
  }

  /** Filters told (abort, close), then the socket closed after what was written. */
  private close(): void {
    void this.finish().then(() => {
      if (!this.socket.destroyed) this.socket.end(() => this.socket.destroy());
    });
  }

  /** The filters' abort/close, once. */
  finish(): Promise<void> {
    this.ended ??= (async () => {
      // A command in progress finishes first: its filter call is bounded by filter_timeout.
      await this.running;
      await this.conversation.end();
    })();
    return this.ended;
  }

  /** Shutdown: between commands close now, else after the reply in progress. */
  drain(): void {
    this.stop();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export class MilterServer {
  private readonly servers: { readonly spec: ListenSpec; readonly server: Server }[] = [];
  private readonly connections = new Set<Connection>();
  private bound: BoundListener[] = [];
  private closing = false;

  constructor(private readonly o: MilterServerOptions) {}

  get listening(): readonly BoundListener[] {
    return this.bound;
  }

  /** Open connections (tests and metrics). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Listens on every address; on any failure closes those already open and rejects naming the address. */
  async start(): Promise<void> {
    try {
      for (const spec of this.o.listen) {
        const server = createServer((socket) => this.accept(socket, spec.spec));
        await listenOn(server, spec, this.o.socket, 'milter.socket');
        server.on('error', (err) => this.o.log.warn(`milter ${spec.spec}: ${err.message}`));
        this.servers.push({ spec, server });
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

  private accept(socket: Socket, where: string): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.o.limits.connections) {
      this.o.log.warn(`milter ${where}: ${this.connections.size} connections (milter.limits.connections); new connection from ${socket.remoteAddress ?? 'the unix socket'} closed`);
      this.o.metrics?.connectionRefused('milter', 'connections');
      socket.destroy();
      return;
    }
    const c = new Connection(socket, this.o, where, (gone) => this.connections.delete(gone));
    this.connections.add(c);
  }

  /** Stops listening; ends every connection (see the header); resolves when their filters are closed. */
  async close(): Promise<void> {
    this.closing = true;
    const closing = this.servers.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve())));
    this.servers.length = 0;
    const open = [...this.connections];
    for (const c of open) c.drain();
    const grace = setTimeout(() => {
      for (const c of this.connections) c.destroy();
    }, CLOSE_GRACE_MS);
    await Promise.all([...closing, ...open.map((c) => c.finish())]);
    clearTimeout(grace);
  }
}
