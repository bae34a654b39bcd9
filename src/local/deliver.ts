// Delivery of one message to one accepted recipient — the decision of what
// happens to it, in this order (src/local/NOTES.md says why here, in the
// master):
//   1. loop check: a Delivered-To naming this recipient → 5.4.6, nothing written;
//   2. identities: every user the recipient's rules could deliver as (rule
//      uid=, the uid table, the default) resolved to uid/gid/home; the owner is
//      the uid table's user (or the default); the rules are the admin's
//      locked ones, the owner's own (`mailproc rules`, user-rules.ts), the
//      admin's others, in that order;
//   3. spam check for the owner (src/local/spam.ts: the owner's checker, one
//      check per message per owner), obtained inside the owner's delivery
//      slots (pool.runInSlot): a flood to A waits in A's queue and never
//      delays B's checks; its X-Spam-* lines go on this recipient's copies;
//   4. plan (src/classify/plan.ts, pure) with the verdict in the facts and
//      templates expanded once, ${home} included;
//   5. copies: grouped per identity; the per-user directory under the mail
//      root made or checked (workers/mail-root.ts); one request per identity
//      to that identity's worker (a rule's uid= naming another user is
//      written as that user); forward and list copies go to the relay
//      (relay-copies.ts) inside the owner's slots; a Message-ID the owner
//      already has is suppressed when asked (dedupe.ts);
//   6. fold (fold.ts) into one outcome, with numeric timings, and the
//      decision (which rule placed each copy) for the decision log.
// Steps 2–4 are decideRecipient, which `mailproc rules test` calls too: a
// dry run is this code path stopping before step 5.
//
// Exports: deliverToRecipient, decideRecipient, RecipientDecision, DecideOptions, deliverToAddress (the queue's way in: the
// tables are asked again, as the queue picks the message up), DeliveryContext,
// VerdictSource.
//
// Failure contract: never throws for mail trouble; every path returns a
// RecipientOutcome. An identity that does not resolve is an admin error →
// 4.3.0 for its copies (never a bounce). A verdict source that throws is
// treated as "no verdict" (fail open) and logged; a source that wants to fail
// closed returns a Status instead (src/local/spam.ts applies on_error).
import { isAbsolute, resolve } from 'node:path';
import { candidateUsers, ownerOf, planDelivery, type Plan, type PlanDefaults, type PlanStep, type SpamVerdict } from '../classify/plan.js';
import { formatDestination } from '../classify/rule-text.js';
import type { Destination, ListEntry } from '../classify/rules.js';
import type { Logger } from '../log.js';
import type { RecipientAddress } from '../mail/address.js';
import type { Envelope } from '../mail/envelope.js';
import { hasDeliveredTo, type ParsedMessage } from '../mail/message.js';
import type { Decision, DecisionCopy, DeliveryTiming, RecipientOutcome } from '../mail/outcome.js';
import { redeliveryTokens, type Redelivery } from '../mail/redelivery.js';
import { isSuccess, ok, status, type Status } from '../mail/status.js';
import { traceHeader } from '../mail/trace.js';
import { resolveIdentity, type Identity } from '../os/identity.js';
import type { WorkerDestination } from '../workers/ipc.js';
import { prepareUserDirectories } from '../workers/mail-root.js';
import type { WorkerPool, WorkerTiming } from '../workers/pool.js';
import type { DuplicateFilter } from './dedupe.js';
import { foldCopies } from './fold.js';
import { pipeManager, relayCopies, type RelayCopyContext } from './relay-copies.js';
import type { ProbeLedger } from './probe.js';
import { answerVacations, type VacationContext } from './vacation.js';
import type { Tables } from '../db/index.js';
import { parseRecipient } from '../mail/address.js';
import { lookupRecipient, unknownUser, type Recipient, type ResolvedRecipient } from './resolve.js';
import { ruleOwnerAddress, type LayeredRule, type OwnerRules } from './user-rules.js';

/** What a spam check gives the recipient's copies: a verdict for the rules (none when unchecked) and the X-Spam-* lines to add. */
export interface SpamCheck {
  readonly verdict?: SpamVerdict;
  /** Header lines (LF-terminated) prepended to this recipient's copies after the trace header. */
  readonly header?: string;
}

/**
 * Where a spam verdict comes from (the owner's checker, running as the
 * owner: src/local/spam.ts). Called inside the owner's slots. A Status =
 * refuse the recipient with it (a checker that is down and configured to
 * fail closed: 4.x.x).
 */
export interface VerdictSource {
  check(owner: Identity, message: ParsedMessage, r: Recipient): Promise<SpamCheck | Status>;
}

export interface DeliveryContext {
  readonly pool: WorkerPool;
  readonly defaults: PlanDefaults;
  /** Our name, for the Received header. */
  readonly hostname: string;
  /** Base for relative paths in tables (the daemon's working directory). */
  readonly baseDir: string;
  /** delivery.allow_root: may this recipient's copies be written as uid/gid 0? */
  readonly allowRoot: (rcpt: RecipientAddress) => boolean;
  /** paths.mail: per-user directories directly under it are made (or checked) by the master. */
  readonly mailRoot?: string;
  /** False when a job reaches its slot means "do not start" (the queue after SIGTERM). */
  readonly mayStart?: () => boolean;
  readonly verdicts?: VerdictSource;
  /** The owners' own rules (`mailproc rules`); undefined: the tables' rules alone. */
  readonly ownerRules?: OwnerRules;
  /** Forwards and lists (relay-copies.ts); undefined: their copies defer with 4.3.5. */
  readonly relay?: RelayCopyContext;
  /** Duplicate suppression by Message-ID (dedupe.ts); undefined: none. */
  readonly duplicates?: DuplicateFilter;
  /** Addresses the tables do not hold but we answer for (SRS bounces, srs.ts), as at RCPT. */
  readonly special?: (rcpt: RecipientAddress) => ResolvedRecipient | Status | undefined;
  /** Vacation replies (vacation.ts); undefined: vacation rules send nothing. */
  readonly vacation?: VacationContext;
  /** mailmond's probes (probe.ts); undefined: a probe address discards what it gets. */
  readonly probes?: ProbeLedger;
  readonly log: Logger;
}

const identityKey = (user: string, group: string | undefined): string => `${user}\0${group ?? ''}`;

function absolute<D extends Destination>(d: D, base: string): D {
  return (d.kind === 'maildir' || d.kind === 'mbox') && !isAbsolute(d.path) ? { ...d, path: resolve(base, d.path) } : d;
}

const forWorker = (d: Destination): d is WorkerDestination => d.kind === 'maildir' || d.kind === 'mbox' || d.kind === 'pipe';

/** The step that took the longest in the worker, for delays=…/b/c/d. */
function slowest(timings: readonly WorkerTiming[]): WorkerTiming {
  return timings.reduce((a, b) => (b.slotMs + b.transferMs + b.workMs > a.slotMs + a.transferMs + a.workMs ? b : a));
}

/** Everything decided for one recipient before anything is written: `mailproc rules test` shows it, delivery executes it. */
export interface RecipientDecision {
  /** The owner's identity (or why it does not resolve). */
  readonly owner: Identity | string;
  /** Every rule in evaluation order (locked, the owner's, the admin's), as the plan saw them. */
  readonly rules: readonly LayeredRule[];
  readonly identities: ReadonlyMap<string, Identity | string>;
  /** The spam check (a Status: refuse the recipient, fail closed); `skipped` when the caller asked for none. */
  readonly spam: SpamCheck | Status;
  readonly spamSkipped: boolean;
  readonly plan: Plan;
  /** What the decision log records of it. */
  readonly decision: Decision;
}

export interface DecideOptions {
  /** Record each rule's fate in plan.trace. */
  readonly explain?: boolean;
  /** false: no spam check (a dry run without --spam). Default true. */
  readonly spam?: boolean;
}

function firstValue(headers: ReadonlyMap<string, readonly string[]>, name: string): string {
  return headers.get(name)?.[0] ?? '';
}

/**
 * Steps 2–4 of the header: identities, the owner's spam check in their
 * slots, the plan over the owner's and the admin's rules. No file is
 * written; the same function serves delivery and the dry run.
 */
export async function decideRecipient(ctx: DeliveryContext, env: Envelope, message: ParsedMessage, r: Recipient, o: DecideOptions = {}): Promise<RecipientDecision> {
  const { rcpt, resolved } = r;
  const base = {
    ...(resolved.uid !== undefined ? { uid: resolved.uid } : {}),
    ...(resolved.gid !== undefined ? { gid: resolved.gid } : {}),
    defaults: ctx.defaults,
  };
  const owner = ownerOf(base);
  const ownerIdentity = await resolveIdentity(owner.user, owner.group);
  const rules: LayeredRule[] = ctx.ownerRules !== undefined
    ? ctx.ownerRules.layered(rcpt, resolved.rules, typeof ownerIdentity === 'string' ? undefined : ownerIdentity)
    : resolved.rules.map((rule) => ({ rule, layer: 'admin' as const }));
  const owned = { ...base, rules: rules.map((l) => l.rule) };
  const identities = new Map<string, Identity | string>([[identityKey(owner.user, owner.group), ownerIdentity]]);
  await Promise.all(candidateUsers(owned).map(async (c) => {
    const key = identityKey(c.user, c.group);
    if (!identities.has(key)) identities.set(key, await resolveIdentity(c.user, c.group));
  }));
  const homes = new Map<string, string>();
  for (const [key, id] of identities) if (typeof id !== 'string') homes.set(key.slice(0, key.indexOf('\0')), id.home);

  const spamSkipped = o.spam === false;
  const checked: SpamCheck | Status = spamSkipped ? {} : await spamCheck(ctx, message, r, ownerIdentity);
  const verdict = 'code' in checked ? undefined : checked.verdict;
  const plan = planDelivery({
    recipient: rcpt,
    ...owned,
    facts: { sender: env.sender, size: message.receivedSize, headers: message.headers, ...(verdict !== undefined ? { spam: verdict } : {}) },
    homeOf: (user) => homes.get(user),
    ...(o.explain === true ? { explain: true } : {}),
  });
  const textOf = new Map(rules.flatMap((l) => (l.text !== undefined ? [[l.rule.origin, l.text] as const] : [])));
  const copy = (origin: string, destination: string, user: string): DecisionCopy => {
    const rule = textOf.get(origin);
    return { origin, ...(rule !== undefined ? { rule } : {}), destination, user };
  };
  const copies = plan.kind === 'deliver'
    ? plan.steps.map((s) => copy(s.origin, formatDestination(absolute(s.destination, ctx.baseDir)), s.user))
    : plan.origin !== undefined ? [copy(plan.origin, `reject:${plan.status.code}`, owner.user)] : [];
  const decision: Decision = {
    address: ruleOwnerAddress(rcpt), sender: env.sender, subject: firstValue(message.headers, 'subject'), copies,
  };
  return { owner: ownerIdentity, rules, identities, spam: checked, spamSkipped, plan, decision };
}

export interface DeliverOptions {
  /** Alias lists expanded on the way to this recipient (relay-copies.ts). */
  readonly depth?: number;
  /** Deliver a Message-ID this owner already has (within dedupe.window) once only: on for an alias list's subscribers. */
  readonly dedupe?: boolean;
  /**
   * The recipient's spool record (the queue's deliveries, and LMTP ones that
   * may be adopted by it): each worker copy gets a token, derived from its
   * destination, that the Maildir leaf puts in the file name and, when
   * `check`, looks for before writing (src/mail/redelivery.ts).
   */
  readonly redelivery?: Redelivery;
}

export async function deliverToRecipient(ctx: DeliveryContext, env: Envelope, message: ParsedMessage, r: Recipient, o: DeliverOptions = {}): Promise<RecipientOutcome> {
  const { rcpt } = r;
  if (hasDeliveredTo(message.headers, rcpt.address)) {
    return { status: status('5.4.6', `mail forwarding loop for ${rcpt.address}`), relay: 'none' };
  }
  const decided = await decideRecipient(ctx, env, message, r);
  const { identities, plan, decision } = decided;
  const checked = decided.spam;
  if ('code' in checked) return { status: checked, detail: checked.text, relay: 'spam' };
  if (plan.kind === 'refuse') return { status: plan.status, relay: 'rules', decision, ...(plan.internal === true ? { detail: plan.status.text } : {}) };
  // A probe address keeps no mail, not even a copy another rule asked for; no decision log entry either.
  if (plan.steps.some((s) => s.destination.kind === 'probe')) {
    return ctx.probes?.receive(env, message, rcpt.address, (work) => withOwnerSlot(ctx, decided.owner, work)) ?? { status: ok('Discarded by rule'), relay: 'probe' };
  }

  const applied = new Set(plan.steps.map((s) => s.origin));
  const dedupe = o.dedupe === true || decided.rules.some((l) => l.rule.dedupe === true && applied.has(l.rule.origin));
  const toList = plan.steps.some((s) => s.destination.kind === 'list');
  const duplicate = toList ? ctx.duplicates?.listKey(ruleOwnerAddress(rcpt), message)
    : dedupe ? ctx.duplicates?.key(decided.owner, message) : undefined;
  let first: string | undefined;
  try {
    first = duplicate !== undefined ? ctx.duplicates?.seen(duplicate) : undefined;
  } catch (err) {
    return { status: status('4.3.0', `duplicate check failed: ${(err as Error).message}`), relay: 'dedupe', decision };
  }
  if (first !== undefined) return { status: ok('duplicate suppressed'), relay: 'dedupe', decision };

  const relay = [...new Set(plan.steps.map((s) => s.destination.kind))].join('+');
  // A list whose manager is a pipe (Mailman 2) is a pipe run as the owner; other list and forward copies go to the relay.
  const lists = new Map<string, ListEntry | undefined>();
  const listOf = (name: string): ListEntry | undefined => {
    if (!lists.has(name)) lists.set(name, ctx.relay?.list(name));
    return lists.get(name);
  };
  const steps: PlanStep[] = [];
  const refused: Status[] = [];
  for (const step of plan.steps) {
    const d = step.destination;
    const piped = d.kind === 'list' && ctx.relay !== undefined ? pipeManager(listOf(d.name)) : undefined;
    if (piped === undefined) steps.push(step);
    else if ('argv' in piped) steps.push({ ...step, destination: piped });
    else refused.push(piped);
  }
  const relayed = steps.filter((s): s is PlanStep & { destination: Destination & { kind: 'forward' | 'list' } } => s.destination.kind === 'forward' || s.destination.kind === 'list');
  if (relayed.length > 0 && ctx.relay === undefined) {
    refused.push(...relayed.map((s) => status('4.3.5', `destination kind "${s.destination.kind}" has no relay in this context`)));
  }
  const byIdentity = new Map<string, PlanStep[]>();
  for (const step of steps) {
    if (!forWorker(step.destination)) continue;
    const key = identityKey(step.user, step.group);
    const list = byIdentity.get(key);
    if (list) list.push(step);
    else byIdentity.set(key, [step]);
  }
  const vacations = plan.steps.flatMap((s) => (s.destination.kind === 'vacation' ? [s.destination] : []));
  const replyIfDelivered = (delivered: boolean): void => {
    if (vacations.length === 0 || ctx.vacation === undefined) return;
    // After the delivery and not waited for: the client's reply does not wait on the relay.
    answerVacations(ctx.vacation, env, message, rcpt, vacations, decided.owner, 'code' in checked ? undefined : checked.verdict?.isSpam, delivered)
      .catch((err: unknown) => ctx.log.error(`vacation reply failed: ${(err as Error).stack ?? String(err)}`, undefined, env.queueId));
  };
  if (byIdentity.size === 0 && relayed.length === 0 && refused.length === 0) {
    replyIfDelivered(true);
    return { status: ok('Discarded by rule'), relay, decision };
  }

  const trace = traceHeader({ ...env, hostname: ctx.hostname, recipient: rcpt.address });
  const header = checked.header !== undefined ? Buffer.concat([trace, Buffer.from(checked.header, 'utf8')]) : trace;
  // a = from the end of DATA (or, from the queue, the message's arrival) to the dispatch of the copies.
  const beforeMs = Math.max(0, Date.now() - env.arrival.getTime());
  const timings: WorkerTiming[] = [];
  const allowRoot = ctx.allowRoot(rcpt);
  const relayContext = ctx.relay;
  // One token per worker copy, from its destination: the same on every attempt whatever the plan's order.
  const workerSteps = steps.filter((s) => forWorker(s.destination));
  const tokenOf = new Map<PlanStep, string>();
  if (o.redelivery !== undefined) {
    const tokens = redeliveryTokens(o.redelivery.key, workerSteps.map((s) => formatDestination(absolute(s.destination, ctx.baseDir))));
    workerSteps.forEach((s, i) => tokenOf.set(s, tokens[i] as string));
  }
  const sent = relayed.length === 0 || relayContext === undefined ? Promise.resolve([])
    : withOwnerSlot(ctx, decided.owner, () => relayCopies(relayContext, env, message, rcpt, relayed, o.depth ?? 0));
  const copies = await Promise.all([...byIdentity].map(async ([key, steps]): Promise<Status[]> => {
    const identity = identities.get(key) ?? await resolveIdentity((steps[0] as PlanStep).user, (steps[0] as PlanStep).group);
    if (typeof identity === 'string') {
      return steps.map(() => status('4.3.0', `cannot deliver to ${rcpt.address}: ${identity} (check the uid/gid tables)`));
    }
    const destinations = steps.map((s) => absolute(s.destination as WorkerDestination, ctx.baseDir));
    if (ctx.mailRoot !== undefined) {
      // The whole identity's copies wait for a fix: delivering the others now would duplicate them on the retry.
      const refused = await prepareUserDirectories(ctx.mailRoot, identity, destinations, allowRoot);
      if (refused !== undefined) return steps.map(() => refused);
    }
    const concurrency = steps.find((x) => x.concurrency !== undefined)?.concurrency;
    const res = await ctx.pool.deliver(identity, {
      ...(concurrency !== undefined ? { concurrency } : {}),
      ...(ctx.mayStart ? { mayStart: ctx.mayStart } : {}),
      allowRoot, sender: env.sender, arrival: env.arrival, header, body: message.body, destinations,
      recipient: { address: rcpt.address, local: rcpt.local, user: rcpt.user, extension: rcpt.extension, domain: rcpt.domain },
      ...(o.redelivery !== undefined ? { redelivery: { check: o.redelivery.check, tokens: steps.map((s) => tokenOf.get(s) as string) } } : {}),
    });
    timings.push(res.timing);
    return res.results.map((x) => x.status);
  }));
  const folded = foldCopies([...copies.flat(), ...(await sent), ...refused]);
  if (duplicate !== undefined && isSuccess(folded.status)) {
    // Delivered either way: a record that cannot be written only costs the suppression of a later copy.
    await ctx.duplicates?.record(duplicate, env.queueId).catch((err: unknown) => ctx.log.warn(`duplicate record for ${rcpt.address} not written: ${(err as Error).message}`, undefined, env.queueId));
  }
  replyIfDelivered(isSuccess(folded.status));
  const timing: DeliveryTiming | undefined = timings.length === 0 ? undefined : { beforeMs, ...slowest(timings) };
  return { status: folded.status, detail: folded.detail, relay, decision, ...(timing !== undefined ? { timing } : {}) };
}

/** Relay copies count against the owner's slots, like their worker copies; an owner that does not resolve has none to wait for. */
function withOwnerSlot<T>(ctx: DeliveryContext, owner: Identity | string, work: () => Promise<T>): Promise<T> {
  return typeof owner === 'string' ? work() : ctx.pool.runInSlot(owner, work);
}

/** The owner's check, made in the owner's slots; nothing without a source. */
async function spamCheck(ctx: DeliveryContext, message: ParsedMessage, r: Recipient, owner: Identity | string | undefined): Promise<SpamCheck | Status> {
  const source = ctx.verdicts;
  if (source === undefined) return {};
  if (owner === undefined || typeof owner === 'string') return {}; // its copies get 4.3.0 below
  try {
    return await ctx.pool.runInSlot(owner, () => source.check(owner, message, r));
  } catch (err) {
    ctx.log.error(`spam check for ${r.rcpt.address} failed, delivering without a verdict: ${(err as Error).stack ?? String(err)}`);
    return {};
  }
}

/**
 * A spooled recipient: resolved again now (the tables may have changed since
 * RCPT), then delivered. Nobody's address any more → 5.1.1; a table that
 * cannot be read → 4.3.0 (retried).
 */
export async function deliverToAddress(ctx: DeliveryContext, tables: Tables, delimiter: string, env: Envelope, message: ParsedMessage, address: string, o: DeliverOptions = {}): Promise<RecipientOutcome> {
  const rcpt = parseRecipient(address, delimiter);
  const special = ctx.special?.(rcpt);
  if (special !== undefined) {
    return 'code' in special ? { status: special, relay: 'none' } : deliverToRecipient(ctx, env, message, { rcpt, resolved: special }, o);
  }
  let resolved;
  try {
    resolved = lookupRecipient(tables, rcpt);
  } catch (err) {
    return { status: status('4.3.0', `table lookup for ${address} failed: ${(err as Error).message}`), detail: 'table lookup failed', relay: 'none' };
  }
  if (resolved === undefined) return { status: unknownUser(address), relay: 'none' };
  return deliverToRecipient(ctx, env, message, { rcpt, resolved }, o);
}
