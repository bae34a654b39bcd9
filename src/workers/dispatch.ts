// Master-side delivery of one message to one recipient: loop check, plan
// (pure, src/classify/plan.ts), identity lookup, the per-user directory
// under the mail root made or checked (mail-root.ts), then one request per
// identity to that identity's worker; the copies' results are folded into
// one Status for the recipient:
//   all delivered → 2.0.0; else the first temporary failure (the MTA or our
//   queue retries; copies already written may then be written again — the
//   duplicate Postfix local(8) also admits, never a loss); else the first
//   permanent failure.
// Never throws for mail trouble; returns a Status.
import { isAbsolute, resolve } from 'node:path';
import type { ListEntry, Rule, Destination } from '../classify/rules.js';
import { expandDestination, planDelivery, type PlanDefaults, type PlanStep } from '../classify/plan.js';
import type { RecipientAddress } from '../mail/address.js';
import { hasDeliveredTo, type ParsedMessage } from '../mail/message.js';
import { isSuccess, isTemporary, ok, status, type Status } from '../mail/status.js';
import { traceHeader, type TraceInfo } from '../mail/trace.js';
import { resolveIdentity, type Identity } from './identity.js';
import type { WorkerDestination } from './ipc.js';
import { prepareUserDirectories } from './mail-root.js';
import type { DeliveryTiming, WorkerPool } from './pool.js';

export interface ResolvedRecipient {
  readonly rules: readonly Rule[];
  readonly uid?: string;
  readonly gid?: string;
  readonly list?: ListEntry;
}

export interface DispatchContext {
  readonly pool: WorkerPool;
  readonly defaults: PlanDefaults;
  /** Base for relative paths in tables (the daemon's working directory). */
  readonly baseDir: string;
  /** delivery.allow_root: may this recipient's copies be written as uid/gid 0? */
  readonly allowRoot: (rcpt: RecipientAddress) => boolean;
  /** Passed to the pool: false when the job reaches a slot means "do not start" (the queue after SIGTERM). */
  readonly mayStart?: () => boolean;
  /** paths.mail: per-user directories directly under it are made (or checked) by the master, see mail-root.ts. */
  readonly mailRoot?: string;
}

export interface RecipientOutcome {
  /**
   * The recipient's outcome. A success says only "Saved". A failure's text is
   * the leaf's (or the rules' own, or the loop check's) and `detail` is set
   * when the text is a leaf's: it names paths and users, so the client is
   * sent the code's standard text instead (src/smtp/replies.ts outcomeReply)
   * and the log gets `detail`.
   */
  readonly status: Status;
  /** For the log: what the leaves said (the file written, the path that failed, …); set whenever it is not for the client. */
  readonly detail?: string;
  /** Destination kinds, for the log's relay= field. */
  readonly relay: string;
  /**
   * Postfix-style delays=a/b/c/d in seconds: a = table lookups and planning,
   * b = waiting for a worker slot, c = master↔worker transfer (incl. a worker
   * start), d = the delivery itself. Absent when nothing reached a worker.
   */
  readonly delays?: string;
}

function absolute(d: WorkerDestination, base: string): WorkerDestination {
  switch (d.kind) {
    case 'maildir':
    case 'mbox':
      return isAbsolute(d.path) ? d : { ...d, path: resolve(base, d.path) };
    default:
      return d;
  }
}

const forWorker = (d: Destination): d is WorkerDestination => d.kind === 'maildir' || d.kind === 'mbox' || d.kind === 'pipe';

export async function deliverToRecipient(
  ctx: DispatchContext,
  trace: Omit<TraceInfo, 'recipient'>,
  message: ParsedMessage,
  rcpt: RecipientAddress,
  resolved: ResolvedRecipient,
): Promise<RecipientOutcome> {
  if (hasDeliveredTo(message.headers, rcpt.address)) {
    return { status: status('5.4.6', `mail forwarding loop for ${rcpt.address}`), relay: 'none' };
  }
  const plan = planDelivery({
    recipient: rcpt,
    rules: resolved.rules,
    ...(resolved.uid !== undefined ? { uid: resolved.uid } : {}),
    ...(resolved.gid !== undefined ? { gid: resolved.gid } : {}),
    facts: { sender: trace.sender, size: message.receivedSize, headers: message.headers },
    defaults: ctx.defaults,
  });
  if (plan.kind === 'refuse') return { status: plan.status, relay: 'rules' };

  const relay = [...new Set(plan.steps.map((s) => s.destination.kind))].join('+');
  const byIdentity = new Map<string, PlanStep[]>();
  // Kinds without a leaf yet defer: a configuration the admin can still fix, and unknown means temporary.
  const unsupported = plan.steps.filter((s) => s.destination.kind === 'forward' || s.destination.kind === 'list')
    .map((s) => status('4.3.5', `destination kind "${s.destination.kind}" is not supported by this version`));
  for (const step of plan.steps) {
    if (!forWorker(step.destination)) continue;
    const key = `${step.user}\0${step.group ?? ''}`;
    const list = byIdentity.get(key);
    if (list) list.push(step);
    else byIdentity.set(key, [step]);
  }
  if (byIdentity.size === 0 && unsupported.length === 0) return { status: ok('Discarded by rule'), relay };

  const header = traceHeader({ ...trace, recipient: rcpt.address });
  // a = from the end of DATA (or, from the queue, the message's arrival) to here.
  const waitedMs = Date.now() - trace.arrival.getTime();
  const timings: DeliveryTiming[] = [];
  const outcomes = await Promise.all([...byIdentity.values()].map(async (steps): Promise<Status[]> => {
    const first = steps[0] as PlanStep;
    const identity: Identity | string = await resolveIdentity(first.user, first.group);
    if (typeof identity === 'string') {
      return steps.map(() => status('4.3.0', `cannot deliver to ${rcpt.address}: ${identity} (check the uid/gid tables)`));
    }
    const destinations = steps.map((s) => absolute(expandDestination(s.destination, rcpt, identity.home) as WorkerDestination, ctx.baseDir));
    const recipient = { address: rcpt.address, local: rcpt.local, user: rcpt.user, extension: rcpt.extension, domain: rcpt.domain };
    const concurrency = steps.find((x) => x.concurrency !== undefined)?.concurrency;
    const allowRoot = ctx.allowRoot(rcpt);
    if (ctx.mailRoot !== undefined) {
      // The whole identity's copies wait for a fix: delivering the others now would duplicate them on the retry.
      const refused = await prepareUserDirectories(ctx.mailRoot, identity, destinations, allowRoot);
      if (refused !== undefined) return steps.map(() => refused);
    }
    const r = await ctx.pool.deliver(identity, { ...(concurrency !== undefined ? { concurrency } : {}), allowRoot, sender: trace.sender, recipient, arrival: trace.arrival, header, body: message.body, destinations, ...(ctx.mayStart ? { mayStart: ctx.mayStart } : {}) });
    timings.push(r.timing);
    return r.results.map((x) => x.status);
  }));
  const all = [...outcomes.flat(), ...unsupported];
  const sec = (ms: number): string => (ms / 1000).toFixed(ms < 10_000 ? 3 : 1).replace(/\.?0+$/, '') || '0';
  const slowest = timings.reduce((a, b) => (b.slotMs + b.transferMs + b.workMs > a.slotMs + a.transferMs + a.workMs ? b : a), { slotMs: 0, transferMs: 0, workMs: 0 });
  const delays = timings.length === 0 ? undefined
    : `${sec(waitedMs)}/${sec(slowest.slotMs)}/${sec(slowest.transferMs)}/${sec(slowest.workMs)}`;
  const base = { relay, ...(delays !== undefined ? { delays } : {}) };
  if (all.every(isSuccess)) {
    return { status: ok(all.length === 1 ? 'Saved' : `Saved ${all.length} copies`), detail: all.map((x) => x.text).join('; '), ...base };
  }
  const failed = all.find(isTemporary) ?? (all.find((s) => !isSuccess(s)) as Status);
  return { status: failed, detail: failed.text, ...base };
}
