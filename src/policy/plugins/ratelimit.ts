// ratelimit: per sasl_username, client_address, sender (…) counters, one set
// per configured rule. A rule counts RCPT requests (recipients) or
// END-OF-MESSAGE requests (messages); the request that would go over the
// limit gets the rule's action and is not counted, so a client that keeps
// trying while refused is let through again as soon as its older traffic
// leaves the window. A request passes only if every rule allows it; only then
// is it counted, by every rule it concerns.
//
// Windows: `fixed` counts in windows aligned to the epoch (reset at each
// boundary); `sliding` estimates a true sliding window from the current and
// previous fixed windows: used = previous × (part of the window not yet
// elapsed) + current. Two numbers per key, not a timestamp per request.
//
// With state.backend lmdb, counters live in memory (see NOTES.md: a write per
// request to LMDB would cost more than the check, and a restart forgetting a
// few minutes of counts is harmless). Each rule keeps at most maxKeys
// counters; past that the oldest key is dropped. maintain() drops counters
// whose windows have passed. With a shared engine (PostgreSQL, Redis) the
// counters are there, one per rule name and key for every node: a request's
// rules are checked and counted in one atomic round trip (PolicyState.rate),
// with the same arithmetic; the engine expires them.
//
// A key longer than KEY_CHARS (a sender of thousands of characters) is
// counted under its digest (keys.ts boundedKey): maxKeys counters must not
// cost maxKeys × 30 kB of memory.
//
// Exports: createRatelimitPlugin, RateRule. In memory it never throws; a
// shared engine's failure (unreachable, past state.timeout) rejects. Either
// way the chain answers its onError: fail open (DUNNO). A rate limit throttles senders who are let in anyway; it is no
// access decision, and a bug in it must not stop every authenticated
// client's mail. A failure is logged, so the lapse is seen, and with no
// state outside memory there is no broken database that could keep it failing.
import { boundedKey, type RateCheck } from '../../state/index.js';
import { FAIL_OPEN, type PolicyAction, type PolicyPlugin, type PolicyRequest } from '../types.js';

export interface RateRule {
  readonly name: string;
  readonly key: string;
  readonly limit: number;
  readonly windowMs: number;
  readonly mode: 'sliding' | 'fixed';
  readonly count: 'recipients' | 'messages';
  readonly action: PolicyAction;
}

interface Counter {
  /** Index of the current fixed window: floor(time / windowMs). */
  window: number;
  current: number;
  previous: number;
}

const STATE_OF = { recipients: 'RCPT', messages: 'END-OF-MESSAGE' } as const;
/** Keys up to this long are kept as they are (an address is at most 254 bytes); longer ones as a digest. */
const KEY_CHARS = 320;

export interface RatelimitOptions {
  readonly rules: readonly RateRule[];
  readonly maxKeys: number;
  readonly now: () => number;
  /** The shared engine's counters (PolicyState.rate); absent: counters in this process's memory. */
  readonly shared?: ((checks: readonly RateCheck[], now: number) => Promise<number>) | undefined;
  /** The shared engine's expiry of old counters, run by maintain(); absent where the engine does it itself. */
  readonly expireShared?: ((now: number) => Promise<void>) | undefined;
}

/** The key a rule counts this request under, or undefined when the rule does not concern it. */
function ruleKey(rule: RateRule, req: PolicyRequest, state: string): string | undefined {
  if (STATE_OF[rule.count] !== state) return undefined;
  const raw = req.get(rule.key);
  if (raw === '') return undefined;
  return boundedKey(rule.key === 'sender' || rule.key === 'recipient' ? raw.toLowerCase() : raw, KEY_CHARS);
}

export function createRatelimitPlugin(o: RatelimitOptions): PolicyPlugin {
  if (o.shared !== undefined) return createSharedRatelimit(o, o.shared);
  const counters = o.rules.map(() => new Map<string, Counter>());
  // Reused across requests: which counters a passing request increments.
  const pending: Counter[] = [];

  const roll = (c: Counter, window: number): void => {
    if (window === c.window) return;
    c.previous = window === c.window + 1 ? c.current : 0;
    c.current = 0;
    c.window = window;
  };

  const check = (req: PolicyRequest): PolicyAction | undefined => {
    const state = req.get('protocol_state');
    const now = o.now();
    pending.length = 0;
    for (let i = 0; i < o.rules.length; i++) {
      const rule = o.rules[i] as RateRule;
      const key = ruleKey(rule, req, state);
      if (key === undefined) continue;
      const map = counters[i] as Map<string, Counter>;
      const window = Math.floor(now / rule.windowMs);
      let c = map.get(key);
      if (c === undefined) {
        if (map.size >= o.maxKeys) {
          const oldest = map.keys().next();
          if (oldest.done !== true) map.delete(oldest.value);
        }
        c = { window, current: 0, previous: 0 };
        map.set(key, c);
      } else {
        roll(c, window);
      }
      const used = rule.mode === 'fixed' ? c.current : c.previous * (1 - (now - window * rule.windowMs) / rule.windowMs) + c.current;
      if (used + 1 > rule.limit) {
        pending.length = 0;
        return rule.action;
      }
      pending.push(c);
    }
    for (const c of pending) c.current++;
    pending.length = 0;
    return undefined;
  };

  const maintain = (now: number): Promise<void> => {
    o.rules.forEach((rule, i) => {
      const window = Math.floor(now / rule.windowMs);
      const map = counters[i] as Map<string, Counter>;
      // Two windows back or more: both numbers would read as 0.
      for (const [key, c] of map) if (c.window < window - 1) map.delete(key);
    });
    return Promise.resolve();
  };

  return {
    name: 'ratelimit',
    onError: FAIL_OPEN,
    // Answered at once: the counters are in memory (the chain catches a throw like a rejection).
    check,
    maintain,
  };
}

/** The same rules with the counters on the shared engine: one round trip per request that any rule concerns. */
function createSharedRatelimit(o: RatelimitOptions, shared: (checks: readonly RateCheck[], now: number) => Promise<number>): PolicyPlugin {
  const check = async (req: PolicyRequest): Promise<PolicyAction | undefined> => {
    const state = req.get('protocol_state');
    const checks: RateCheck[] = [];
    const rules: RateRule[] = [];
    for (const rule of o.rules) {
      const key = ruleKey(rule, req, state);
      if (key === undefined) continue;
      // Nodes with the same rule share its counters; two rules that differ in anything but the limit never do.
      checks.push({ rule: `${rule.name}/${rule.key}/${rule.windowMs}/${rule.mode}/${rule.count}`, key, limit: rule.limit, windowMs: rule.windowMs, mode: rule.mode });
      rules.push(rule);
    }
    if (checks.length === 0) return undefined;
    const refused = await shared(checks, o.now());
    return refused >= 0 ? rules[refused]?.action : undefined;
  };
  // Counters expire on the engine (Redis TTL) or by this maintenance (PostgreSQL).
  const expire = o.expireShared;
  return { name: 'ratelimit', onError: FAIL_OPEN, check, ...(expire !== undefined ? { maintain: (now: number) => expire(now) } : {}) };
}
