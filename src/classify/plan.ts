// The planner: a pure function from (recipient, message facts, rules, defaults)
// to a delivery plan — which copies go where, as whom — or a refusal. No I/O;
// this is what `mailproc rules test` will show a user, and what the master
// hands to workers. Evaluation: rules in table order; every rule whose
// conditions all hold adds its destination; `stop` ends evaluation; a reject
// destination refuses the recipient outright; no matching rule → the default
// destination. A vacation step is an automatic reply, not a delivery: like
// Sieve's implicit keep, the default is still added when every step that
// applied is a vacation (a vacation rule's `stop` ends the rules, not the
// keep). Vacation steps keep their rule order; the default comes last. The smallest `maxsize` among the address's rules is the
// address's size limit (552 5.2.3), checked before anything else. Globs and
// regexes run on src/mail/pattern.ts's linear-time matchers; a stored pattern
// that matcher refuses (tables compiled by an older version: the compiler
// refuses them now) defers the recipient, 4.3.0 naming the rule, rather than
// guessing whether the condition holds.
import type { RecipientAddress } from '../mail/address.js';
import { checkPattern, matchPattern } from '../mail/pattern.js';
import { isEnhancedCode, status, type Status } from '../mail/status.js';
import type { Comparison, Condition, Destination, Rule } from './rules.js';

// Patterns are matched in src/mail/pattern.ts, in linear time; kept here for the planner's callers.
export { matchPattern };

export interface MessageFacts {
  readonly sender: string;
  /** Size in bytes as received. */
  readonly size: number;
  readonly headers: ReadonlyMap<string, readonly string[]>;
  /**
   * The spam verdict for the recipient's owner, obtained before planning (as
   * that owner, in their slots: src/local/deliver.ts). Absent when no check
   * ran (spam checking off, or the checker failed open): then `spam` is false
   * and no `score` comparison holds.
   */
  readonly spam?: SpamVerdict;
}

export interface SpamVerdict {
  /** score >= required (the address's threshold from the spam table, else the owner's SpamAssassin required_score). */
  readonly isSpam: boolean;
  readonly score: number;
  readonly required?: number;
  /** The rules that hit, by name (SpamAssassin's tests). */
  readonly tests?: readonly string[];
}

export interface PlanDefaults {
  readonly destination: Destination;
  /** Delivery user when neither the rule nor the uid table names one. */
  readonly user: string;
  readonly group?: string;
}

export interface PlanStep {
  /** Templates expanded, once; ${home} too when the caller knew the user's home (PlanInput.homeOf). */
  readonly destination: Destination;
  readonly user: string;
  /** undefined = the user's primary group. */
  readonly group?: string;
  /** "db/rules:12" or "default". */
  readonly origin: string;
  /** The rule's concurrency= override for this user's delivery slots. */
  readonly concurrency?: number;
}

/** What became of one rule in an evaluation (`mailproc rules test`). */
export interface RuleTrace {
  /** Index into PlanInput.rules. */
  readonly index: number;
  /** applied: every condition held; not applied: `failed` did not; not reached: a rule before it applied with stop (or refused). */
  readonly result: 'applied' | 'not applied' | 'not reached';
  /** The first condition that did not hold. */
  readonly failed?: Condition;
}

export type Plan = (
  | { readonly kind: 'deliver'; readonly steps: readonly PlanStep[] }
  /** `internal`: the text names our files (a broken table), for the log; the client gets the code's standard text. */
  | { readonly kind: 'refuse'; readonly status: Status; readonly internal?: boolean; readonly origin?: string }
) & {
  /** Each rule's fate, in evaluation order: only when PlanInput.explain asked for it. */
  readonly trace?: readonly RuleTrace[];
};

export interface PlanInput {
  readonly recipient: RecipientAddress;
  readonly rules: readonly Rule[];
  /** From the uid / gid tables, if they have the address. */
  readonly uid?: string;
  readonly gid?: string;
  readonly facts: MessageFacts;
  readonly defaults: PlanDefaults;
  /**
   * The home directory of a delivery user, for ${home}; undefined (or no
   * function) leaves ${home} as written. Expansion happens here and nowhere
   * else: a value substituted once is never expanded again, so an extension
   * "${home}" stays that text.
   */
  readonly homeOf?: (user: string) => string | undefined;
  /** Record each rule's fate in Plan.trace (the same evaluation, watched: no second evaluator). */
  readonly explain?: boolean;
}

export type Owner = Pick<PlanInput, 'uid' | 'gid' | 'defaults'>;

/** Who a rule's copy (or, without a rule, the default's) is written as: the rule's uid=, else the uid table's, else the default user. */
function userOf(o: Owner, rule?: Rule): string {
  return rule?.uid ?? o.uid ?? o.defaults.user;
}

/** The group: the rule's gid=, else the gid table's, else (only when no uid was named either) the default group; undefined = the user's primary group. */
function groupOf(o: Owner, rule?: Rule): string | undefined {
  return rule?.gid ?? o.gid ?? (o.uid === undefined && rule?.uid === undefined ? o.defaults.group : undefined);
}

/** The address's owner: who its default copy is written as, and whose spam preferences judge it. */
export function ownerOf(o: Owner): { user: string; group?: string } {
  const group = groupOf(o);
  return group !== undefined ? { user: userOf(o), group } : { user: userOf(o) };
}

/** Every identity a plan for these rules could deliver as, so the caller can look their homes up before planning. */
export function candidateUsers(input: Pick<PlanInput, 'rules' | 'uid' | 'gid' | 'defaults'>): { user: string; group?: string }[] {
  const seen = new Map<string, { user: string; group?: string }>();
  const add = (user: string, group: string | undefined): void => {
    const key = `${user}\0${group ?? ''}`;
    if (!seen.has(key)) seen.set(key, group !== undefined ? { user, group } : { user });
  };
  for (const rule of input.rules) if (rule.destination.kind !== 'reject') add(userOf(input, rule), groupOf(input, rule));
  const owner = ownerOf(input);
  add(owner.user, owner.group);
  return [...seen.values()];
}

function compare(a: number, op: Comparison, b: number): boolean {
  switch (op) {
    case '<': return a < b;
    case '<=': return a <= b;
    case '>': return a > b;
    case '>=': return a >= b;
    case '=': return a === b;
  }
}

export function holds(c: Condition, r: RecipientAddress, f: MessageFacts): boolean {
  switch (c.kind) {
    case 'header': {
      const values = f.headers.get(c.name.toLowerCase()) ?? [];
      return values.some((v) => matchPattern(c.pattern, v)) !== c.negate;
    }
    case 'sender': return matchPattern(c.pattern, f.sender) !== c.negate;
    case 'extension': return matchPattern(c.pattern, r.extension) !== c.negate;
    case 'size': return compare(f.size, c.op, c.bytes);
    case 'spam': return (f.spam?.isSpam ?? false) === c.is;
    case 'score': return f.spam !== undefined && compare(f.spam.score, c.op, c.value);
  }
}

/** What is wrong with a rule's first pattern that cannot be matched, if any (cached, so cheap per message). */
function unusablePattern(rule: Rule): string | undefined {
  for (const c of rule.conditions) {
    if (c.kind !== 'header' && c.kind !== 'sender' && c.kind !== 'extension') continue;
    const problem = checkPattern(c.pattern);
    if (problem !== undefined) return `pattern ${c.pattern.kind === 'glob' ? c.pattern.glob : `/${c.pattern.source}/${c.pattern.flags}`} cannot be used: ${problem.message}`;
  }
  return undefined;
}

/**
 * A value substituted into a path must not climb out of it: the sender picks
 * the extension, and with a catch-all the local part too.
 */
function pathSafe(v: string): string {
  const s = v.replaceAll('/', '_').replaceAll('\0', '_');
  return s.startsWith('.') ? `_${s}` : s;
}

export function expandTemplate(text: string, r: RecipientAddress, home?: string): string {
  return text.replace(/\$\{(\w+)\}/g, (whole, name: string) => {
    switch (name) {
      // An empty user would make ".../${user}/Maildir" the mail root's own Maildir.
      case 'user': return pathSafe(r.user.toLowerCase()) || '_';
      case 'local': return pathSafe(r.local.toLowerCase()) || '_';
      case 'extension': return pathSafe(r.extension);
      case 'domain': return pathSafe(r.domain);
      case 'address': return pathSafe(r.address.toLowerCase());
      case 'home': return home ?? whole;
      default: return whole;
    }
  });
}

export function expandDestination(d: Destination, r: RecipientAddress, home?: string): Destination {
  switch (d.kind) {
    case 'maildir': {
      const folder = d.folder !== undefined ? expandTemplate(d.folder, r, home) : undefined;
      return { kind: 'maildir', path: expandTemplate(d.path, r, home), ...(folder !== undefined && folder !== '' ? { folder } : {}) };
    }
    case 'mbox': return { kind: 'mbox', path: expandTemplate(d.path, r, home) };
    case 'pipe': return { kind: 'pipe', argv: d.argv.map((a) => expandTemplate(a, r, home)) };
    case 'vacation': return d.textFile !== undefined ? { ...d, textFile: expandTemplate(d.textFile, r, home) } : d;
    default: return d;
  }
}

/** The smallest maxsize among the rules, or undefined. */
export function addressSizeLimit(rules: readonly Rule[]): number | undefined {
  let limit: number | undefined;
  for (const rule of rules) if (rule.maxsize !== undefined && (limit === undefined || rule.maxsize < limit)) limit = rule.maxsize;
  return limit;
}

export function planDelivery(input: PlanInput): Plan {
  const { recipient: r, rules, facts, defaults } = input;
  const trace: RuleTrace[] | undefined = input.explain === true ? [] : undefined;
  const finish = (plan: Plan): Plan => {
    if (trace === undefined) return plan;
    for (let index = trace.length; index < rules.length; index++) trace.push({ index, result: 'not reached' });
    return { ...plan, trace };
  };
  const limit = addressSizeLimit(rules);
  if (limit !== undefined && facts.size > limit) {
    return finish({ kind: 'refuse', status: status('5.2.3', `Message too large for ${r.address} (limit ${limit} bytes)`, 552) });
  }
  const steps: PlanStep[] = [];
  for (const [index, rule] of rules.entries()) {
    const unusable = unusablePattern(rule);
    if (unusable !== undefined) return finish({ kind: 'refuse', status: status('4.3.0', `rule ${rule.origin}: ${unusable}; recompile the tables (mailproc db compile)`), internal: true });
    const failed = rule.conditions.find((c) => !holds(c, r, facts));
    trace?.push(failed !== undefined ? { index, result: 'not applied', failed } : { index, result: 'applied' });
    if (failed !== undefined) continue;
    const d = rule.destination;
    if (d.kind === 'reject') {
      const code = isEnhancedCode(d.code) ? d.code : '5.7.1';
      return finish({ kind: 'refuse', status: status(code, d.text !== '' ? d.text : 'Rejected by the recipient\'s rules'), origin: rule.origin });
    }
    const group = groupOf(input, rule);
    const user = userOf(input, rule);
    steps.push({
      destination: expandDestination(d, r, input.homeOf?.(user)), user, ...(group !== undefined ? { group } : {}), origin: rule.origin,
      ...(rule.concurrency !== undefined ? { concurrency: rule.concurrency } : {}),
    });
    if (rule.stop) break;
  }
  if (steps.every((s) => s.destination.kind === 'vacation')) {
    const group = groupOf(input);
    const user = userOf(input);
    steps.push({ destination: expandDestination(defaults.destination, r, input.homeOf?.(user)), user, ...(group !== undefined ? { group } : {}), origin: 'default' });
  }
  return finish({ kind: 'deliver', steps });
}
