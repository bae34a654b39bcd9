// The MTA side of the milter protocol, for tests: connects to a milter (unix
// socket or TCP), sends commands encoded by src/milter/protocol.ts and reads
// the milter's replies parsed by it — what Postfix's milter8.c does, in the
// order a test asks. ask() sends one command and collects what the milter
// sends for it: modifications and progress up to the decision.
//
// Exports: MilterClient, POSTFIX_OFFER, isDecision.
//
// Failure contract: reply() rejects when the milter closes the connection
// (or after timeoutMs, default 30 s: a hang detector, not a window) or sends
// a packet the parser refuses, naming which; it never resolves with garbage.
import { connect, type Socket } from 'node:net';
import {
  encodeCommand, PacketDecoder, parseReply, type MilterReply, type MtaCommand,
} from '../../src/milter/protocol.js';

/** What Postfix 3.x offers in OPTNEG: version 6, every action, every v6 protocol step. */
export const POSTFIX_OFFER = { kind: 'optneg', version: 6, actions: 0x1ff, protocol: 0x1fffff } as const satisfies MtaCommand;

const DECISIONS: ReadonlySet<MilterReply['kind']> = new Set(['continue', 'accept', 'reject', 'tempfail', 'discard', 'skip', 'replycode', 'shutdown', 'conn_fail']);

/** A reply that ends the MTA's wait for an event (not a modification, not progress). */
export function isDecision(r: MilterReply): boolean {
  return DECISIONS.has(r.kind);
}

export class MilterClient {
  private readonly decoder = new PacketDecoder(1 << 24);
  private readonly replies: MilterReply[] = [];
  private readonly waiters: { resolve: (r: MilterReply) => void; reject: (e: Error) => void }[] = [];
  private problem: Error | undefined;
  private closedFlag = false;
  private readonly closedPromise: Promise<void>;
  /** Every reply received, in order (for assertions on the whole conversation). */
  readonly log: MilterReply[] = [];

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const p of this.decoder.push(chunk)) {
        const r = p.kind === 'packet' ? parseReply(p) : p;
        if (r.kind === 'error') {
          this.fail(new Error(`milter sent garbage: ${r.reason}`));
          return;
        }
        this.log.push(r);
        const w = this.waiters.shift();
        if (w) w.resolve(r);
        else this.replies.push(r);
      }
    });
    socket.on('error', () => {
      // 'close' follows and says it.
    });
    this.closedPromise = new Promise((resolve) => socket.once('close', () => {
      this.closedFlag = true;
      this.fail(new Error('connection closed by the milter'));
      resolve();
    }));
  }

  /** Connects to a unix socket path or a loopback TCP port. */
  static async connect(to: { readonly path: string } | { readonly port: number; readonly host?: string }): Promise<MilterClient> {
    const socket = 'path' in to ? connect(to.path) : connect(to.port, to.host ?? '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new MilterClient(socket);
  }

  private fail(err: Error): void {
    this.problem ??= err;
    for (const w of this.waiters.splice(0)) w.reject(this.problem);
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  /** Resolves when the milter has closed the connection. */
  closed(): Promise<void> {
    return this.closedPromise;
  }

  send(cmd: MtaCommand): void {
    this.socket.write(encodeCommand(cmd));
  }

  /** Bytes as they are (garbage, or one packet cut into pieces). */
  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** The next reply. */
  reply(timeoutMs = 30_000): Promise<MilterReply> {
    const queued = this.replies.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.problem !== undefined) return Promise.reject(this.problem);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const i = this.waiters.findIndex((w) => w.resolve === done);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no reply from the milter within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (r: MilterReply): void => {
        clearTimeout(t);
        resolve(r);
      };
      this.waiters.push({ resolve: done, reject: (e) => { clearTimeout(t); reject(e); } });
    });
  }

  /** Replies up to and including the next decision. */
  async untilDecision(): Promise<MilterReply[]> {
    const out: MilterReply[] = [];
    for (;;) {
      const r = await this.reply();
      out.push(r);
      if (isDecision(r)) return out;
    }
  }

  /** Sends a command and returns what the milter sent for it, the decision last. */
  async ask(cmd: MtaCommand): Promise<MilterReply[]> {
    this.send(cmd);
    return this.untilDecision();
  }

  /** Sends a command and returns only the decision (asserting nothing else came). */
  async decision(cmd: MtaCommand): Promise<MilterReply> {
    const got = await this.ask(cmd);
    if (got.length !== 1) throw new Error(`expected one decision for ${cmd.kind}, got ${JSON.stringify(got)}`);
    return got[0] as MilterReply;
  }

  /** OPTNEG: Postfix's offer unless given; the milter's answer. */
  async negotiate(offer: MtaCommand & { kind: 'optneg' } = POSTFIX_OFFER): Promise<MilterReply & { kind: 'optneg' }> {
    this.send(offer);
    const r = await this.reply();
    if (r.kind !== 'optneg') throw new Error(`expected OPTNEG, got ${r.kind}`);
    return r;
  }

  /** Whether the milter has sent nothing more so far (for events negotiated without a reply). */
  get pending(): number {
    return this.replies.length;
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
