// The policy plugin contract (Postfix policy delegation, SMTPD_POLICY_README).
// A request is the attribute=value block Postfix sends at each SMTP stage;
// a plugin returns an action — the text after "action=" — or undefined for
// "no opinion" (DUNNO). The chain asks plugins in order; the first decisive
// answer wins (see chain.ts). Like Haraka's hooks, a plugin never throws for
// a lookup problem it expects (a DNS timeout): that is undefined or a DEFER
// action, by the plugin's documented choice. What it did not expect (a bug,
// a broken database) is a throw, and each plugin declares what the chain
// answers then (onError): a check that guards access (lists, userpolicy)
// fails closed, one that only filters more (dnsbl, spf, greylist) fails open.

/** One policy request: attribute names as Postfix sends them (lower case), values as received. */
export interface PolicyRequest {
  readonly attrs: ReadonlyMap<string, string>;
  /** attrs.get(name) ?? "" */
  get(name: string): string;
}

/**
 * An action as Postfix's access(5) understands it, e.g. "OK", "DUNNO",
 * "REJECT 5.7.1 Only subscribers may post", "DEFER_IF_PERMIT 4.7.1 Greylisted",
 * "PREPEND X-Greylist: delayed 300 seconds".
 */
export type PolicyAction = string;

/**
 * Fail closed: a temporary refusal. DEFER_IF_PERMIT (450), not DEFER: a later
 * REJECT in Postfix's restrictions still wins, so a client that would be
 * refused anyway is not told to retry. 4.3.0 and the text are what Postfix
 * itself answers when one of its own table lookups fails.
 */
export const FAIL_CLOSED: PolicyAction = 'DEFER_IF_PERMIT 4.3.0 Temporary lookup failure, try again later';
/** Fail open: no opinion; the next plugin, and Postfix's other restrictions, decide. */
export const FAIL_OPEN: PolicyAction = 'DUNNO';

export interface PolicyPlugin {
  /** Stable name, used in config, logs and cache keys. */
  readonly name: string;
  /**
   * What the decision depends on, as a string; undefined = do not cache this
   * request. Results are cached per plugin for cacheTtlMs under this key.
   */
  cacheKey?(req: PolicyRequest): string | undefined;
  readonly cacheTtlMs?: number;
  /**
   * A plugin that answers from memory returns the answer itself; one that
   * waits (DNS, a database write) returns a promise. The chain and the server
   * go on in the same turn for the former: no promise per plugin per request.
   */
  check(req: PolicyRequest): PolicyAction | undefined | Promise<PolicyAction | undefined>;
  /**
   * What the chain answers for this plugin when check() throws, rejects or
   * returns an action that cannot be sent. The built-in plugins declare it
   * (config `policy.<plugin>.on_error` overrides); a plugin that declares
   * nothing fails closed (FAIL_CLOSED): not knowing is not a reason to let mail in.
   */
  readonly onError?: PolicyAction;
  /** Periodic upkeep (expiring greylist/rate entries); now is injectable for tests. */
  maintain?(now: number): Promise<void>;
  close?(): Promise<void>;
}

/** Decisive = anything but DUNNO/undefined. */
export function isDecisive(action: PolicyAction | undefined): action is PolicyAction {
  return action !== undefined && action.trim().toUpperCase() !== 'DUNNO' && action.trim() !== '';
}
