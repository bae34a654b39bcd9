// The queue manager: delivers what the spool holds. On start it picks up every
// active entry (mail that got a 250 before a crash or restart); after each
// attempt a recipient is finished (delivered, or failed permanently) or
// retried with exponential backoff from queue.retry_min to queue.retry_max;
// past queue.lifetime it is given up. Finished recipients are recorded in the
// spool before the next step, so a restart resumes where it stopped.
// Bounce messages (DSN) come with the per-user workers issue; until then a
// permanent failure or an expiry is logged status=bounced and the entry
// removed — never silently: the log line names sender, recipient and reason.
import type { Config } from '../config/index.js';
import type { Logger } from '../log.js';
import { parseRecipient } from '../mail/address.js';
import { parseMessage } from '../mail/message.js';
import { isTemporary, status, statusWord, type Status } from '../mail/status.js';
import type { AcceptedRecipient, IntakeEnvelope } from '../smtp/server.js';
import type { RecipientOutcome, ResolvedRecipient } from '../workers/dispatch.js';
import type { Spool } from './spool.js';

export interface QueueDeps {
  readonly spool: Spool;
  readonly config: () => Config;
  readonly log: Logger;
  readonly resolve: (rcpt: ReturnType<typeof parseRecipient>) => ResolvedRecipient | undefined;
  readonly deliver: (env: IntakeEnvelope, message: ReturnType<typeof parseMessage>, r: AcceptedRecipient) => Promise<RecipientOutcome>;
}

const MAX_CONCURRENT = 16;

export class QueueManager {
  private readonly attempts = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly waiting: string[] = [];
  private readonly running = new Set<string>();
  private readonly idleWaiters: (() => void)[] = [];
  private stopped = false;

  constructor(private readonly d: QueueDeps) {}

  /** Schedules every entry already in the spool. */
  async start(): Promise<number> {
    const ids = await this.d.spool.list();
    for (const id of ids) this.schedule(id, 0);
    return ids.length;
  }

  /** Called after a 250: deliver soon. */
  schedule(id: string, delayMs: number): void {
    if (this.stopped) return;
    const old = this.timers.get(id);
    if (old) clearTimeout(old);
    if (delayMs <= 0) {
      this.timers.delete(id);
      this.push(id);
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(id);
      this.push(id);
    }, delayMs);
    this.timers.set(id, t);
  }

  /** Stops scheduling; resolves when running attempts have finished. Entries stay in the spool. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.waiting.length = 0;
    if (this.running.size > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Ids queued or waiting for a retry (for status and tests). */
  pending(): string[] {
    return [...new Set([...this.running, ...this.waiting, ...this.timers.keys()])];
  }

  private push(id: string): void {
    if (this.running.has(id) || this.waiting.includes(id)) return;
    this.waiting.push(id);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.running.size < MAX_CONCURRENT && this.waiting.length > 0) {
      const id = this.waiting.shift() as string;
      this.running.add(id);
      void this.attempt(id).catch((err: unknown) => {
        this.d.log.error(`queue attempt failed: ${(err as Error).stack ?? String(err)}`, undefined, id);
        if (!this.stopped) this.schedule(id, this.d.config().queue.retry_min);
      }).finally(() => {
        this.running.delete(id);
        if (this.running.size === 0) for (const w of this.idleWaiters.splice(0)) w();
        this.pump();
      });
    }
  }

  private async attempt(id: string): Promise<void> {
    const c = this.d.config();
    const entry = await this.d.spool.read(id);
    const e = entry.envelope;
    const env: IntakeEnvelope = {
      queueId: e.id, sender: e.sender, helo: e.helo, clientAddress: e.clientAddress,
      protocol: e.protocol, arrival: new Date(e.arrival),
    };
    const message = parseMessage(entry.raw);
    const age = Date.now() - e.arrival;
    const expired = age > c.queue.lifetime;
    let remaining = 0;
    let lastTemp: Status | undefined;
    for (const address of e.recipients) {
      if (entry.done.has(address.toLowerCase())) continue;
      const rcpt = parseRecipient(address, c.delivery.recipient_delimiter);
      const resolved = this.d.resolve(rcpt);
      const outcome: RecipientOutcome = resolved === undefined
        ? { status: status('5.1.1', `<${address}>: Recipient address rejected: User unknown`), relay: 'none' }
        : await this.d.deliver(env, message, { rcpt, resolved });
      let s = outcome.status;
      if (isTemporary(s) && expired) s = status('5.4.7', `delivery time expired: ${s.text}`);
      const delay = (age / 1000).toFixed(3);
      this.d.log.info(s.text, { to: address, relay: outcome.relay, delay, dsn: s.code, status: statusWord(s) }, id);
      if (isTemporary(s)) {
        remaining++;
        lastTemp = s;
      } else {
        await this.d.spool.markDone(id, address);
      }
    }
    if (remaining === 0) {
      await this.d.spool.remove(id);
      this.attempts.delete(id);
      this.d.log.info('removed', undefined, id);
      return;
    }
    const n = (this.attempts.get(id) ?? 0) + 1;
    this.attempts.set(id, n);
    const wait = Math.min(c.queue.retry_min * 2 ** (n - 1), c.queue.retry_max);
    this.d.log.debug(`retry in ${Math.round(wait / 1000)}s: ${lastTemp?.text ?? ''}`, { remaining }, id);
    this.schedule(id, wait);
  }
}
