// Intake: what happens to a message once the protocol layer (src/smtp) has
// read it — the contract between the listeners and the recipient layer.
//   RCPT  → acceptRecipient: the tables decide (resolve.ts).
//   LMTP  → deliverNow: each distinct recipient delivered once (a duplicate
//           RCPT shares the first one's outcome, as Dovecot does); the reply is
//           the real outcome when every delivery ends within lmtp.window; past
//           it the recipients still running are either spooled durably and
//           answered 250 (on_timeout: queue — the queue records their outcomes
//           as they arrive) or answered 451 4.3.0 (defer).
//   SMTP  → enqueue: written to the spool and fsynced before the 250; the
//           queue delivers it afterwards.
// Loop checks live here and in deliver.ts: 100 Received fields → 5.4.6 for
// every recipient; a Delivered-To for the recipient → 5.4.6 for that one.
// The delivery log line for answered LMTP recipients is written here through
// delivery-log.ts; for spooled ones the queue writes it through the same.
//
// Exports: IntakeHandlers, IntakeResult, createIntake, IntakeDeps.
// Failure contract: never rejects for mail trouble; a spool failure's text
// (it names the spool's paths) is logged and carried as `detail`, so the
// listener sends the code's standard text (smtp/replies.ts outcomeReply).
import type { Config } from '../config/index.js';
import type { Tables } from '../db/index.js';
import type { Logger } from '../log.js';
import type { Envelope } from '../mail/envelope.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import { hopCount, parseMessage, type ParsedMessage } from '../mail/message.js';
import type { RecipientOutcome } from '../mail/outcome.js';
import { isSuccess, status, type Status } from '../mail/status.js';
import type { QueueManager } from '../queue/manager.js';
import type { Spool } from '../queue/spool.js';
import type { DecisionLog } from './decision-log.js';
import { logDelivery, tlsFields } from './delivery-log.js';
import { acceptRecipient, type Recipient } from './resolve.js';
import { srsRecipient } from './srs.js';

/** What a listener turns into a reply: a status, and the log-only detail that makes its text private. */
export type IntakeResult = Pick<RecipientOutcome, 'status' | 'detail'>;

/** What the LMTP/SMTP listeners call; implemented by createIntake. */
export interface IntakeHandlers {
  readonly config: () => Config;
  readonly log: Logger;
  /** Where the listeners count connections they refuse; undefined: nowhere. */
  readonly metrics?: MetricsEvents;
  /** RCPT: the recipient, or the status to refuse it with. Never throws. */
  acceptRecipient(address: string, declaredSize: number | undefined): Recipient | Status;
  /** LMTP after DATA: one result per element of `recipients`, in order. */
  deliverNow(env: Envelope, raw: Buffer, recipients: readonly Recipient[]): Promise<IntakeResult[]>;
  /** SMTP after DATA: one result for the whole message; 2.x.x only once fsynced. */
  enqueue(env: Envelope, raw: Buffer, recipients: readonly Recipient[]): Promise<IntakeResult>;
}

export interface IntakeDeps {
  readonly config: () => Config;
  readonly log: Logger;
  readonly tables: Tables;
  readonly spool: Spool;
  readonly queue: QueueManager;
  /** One recipient, now (deliver.ts with the daemon's context). */
  readonly deliver: (env: Envelope, message: ParsedMessage, r: Recipient) => Promise<RecipientOutcome>;
  /** Where final decisions are recorded for `mailproc rules log` (decision-log.ts); undefined: nowhere. */
  readonly decisions?: DecisionLog;
  /** Counts accepted messages and logged recipients (src/metrics); undefined: nothing is counted. */
  readonly metrics?: MetricsEvents;
}

const MAX_HOPS = 100;

export function createIntake(d: IntakeDeps): IntakeHandlers {
  const spoolFor = async (env: Envelope, raw: Buffer, addresses: readonly string[]): Promise<Status> => {
    const s = await d.spool.enqueue({
      id: env.queueId, sender: env.sender, recipients: [...addresses],
      helo: env.helo, clientAddress: env.clientAddress, protocol: env.protocol, arrival: env.arrival.getTime(),
      ...(env.tls !== undefined ? { tls: env.tls } : {}),
    }, raw);
    if (!isSuccess(s)) d.log.error(s.text, undefined, env.queueId);
    return s;
  };
  const privately = (s: Status): IntakeResult => (isSuccess(s) ? { status: s } : { status: s, detail: s.text });
  /** The intake line (Postfix's qmgr "from=<…>, size=…, nrcpt=…"), and the hop check every recipient shares. */
  const received = (env: Envelope, raw: Buffer, n: number): { message: ParsedMessage; loop?: Status } => {
    d.log.info('', { from: env.sender, size: raw.length, nrcpt: n, proto: env.protocol, ...tlsFields(env.tls) }, env.queueId);
    d.metrics?.messageAccepted(env.protocol);
    const message = parseMessage(raw);
    const hops = hopCount(message.headers);
    return hops >= MAX_HOPS ? { message, loop: status('5.4.6', `Too many hops (${hops} Received header fields): mail forwarding loop`) } : { message };
  };

  return {
    config: d.config,
    log: d.log,
    ...(d.metrics !== undefined ? { metrics: d.metrics } : {}),

    acceptRecipient(address, declaredSize) {
      const c = d.config();
      return acceptRecipient(d.tables, address, {
        recipientDelimiter: c.delivery.recipient_delimiter, log: d.log, special: (rcpt) => srsRecipient(c, rcpt),
        ...(declaredSize !== undefined ? { declaredSize } : {}),
      });
    },

    async enqueue(env, raw, recipients) {
      const { loop } = received(env, raw, recipients.length);
      if (loop !== undefined) return { status: loop };
      const s = await spoolFor(env, raw, recipients.map((r) => r.rcpt.address));
      if (isSuccess(s)) d.queue.schedule(env.queueId, 0);
      return privately(s);
    },

    async deliverNow(env, raw, recipients) {
      const { message, loop } = received(env, raw, recipients.length);
      if (loop !== undefined) return recipients.map(() => ({ status: loop }));
      interface Running { readonly r: Recipient; readonly outcome: Promise<RecipientOutcome>; done?: RecipientOutcome; logged?: boolean }
      const byAddress = new Map<string, Running>();
      // Set while the queue takes the late recipients over: it records and logs their outcomes then.
      let handedOver = false;
      const log = (e: Running, o: RecipientOutcome): void => {
        e.logged = true;
        logDelivery(d.log, { queueId: env.queueId, to: e.r.rcpt.address, outcome: o, arrival: env.arrival, ...(env.tls !== undefined ? { tls: env.tls } : {}) }, d.decisions, d.metrics);
      };
      for (const r of recipients) {
        const key = r.rcpt.address.toLowerCase();
        if (byAddress.has(key)) continue;
        const entry: Running = {
          r,
          outcome: d.deliver(env, message, r).then((o) => {
            entry.done = o;
            if (!handedOver) log(entry, o);
            return o;
          }),
        };
        byAddress.set(key, entry);
      }
      const c = d.config();
      let timer: NodeJS.Timeout | undefined;
      const inTime = await Promise.race([
        Promise.all([...byAddress.values()].map((e) => e.outcome)).then(() => true),
        new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), c.lmtp.window); }),
      ]);
      clearTimeout(timer);
      const late = new Map<string, IntakeResult>();
      if (!inTime) {
        const running = [...byAddress.values()].filter((e) => e.done === undefined);
        let result: IntakeResult;
        if (c.lmtp.on_timeout === 'queue') {
          handedOver = true;
          const s = await spoolFor(env, raw, running.map((e) => e.r.rcpt.address));
          if (isSuccess(s)) {
            d.queue.adopt(env.queueId, running.map((e) => ({ address: e.r.rcpt.address, outcome: e.outcome })));
          } else {
            // Not spooled: the client gets 4xx and retries; what finished meanwhile is logged here after all.
            handedOver = false;
            for (const e of running) if (e.done !== undefined && e.logged !== true) log(e, e.done);
          }
          result = privately(s);
        } else {
          // The deliveries go on and are logged as they end; the MTA retries (a copy may then be written twice).
          result = { status: status('4.3.0', `delivery is taking longer than ${Math.round(c.lmtp.window / 1000)} s; try again later`) };
        }
        for (const e of running) late.set(e.r.rcpt.address.toLowerCase(), result);
        d.log.warn(`delivery window of ${c.lmtp.window} ms passed for ${running.length} recipient(s): ${result.status.code} ${result.status.text}`, undefined, env.queueId);
      }
      return recipients.map((r) => {
        const key = r.rcpt.address.toLowerCase();
        return late.get(key) ?? (byAddress.get(key)?.done as RecipientOutcome);
      });
    },
  };
}
