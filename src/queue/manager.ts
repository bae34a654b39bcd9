// The queue manager: delivers what the spool holds. On start it picks up every
// active entry (mail that got a 250 before a crash or restart); after each
// attempt a recipient is finished (delivered, or failed permanently and
// bounced) or retried with exponential backoff from queue.retry_min to
// queue.retry_max; past queue.lifetime a temporary failure becomes permanent
// (5.4.7) and is bounced. A recipient is recorded as finished in the spool
// only once its outcome is final AND, for a failure, its DSN was handed to the
// outbound relay (relay.smtp), or needs none (the null sender — then the
// log line is the record). A restart resumes where it stopped.
//
// LMTP deliveries that outlive the reply window are adopted: the message is
// spooled for the recipients still in flight, the client gets 250, and each
// in-flight outcome is recorded here as it arrives.
//
// Redelivery: a copy written whose outcome was never recorded (the master or
// the worker killed between the write and markDone) would be written again by
// the next attempt. So every delivery of a spooled recipient carries its
// redelivery key (queue id + address: src/mail/redelivery.ts), from which each
// copy gets a token the Maildir leaf puts in the file's name; an attempt that
// may repeat an earlier one — every attempt but the first of an entry this
// process spooled itself: entries found at start, adopted ones, retries —
// asks the worker to look for the token in new/ and cur/ first and counts a
// copy found there as delivered. The first attempt pays nothing (no earlier
// attempt can have used its queue id); a repeat pays one listing of the
// folder's new/ and cur/ per Maildir copy. Retries after a temporary failure
// check too: a recipient with two copies, one written and one deferred, then
// gets only the missing one. Not covered, written again as before: mbox and
// pipe copies (an append or a command leaves no name to look for; Postfix
// local(8) has the same window, "better safe than sorry"), forward and list
// copies (the next hop's duplicate window), an alias list's local
// subscribers (their Message-ID suppression, dedupe.ts, covers most), and a
// Maildir copy the user deleted or filed elsewhere in between.
//
// Shutdown: halt() (at SIGTERM) starts no attempt from then on, and mayStart()
// tells the pool not to start a queue delivery that still waits for a worker
// slot; stop(waitMs) waits for the running attempts and adopted deliveries to
// record their outcomes, at most waitMs. What did not finish stays in the
// spool for the next start.
import type { Config } from '../config/index.js';
import type { Logger } from '../log.js';
import type { Envelope, TlsSession } from '../mail/envelope.js';
import { parseMessage, type ParsedMessage } from '../mail/message.js';
import { redeliveryKey, type Redelivery } from '../mail/redelivery.js';
import { publicStatus, type RecipientOutcome } from '../mail/outcome.js';
import { isSuccess, isTemporary, status, type Status } from '../mail/status.js';
import type { Relays } from '../relay/index.js';
import { buildBounce, shouldBounce, type BounceRecipient } from './dsn.js';
import type { SpoolEntry, Spool } from './spool.js';

export interface QueueDeps {
  readonly spool: Spool;
  readonly config: () => Config;
  readonly log: Logger;
  /**
   * One spooled recipient: resolved again and delivered (src/local
   * deliverToAddress) with its redelivery key, and whether this attempt may
   * repeat one whose outcome was lost; never rejects for mail trouble.
   */
  readonly deliver: (env: Envelope, message: ParsedMessage, address: string, redelivery: Redelivery) => Promise<RecipientOutcome>;
  /** Records one recipient's outcome in the delivery log (the one writer: src/local/delivery-log.ts). */
  readonly report: (r: QueueReport) => void;
  /** Where bounces go out (relay.smtp). */
  readonly relays: Relays;
}

export interface QueueInfo {
  readonly id: string;
  readonly sender: string;
  readonly arrival: number;
  readonly recipients: readonly string[];
  readonly done: readonly string[];
  readonly size: number;
  readonly attempts: number;
  /** ms since the epoch of the next attempt; undefined = running or due. */
  readonly nextAttempt?: number;
  readonly lastError?: string;
}

/** One attempt's outcome for one recipient, as the delivery log line is made from it. */
export interface QueueReport {
  readonly queueId: string;
  readonly to: string;
  readonly outcome: RecipientOutcome;
  /** What the queue records when it differs from the outcome's status (5.4.7 past queue.lifetime). */
  readonly final?: Status;
  readonly arrival: Date;
  /** The TLS session the message came over, from the spool entry; absent for plaintext. */
  readonly tls?: TlsSession;
}

/** The entry's TLS session as an optional field; a malformed one (a hand-edited spool file) is left out. */
function tlsOf(entry: SpoolEntry): { tls?: TlsSession } {
  const t = entry.envelope.tls as Partial<TlsSession> | null | undefined;
  return typeof t === 'object' && t !== null && typeof t.protocol === 'string' && typeof t.cipher === 'string' ? { tls: { protocol: t.protocol, cipher: t.cipher } } : {};
}

interface Outcome extends RecipientOutcome {
  readonly address: string;
}

export class QueueManager {
  private readonly attempts = new Map<string, number>();
  private readonly lastError = new Map<string, string>();
  private readonly timers = new Map<string, { timer: NodeJS.Timeout; at: number }>();
  private readonly waiting: string[] = [];
  private readonly running = new Set<string>();
  /** Adopted LMTP deliveries still in flight: not to be attempted meanwhile. */
  private readonly adopted = new Set<string>();
  /** Entries that may have been attempted before (found at start, adopted, attempted): their attempts look for earlier copies. */
  private readonly seen = new Set<string>();
  private readonly idleWaiters: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly d: QueueDeps) {}

  /** Schedules every entry already in the spool. */
  async start(): Promise<number> {
    const ids = await this.d.spool.list();
    for (const id of ids) {
      this.seen.add(id);
      this.schedule(id, 0);
    }
    return ids.length;
  }

  /** Called after a 250: deliver soon. */
  schedule(id: string, delayMs: number): void {
    if (this.stopped || this.adopted.has(id)) return;
    const old = this.timers.get(id);
    if (old) clearTimeout(old.timer);
    this.timers.delete(id);
    if (delayMs <= 0) {
      this.push(id);
      return;
    }
    const timer = setTimeout(() => {
      this.timers.delete(id);
      this.push(id);
    }, delayMs);
    this.timers.set(id, { timer, at: Date.now() + delayMs });
  }

  /** Attempts every waiting entry now (mailproc queue flush). */
  flush(): number {
    const ids = [...this.timers.keys()];
    for (const id of ids) this.schedule(id, 0);
    return ids.length;
  }

  /**
   * Takes over an LMTP message whose deliveries outlived the reply window.
   * The entry must already be spooled (durably) for exactly these recipients.
   */
  adopt(id: string, inFlight: readonly { address: string; outcome: Promise<RecipientOutcome> }[]): void {
    this.adopted.add(id);
    this.seen.add(id);
    const marked = new Set<string>();
    void Promise.all(inFlight.map(async (f) => {
      const o = await f.outcome;
      if (isSuccess(o.status)) {
        await this.d.spool.markDone(id, f.address);
        marked.add(f.address);
      }
      return { address: f.address, ...o };
    }))
      .then(async (outcomes) => {
        const entry = await this.d.spool.read(id);
        await this.finish(entry, outcomes, marked);
      })
      .catch((err: unknown) => this.d.log.error(`adopted delivery failed: ${(err as Error).stack ?? String(err)}`, undefined, id))
      .finally(() => {
        this.adopted.delete(id);
        this.wakeIdleWaiters();
        if (this.timers.has(id) || this.stopped) return;
        // finish() scheduled a retry when something is left; make sure nothing is orphaned.
        void this.d.spool.list().then((ids) => {
          if (ids.includes(id) && !this.timers.has(id) && !this.running.has(id)) this.schedule(id, this.d.config().queue.retry_min);
        });
      });
  }

  /**
   * SIGTERM: from now on no attempt starts, and a recipient of a running
   * attempt that still waits for a worker slot is not started either
   * (mayStart() turns false: the pool answers it 4.3.0 and it stays queued).
   * Entries stay in the spool.
   */
  halt(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t.timer);
    this.timers.clear();
    this.waiting.length = 0;
  }

  /** False once halted: asked by the pool when a queue delivery reaches a worker slot. */
  readonly mayStart = (): boolean => !this.stopped;

  /**
   * Halts, then resolves when the running attempts and adopted LMTP deliveries
   * have recorded their outcomes, or after waitMs (what is left stays in the
   * spool; an outcome not recorded means a retry after the restart — a possible
   * duplicate, never a loss). The caller bounds the deliveries themselves
   * (WorkerPool.terminate at the end of the shutdown grace).
   */
  async stop(waitMs = Infinity): Promise<void> {
    this.halt();
    if (this.running.size === 0 && this.adopted.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const settled = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    const late = Number.isFinite(waitMs) ? new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), waitMs); }) : new Promise<never>(() => undefined);
    const r = await Promise.race([settled, late]);
    clearTimeout(timer);
    if (r === 'late') {
      this.d.log.warn(`shutdown: not waiting any longer for ${[...this.running, ...this.adopted].join(' ')}; they stay in the spool`);
    }
  }

  /**
   * Messages in the queue's hands now — waiting for their next attempt, due,
   * running or adopted — counted from memory, without reading the spool
   * (the metrics scrape asks for it).
   */
  depth(): number {
    return new Set([...this.timers.keys(), ...this.waiting, ...this.running, ...this.adopted]).size;
  }

  /** What the spool holds, for `mailproc queue list`. */
  async list(): Promise<QueueInfo[]> {
    const out: QueueInfo[] = [];
    for (const id of await this.d.spool.list()) {
      const e = await this.d.spool.read(id).catch(() => undefined);
      if (!e) continue;
      const next = this.timers.get(id)?.at;
      const err = this.lastError.get(id);
      out.push({
        id, sender: e.envelope.sender, arrival: e.envelope.arrival, recipients: e.envelope.recipients,
        done: [...e.done], size: e.raw.length, attempts: this.attempts.get(id) ?? 0,
        ...(next !== undefined ? { nextAttempt: next } : {}), ...(err !== undefined ? { lastError: err } : {}),
      });
    }
    return out;
  }

  /** Removes an entry without delivering it (mailproc queue delete): logged, like postsuper -d. */
  async delete(id: string): Promise<boolean> {
    if (this.running.has(id) || this.adopted.has(id)) return false;
    const ids = await this.d.spool.list();
    if (!ids.includes(id)) return false;
    const t = this.timers.get(id);
    if (t) clearTimeout(t.timer);
    this.timers.delete(id);
    await this.d.spool.remove(id);
    this.seen.delete(id);
    this.d.log.info('removed by the administrator', undefined, id);
    return true;
  }

  private wakeIdleWaiters(): void {
    if (this.running.size === 0 && this.adopted.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private push(id: string): void {
    if (this.running.has(id) || this.waiting.includes(id)) return;
    this.waiting.push(id);
    this.pump();
  }

  private pump(): void {
    const limit = this.d.config().queue.active_limit;
    while (!this.stopped && this.running.size < limit && this.waiting.length > 0) {
      const id = this.waiting.shift() as string;
      this.running.add(id);
      void this.attempt(id).catch((err: unknown) => {
        this.d.log.error(`queue attempt failed: ${(err as Error).stack ?? String(err)}`, undefined, id);
        if (!this.stopped) this.schedule(id, this.d.config().queue.retry_min);
      }).finally(() => {
        this.running.delete(id);
        this.wakeIdleWaiters();
        this.pump();
      });
    }
  }

  private envelopeOf(entry: SpoolEntry): Envelope {
    const e = entry.envelope;
    return {
      queueId: e.id, sender: e.sender, helo: e.helo, clientAddress: e.clientAddress, protocol: e.protocol, arrival: new Date(e.arrival),
      ...tlsOf(entry),
    };
  }

  private async attempt(id: string): Promise<void> {
    const entry = await this.d.spool.read(id).catch((err: unknown) => {
      // Removed meanwhile (delete, or finished by an adopted delivery): nothing to do.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    });
    if (!entry) {
      this.seen.delete(id);
      return;
    }
    const check = this.seen.has(id);
    this.seen.add(id);
    const env = this.envelopeOf(entry);
    const message = parseMessage(entry.raw);
    // A delivered recipient is recorded as soon as it is delivered, not when
    // the whole attempt ends: a crash meanwhile must not deliver it again.
    const marked = new Set<string>();
    const outcomes = await Promise.all(entry.envelope.recipients
      .filter((address) => !entry.done.has(address.toLowerCase()))
      .map(async (address): Promise<Outcome> => {
        const o = await this.d.deliver(env, message, address, { key: redeliveryKey(id, address), check });
        if (isSuccess(o.status)) {
          await this.d.spool.markDone(id, address);
          marked.add(address);
        }
        return { address, ...o };
      }));
    await this.finish(entry, outcomes, marked);
  }

  /** Logs and records outcomes, bounces permanent failures, schedules what is left. */
  private async finish(entry: SpoolEntry, outcomes: readonly Outcome[], marked: ReadonlySet<string> = new Set()): Promise<void> {
    const c = this.d.config();
    const id = entry.envelope.id;
    const age = Date.now() - entry.envelope.arrival;
    const expired = age > c.queue.lifetime;
    const failed: BounceRecipient[] = [];
    const finished: string[] = [];
    let remaining = 0;
    for (const o of outcomes) {
      let s = o.status;
      if (isTemporary(s) && expired) s = status('5.4.7', `delivery time expired: ${o.detail ?? s.text}`);
      this.d.report({ queueId: id, to: o.address, outcome: o, ...(s !== o.status ? { final: s } : {}), arrival: new Date(entry.envelope.arrival), ...tlsOf(entry) });
      if (isTemporary(s)) {
        remaining++;
        this.lastError.set(id, `${o.address}: ${s.code} ${o.detail ?? s.text}`);
      } else if (isSuccess(s)) {
        finished.push(o.address);
      } else {
        // The sender reads the DSN: a leaf's words (paths, users) stay in the log, as in replies.
        failed.push({ address: o.address, status: s === o.status ? publicStatus(o) : publicStatus({ status: s, detail: s.text }) });
      }
    }
    if (failed.length > 0) {
      if (await this.bounce(entry, failed)) finished.push(...failed.map((f) => f.address));
      else remaining += failed.length;
    }
    for (const address of finished) if (!marked.has(address)) await this.d.spool.markDone(id, address);
    const left = entry.envelope.recipients.filter((a) => !entry.done.has(a.toLowerCase()) && !finished.includes(a));
    if (left.length === 0) {
      await this.d.spool.remove(id);
      this.attempts.delete(id);
      this.lastError.delete(id);
      this.seen.delete(id);
      this.d.log.info('removed', undefined, id);
      return;
    }
    const n = (this.attempts.get(id) ?? 0) + 1;
    this.attempts.set(id, n);
    const wait = Math.min(c.queue.retry_min * 2 ** (n - 1), c.queue.retry_max);
    this.d.log.debug(`retry in ${Math.round(wait / 1000)}s`, { remaining: Math.max(remaining, left.length) }, id);
    if (!this.adopted.has(id)) this.schedule(id, wait);
  }

  /**
   * Sends one DSN for the failed recipients. True when the failures are
   * settled (DSN accepted by the relay, or none is due); false to keep them
   * and try the bounce again with the next attempt.
   */
  private async bounce(entry: SpoolEntry, failed: readonly BounceRecipient[]): Promise<boolean> {
    const c = this.d.config();
    const id = entry.envelope.id;
    const to = failed.map((f) => f.address).join(',');
    if (!shouldBounce(entry.envelope.sender)) {
      this.d.log.info(`no bounce: the sender <${entry.envelope.sender}> is null or a mailer daemon (a bounce is never bounced)`, { to }, id);
      return true;
    }
    const dsn = buildBounce({
      reportingMta: c.hostname, queueId: id, sender: entry.envelope.sender, arrival: new Date(entry.envelope.arrival),
      recipients: failed, original: entry.raw,
    });
    const relay = this.d.relays.outbound();
    const [s] = await relay.send({ from: '', to: [dsn.to], raw: dsn.raw }) as [Status];
    if (isSuccess(s)) {
      this.d.log.info(`sender non-delivery notification sent to <${entry.envelope.sender}>`, { relay: relay.where, dsn: s.code }, id);
      return true;
    }
    this.d.log.warn(`bounce to <${entry.envelope.sender}> not sent: ${s.code} ${s.text}`, { relay: relay.where }, id);
    // A relay that refuses the DSN for good, or still cannot take it after twice
    // the queue lifetime: give up, loudly — a bounce cannot bounce.
    if (!isTemporary(s) || Date.now() - entry.envelope.arrival > 2 * c.queue.lifetime) {
      this.d.log.error(`bounce to <${entry.envelope.sender}> given up: ${s.text}`, { to }, id);
      return true;
    }
    return false;
  }
}
