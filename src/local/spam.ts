// The spam verdict of a recipient's owner: asked of the owner's checker
// (src/workers/spam-checkers.ts, SpamAssassin running as the owner) over the
// SPAMD protocol (src/classify/spam), once per message per owner — a message
// to alice@ and alice+news@ is checked once, as alice; to alice and bob,
// twice, each as its user. Called by deliverToRecipient inside the owner's
// delivery slots, so a flood to one user waits in that user's queue.
//
// Per address (the spam table, db/README.md): off = no check and no header;
// required=N = the score from which it is spam for this address (else the
// owner's SpamAssassin required_score, user_prefs included); on_error =
// open|closed (else spam.on_error).
//
// Exports: createSpamVerdicts, SpamVerdictsOptions; askChecker and
// CheckerOutcome, the one way to ask a user's checker (also the milter's
// site check, src/milter/spam-filter.ts, as the service user).
//
// Failure contract: never throws. The checker cannot be had, does not answer
// within spam.timeout, crashes or answers nonsense: fail open (the copies
// get `X-Spam-Status: unchecked (REASON)`, no verdict: `spam` rules do not
// hold) or fail closed (451 4.7.1 for this recipient, retried by the MTA or
// our queue), and one log line names the owner and the reason. The
// message's bytes are never changed here: the headers are prepended by the
// worker like the trace header.
import type { SpamVerdict } from '../classify/plan.js';
import { spamHeaders, symbols, uncheckedHeader, type SpamdError } from '../classify/spam/index.js';
import type { SpamConfig } from '../config/index.js';
import type { Logger } from '../log.js';
import type { ParsedMessage } from '../mail/message.js';
import { status, type Status } from '../mail/status.js';
import type { Identity } from '../os/identity.js';
import type { SpamCheckers } from '../workers/spam-checkers.js';
import type { SpamCheck, VerdictSource } from './deliver.js';
import type { Recipient } from './resolve.js';

export interface SpamVerdictsOptions {
  /** undefined: SpamAssassin is not installed (or spam.enabled is false). */
  readonly checkers: SpamCheckers | undefined;
  readonly config: () => SpamConfig;
  readonly log: Logger;
}

interface RawResult {
  readonly score: number;
  readonly required: number;
  readonly tests: readonly string[];
}

/** error: for the log; short: for the header the user sees (no paths, no internals). */
export type CheckerOutcome = { readonly ok: RawResult } | { readonly error: string; readonly short: string };
type Outcome = CheckerOutcome;

const HUMAN = (n: number): string => (n >= 1024 * 1024 ? `${Math.round(n / 1024 / 1024)}M` : `${Math.round(n / 1024)}k`);

/**
 * One check of a message's bytes by the owner's checker (started if need
 * be): the score, the threshold of the owner's SpamAssassin and the rule
 * names, or why there is none. Never throws. A checker that cannot be
 * reached, hangs or talks nonsense is replaced for the next message.
 */
export async function askChecker(checkers: SpamCheckers | undefined, owner: Identity, bytes: Buffer, timeoutMs: number): Promise<CheckerOutcome> {
  if (checkers === undefined) return { error: 'SpamAssassin is not installed (Debian: spamassassin)', short: 'SpamAssassin not installed' };
  let lease;
  try {
    lease = await checkers.acquire(owner);
  } catch (err) {
    return { error: (err as Error).message, short: 'checker not available' };
  }
  let broken = false;
  try {
    const r = await symbols({ target: { path: lease.socket }, timeoutMs, connectTimeoutMs: timeoutMs }, bytes);
    return { ok: { score: r.score, required: r.required, tests: r.tests } };
  } catch (err) {
    const e = err as SpamdError;
    // A checker that takes no connections (its socket removed), hangs (stopped with SIGSTOP, a runaway
    // rule) or talks nonsense is replaced: stopped now, started anew for the next message.
    broken = e.kind === 'connect' || e.kind === 'timeout' || e.kind === 'protocol';
    const short = e.kind === 'timeout' ? 'checker timed out' : e.kind === 'connect' ? 'checker not available' : 'checker failed';
    return { error: `checker of ${owner.user}: ${e.message}`, short };
  } finally {
    lease.release(broken);
  }
}

export function createSpamVerdicts(o: SpamVerdictsOptions): VerdictSource {
  // One check per message per owner: the recipients of one message share the ParsedMessage object.
  const inFlight = new WeakMap<ParsedMessage, Map<number, Promise<Outcome>>>();

  const ask = (owner: Identity, message: ParsedMessage): Promise<Outcome> => askChecker(o.checkers, owner, message.body, o.config().timeout);

  const once = (owner: Identity, message: ParsedMessage): Promise<Outcome> => {
    let perOwner = inFlight.get(message);
    if (perOwner === undefined) inFlight.set(message, (perOwner = new Map()));
    let p = perOwner.get(owner.uid);
    if (p === undefined) perOwner.set(owner.uid, (p = ask(owner, message)));
    return p;
  };

  return {
    async check(owner: Identity, message: ParsedMessage, r: Recipient): Promise<SpamCheck | Status> {
      const cfg = o.config();
      const setting = r.resolved.spam;
      const on = setting?.check ?? (cfg.enabled === true || (cfg.enabled === 'auto' && o.checkers !== undefined));
      if (!on) return {};
      // The checker refuses uid 0 (SpamAssassin never runs as root): root's mail, when delivery.allow_root permits it, is not checked.
      if (owner.uid === 0) return cfg.headers ? { header: uncheckedHeader('owner is root') } : {};
      if (message.body.length > cfg.max_size) {
        return cfg.headers ? { header: uncheckedHeader(`message larger than ${HUMAN(cfg.max_size)}`) } : {};
      }
      const outcome = await once(owner, message);
      if ('error' in outcome) {
        const mode = setting?.onError ?? cfg.on_error;
        o.log.warn(`spam check for ${r.rcpt.address} failed (${mode === 'closed' ? 'deferred' : 'delivered unchecked'}): ${outcome.error}`, { uid: owner.uid });
        if (mode === 'closed') return status('4.7.1', `spam check unavailable for ${r.rcpt.address}, try again later`);
        return cfg.headers ? { header: uncheckedHeader(outcome.short) } : {};
      }
      const raw = outcome.ok;
      const required = setting?.required ?? raw.required;
      const verdict: SpamVerdict = { isSpam: raw.score >= required, score: raw.score, required, tests: raw.tests };
      return { verdict, ...(cfg.headers ? { header: spamHeaders({ isSpam: verdict.isSpam, score: raw.score, required, tests: raw.tests }) } : {}) };
    },
  };
}
