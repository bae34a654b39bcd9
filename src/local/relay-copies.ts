// The copies of one recipient that leave through the relay rather than a
// worker: forward:ADDR and list:NAME (src/local/NOTES.md, "Relay copies").
// They run in the master — no user privileges are needed to hand bytes to
// an MTA — but inside the owner's delivery slots, so a flood of forwards to
// one address waits in that owner's queue only.
//
//   forward:ADDR  one SMTP transaction for all of the recipient's forwards,
//                 through the outbound relay (relay.smtp); envelope sender
//                 kept (or SRS-rewritten); Delivered-To: <recipient> and one
//                 Received prepended, the original bytes otherwise untouched.
//                 A forward that comes back finds its Delivered-To: 5.4.6.
//   list:NAME     the lists table's manager, once per message whatever the
//                 number of subscribers: lmtp:… → the manager's LMTP runner
//                 (Mailman 3), its per-recipient reply is ours; pipe:… → a
//                 pipe run as the owner (Mailman 2), like any pipe (the
//                 caller turns it into a worker step: pipeManager); "" or
//                 alias → expanded like a Postfix alias: each local
//                 subscriber through the normal recipient path (as its
//                 owner, with its rules, duplicate suppression on), remote
//                 ones forwarded; Delivered-To: <list> on every copy.
//
// Exports: relayCopies, pipeManager, createRelayCopyContext, RelayCopyContext,
// RelayCopyOptions, withDeliveredTo.
//
// Failure contract: never throws. The relay's own statuses come back (4.x.x
// retried, 5.x.x bounced, per recipient); a list the table does not know or
// whose manager is malformed → 4.3.5 (an admin fixes it, mail waits).
import type { Destination, ListEntry } from '../classify/rules.js';
import { splitCommand, type Tables } from '../db/index.js';
import { parseRecipient, type RecipientAddress } from '../mail/address.js';
import type { Envelope } from '../mail/envelope.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import { parseHeaders, type ParsedMessage } from '../mail/message.js';
import type { RecipientOutcome } from '../mail/outcome.js';
import { isSuccess, ok, status, type Status } from '../mail/status.js';
import { relayTraceHeader } from '../mail/trace.js';
import type { Relay } from '../relay/index.js';
import type { Logger } from '../log.js';
import { logDelivery } from './delivery-log.js';
import type { DuplicateFilter } from './dedupe.js';
import { lookupRecipient } from './resolve.js';

/** Alias lists inside alias lists: deeper than this is a configuration loop (Postfix's expansion limit is of this order). */
const MAX_EXPANSION_DEPTH = 8;

export interface RelayCopyContext {
  readonly hostname: string;
  /** relay.smtp: forwards (and remote subscribers of an alias list). */
  readonly outbound: () => Relay;
  /** A list manager's LMTP runner; throws on a malformed spec. */
  readonly lmtp: (manager: string) => Relay;
  /** The lists table's entry for a list:NAME destination. */
  readonly list: (name: string) => ListEntry | undefined;
  /** The envelope sender a forward carries (SRS when relay.srs has a secret); default: unchanged. */
  readonly forwardSender?: (sender: string) => string;
  /** Whether an address is ours (the tables know it): an alias list's subscriber goes through local delivery then. */
  readonly isLocal: (address: string) => boolean;
  /** A local subscriber of an alias list, through the normal recipient path with duplicate suppression. */
  readonly deliverLocal: (env: Envelope, message: ParsedMessage, address: string, list: string, depth: number) => Promise<RecipientOutcome>;
  /**
   * Remote subscribers of an alias list who already have this post (by
   * Message-ID, within dedupe.window): a retry of the list leaves them out.
   * seen() throws when the record cannot be read (the list defers); record()
   * never throws (a record not written is logged: at worst a second copy).
   */
  readonly remoteCopies?: {
    seen(list: string, subscriber: string, message: ParsedMessage): boolean;
    record(list: string, subscriber: string, message: ParsedMessage, queueId: string): Promise<void>;
  };
}

export interface RelayCopyOptions {
  readonly hostname: string;
  readonly relays: { outbound(): Relay; lmtp(manager: string): Relay };
  readonly tables: Tables;
  readonly delimiter: () => string;
  /** The normal recipient path for one address (deliver.ts deliverToAddress with the daemon's context). */
  readonly deliver: (env: Envelope, message: ParsedMessage, address: string, o: { depth: number; dedupe: boolean }) => Promise<RecipientOutcome>;
  readonly forwardSender?: (sender: string) => string;
  readonly log: Logger;
  /** Counts each subscriber's logged outcome (src/metrics); undefined: nothing is counted. */
  readonly metrics?: MetricsEvents;
  /** Duplicate records (dedupe.ts), so a retried alias list does not resend to remote subscribers who have it; undefined: no suppression. */
  readonly duplicates?: DuplicateFilter;
}

/** The daemon's RelayCopyContext: the relays, the lists table, and local delivery for alias lists. */
export function createRelayCopyContext(o: RelayCopyOptions): RelayCopyContext {
  return {
    hostname: o.hostname,
    outbound: () => o.relays.outbound(),
    lmtp: (manager) => o.relays.lmtp(manager),
    list: (name) => o.tables.lookup('lists', [name.toLowerCase()])?.value,
    isLocal: (address) => {
      try {
        return lookupRecipient(o.tables, parseRecipient(address, o.delimiter())) !== undefined;
      } catch {
        return true; // the table cannot be read: local delivery answers 4.3.0 and the list is retried
      }
    },
    deliverLocal: async (env, message, address, list, depth) => {
      const outcome = await o.deliver(env, message, address, { depth, dedupe: true });
      // Each subscriber's own line (Postfix's orig_to=); the list's line is the caller's.
      logDelivery(o.log, { queueId: env.queueId, to: address, origTo: list, outcome, arrival: env.arrival, ...(env.tls !== undefined ? { tls: env.tls } : {}) }, undefined, o.metrics);
      return outcome;
    },
    ...(o.forwardSender !== undefined ? { forwardSender: o.forwardSender } : {}),
    ...(o.duplicates !== undefined ? { remoteCopies: remoteCopies(o.duplicates, o.log) } : {}),
  };
}

function remoteCopies(duplicates: DuplicateFilter, log: Logger): NonNullable<RelayCopyContext['remoteCopies']> {
  return {
    seen: (list, subscriber, message) => {
      const key = duplicates.subscriberKey(list, subscriber, message);
      return key !== undefined && duplicates.seen(key) !== undefined;
    },
    record: async (list, subscriber, message, queueId) => {
      const key = duplicates.subscriberKey(list, subscriber, message);
      if (key === undefined) return;
      await duplicates.record(key, queueId).catch((err: unknown) => log.warn(`duplicate record for <${subscriber}> of list "${list}" not written: ${(err as Error).message}`, undefined, queueId));
    },
  };
}

/** The message with a Delivered-To line in front (bytes and header facts), for the copies an alias list expands to. */
export function withDeliveredTo(message: ParsedMessage, address: string): ParsedMessage {
  const line = Buffer.from(`Delivered-To: ${address.replace(/[\x00-\x1f\x7f]+/g, ' ')}\n`, 'utf8'); // eslint-disable-line no-control-regex
  const body = Buffer.concat([line, message.body]);
  return { body, receivedSize: message.receivedSize + line.length + 1, headers: parseHeaders(body) };
}

type RelayStep = { readonly destination: Destination & { kind: 'forward' | 'list' } };

/** For a list:NAME whose manager is pipe:COMMAND: the pipe to run as the owner (Mailman 2), or why not. */
export function pipeManager(entry: ListEntry | undefined): (Destination & { kind: 'pipe' }) | Status | undefined {
  if (entry === undefined || !entry.manager.startsWith('pipe:')) return undefined;
  const argv = splitCommand(entry.manager.slice('pipe:'.length));
  if (typeof argv === 'string') return status('4.3.5', `list manager "${entry.manager}" (${entry.origin}): ${argv}`);
  return { kind: 'pipe', argv };
}

/**
 * Sends the recipient's forward and list copies; one Status per step, in
 * order. `depth` counts alias lists already expanded on the way here.
 */
export async function relayCopies(ctx: RelayCopyContext, env: Envelope, message: ParsedMessage, rcpt: RecipientAddress, steps: readonly RelayStep[], depth: number): Promise<Status[]> {
  const info = { ...env, hostname: ctx.hostname, recipient: rcpt.address };
  const forwards = steps.flatMap((s, i) => (s.destination.kind === 'forward' ? [{ i, to: s.destination.address }] : []));
  const out: Status[] = steps.map(() => status('4.3.0', 'bug: relay copy not sent'));
  const sends: Promise<void>[] = [];
  if (forwards.length > 0) {
    sends.push((async () => {
      const raw = Buffer.concat([relayTraceHeader(info), message.body]);
      const from = ctx.forwardSender?.(env.sender) ?? env.sender;
      const statuses = await ctx.outbound().send({ from, to: forwards.map((f) => f.to), raw });
      forwards.forEach((f, k) => { out[f.i] = statuses[k] as Status; });
    })());
  }
  steps.forEach((s, i) => {
    if (s.destination.kind !== 'list') return;
    const name = s.destination.name;
    sends.push(toList(ctx, env, message, rcpt, name, depth).then((st) => { out[i] = st; }));
  });
  await Promise.all(sends);
  return out;
}

async function toList(ctx: RelayCopyContext, env: Envelope, message: ParsedMessage, rcpt: RecipientAddress, name: string, depth: number): Promise<Status> {
  const entry = ctx.list(name);
  if (entry === undefined) return status('4.3.5', `list "${name}" is not in the lists table`);
  const manager = entry.manager;
  if (manager === '' || manager === 'alias') return expand(ctx, env, message, rcpt, name, entry, depth);
  if (!manager.startsWith('lmtp:')) return status('4.3.5', `list "${name}": manager "${manager}" is not run by the relay (bug: pipe managers go to a worker)`);
  let relay: Relay;
  try {
    relay = ctx.lmtp(manager);
  } catch (err) {
    return status('4.3.5', `list "${name}" (${entry.origin}): ${(err as Error).message}`);
  }
  const raw = Buffer.concat([relayTraceHeader({ ...env, hostname: ctx.hostname, recipient: rcpt.address }), message.body]);
  const [s] = await relay.send({ from: env.sender, to: [name], raw });
  return s ?? status('4.3.0', `list manager ${relay.where} gave no reply`);
}

/** A list without a manager: each subscriber gets a copy, like a Postfix alias. */
async function expand(ctx: RelayCopyContext, env: Envelope, message: ParsedMessage, rcpt: RecipientAddress, name: string, entry: ListEntry, depth: number): Promise<Status> {
  if (depth >= MAX_EXPANSION_DEPTH) return status('5.4.6', `list "${name}": lists inside lists deeper than ${MAX_EXPANSION_DEPTH}: mail forwarding loop`);
  if (entry.subscribers.length === 0) return ok(`list "${name}" has no subscribers`);
  const copy = withDeliveredTo(message, rcpt.address);
  const local = entry.subscribers.filter((a) => ctx.isLocal(a));
  const statuses: Status[] = [];
  let remote: string[];
  try {
    remote = entry.subscribers.filter((a) => {
      if (ctx.isLocal(a)) return false;
      // Sent on an earlier try of this list: counted as delivered, not sent again.
      if (ctx.remoteCopies?.seen(name, a, message) === true) {
        statuses.push(ok(`<${a}>: duplicate suppressed`));
        return false;
      }
      return true;
    });
  } catch (err) {
    return status('4.3.0', `list "${name}": duplicate check failed: ${(err as Error).message}`);
  }
  await Promise.all([
    ...local.map(async (a) => {
      const o = await ctx.deliverLocal(env, copy, a, rcpt.address, depth + 1);
      // The status's own text, never the detail: it may reach the sender in a DSN, and details name paths and owners (they are in the subscriber's log line).
      statuses.push(isSuccess(o.status) ? o.status : status(o.status.code, `<${a}>: ${o.status.text}`));
    }),
    (async () => {
      if (remote.length === 0) return;
      const raw = Buffer.concat([relayTraceHeader({ ...env, hostname: ctx.hostname, recipient: rcpt.address }), message.body]);
      const from = ctx.forwardSender?.(env.sender) ?? env.sender;
      const sent = await ctx.outbound().send({ from, to: remote, raw });
      await Promise.all(sent.map(async (s, k) => {
        const a = remote[k] as string;
        statuses.push(isSuccess(s) ? s : status(s.code, `<${a}>: ${s.text}`));
        if (isSuccess(s)) await ctx.remoteCopies?.record(name, a, message, env.queueId);
      }));
    })(),
  ]);
  const failed = statuses.filter((s) => !isSuccess(s));
  if (failed.length === 0) return ok(`list "${name}": ${statuses.length} ${statuses.length === 1 ? 'copy' : 'copies'}`);
  // A subscriber's failure is the list's: retried (4.x.x, and the ones delivered
  // are suppressed as duplicates then) or bounced (5.x.x) — the sender learns
  // which subscriber from the DSN text.
  return failed.find((s) => s.code.startsWith('4')) ?? (failed[0] as Status);
}
