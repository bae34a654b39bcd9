// The policy plugin contract (Postfix policy delegation, SMTPD_POLICY_README).
// A request is the attribute=value block Postfix sends at each SMTP stage;
// a plugin returns an action — the text after "action=" — or undefined for
// "no opinion" (DUNNO). The chain asks plugins in order; the first decisive
// answer wins (see chain.ts). Like Haraka's hooks, a plugin never throws for
// a lookup problem: trouble is undefined (fail open) or a DEFER action, by
// the plugin's documented choice; a throw is a bug and is logged.

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
  /** Periodic upkeep (expiring greylist/rate entries); now is injectable for tests. */
  maintain?(now: number): Promise<void>;
  close?(): Promise<void>;
}

/** Decisive = anything but DUNNO/undefined. */
export function isDecisive(action: PolicyAction | undefined): action is PolicyAction {
  return action !== undefined && action.trim().toUpperCase() !== 'DUNNO' && action.trim() !== '';
}
