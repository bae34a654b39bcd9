// The plugin chain: asks plugins in the configured order and answers with
// the first decisive action (anything but DUNNO/nothing, see types.ts), or
// DUNNO. Each plugin's answers are cached for its TTL under the key the
// plugin derives from what it reads (cacheKey), so a hit skips the plugin.
//
// Exports: PolicyChain, ChainLink, Decision.
//
// Failure contract: decide() never rejects. A plugin that throws or rejects
// (a bug or a broken database, by the contract in types.ts) or returns an
// action that would break the reply (a line break in it) gets its link's
// failure action: the config's `on_error`, else what the plugin declares
// (onError), else FAIL_CLOSED. A decisive failure action ends the chain like
// any answer; DUNNO (fail open) goes on to the next plugin. The client always
// gets a reply. The failure is logged (at most once per 10 s per plugin, with
// a count of the ones left out) and never cached: the next request asks the
// plugin again. maintain() and close() log plugin failures and carry on with
// the others.
import type { Logger } from '../log.js';
import { boundedKey, StateUnavailableError } from '../state/index.js';
import { FAIL_CLOSED, isDecisive, type PolicyAction, type PolicyPlugin, type PolicyRequest } from './types.js';

export interface ChainLink {
  readonly plugin: PolicyPlugin;
  /** 0 = do not cache this plugin's answers. */
  readonly cacheTtlMs: number;
  /** The answer when the plugin fails (config `on_error`); default plugin.onError, else FAIL_CLOSED. */
  readonly onError?: PolicyAction | undefined;
}

export interface Decision {
  readonly action: PolicyAction;
  /** The plugin that decided (or failed with a decisive failure action); undefined for the DUNNO nobody objected to. */
  readonly plugin: string | undefined;
}

interface CacheEntry {
  readonly action: PolicyAction | undefined;
  readonly expires: number;
}

interface Link extends ChainLink {
  readonly onError: PolicyAction;
  readonly cache: Map<string, CacheEntry>;
  /** Errors logged / suppressed since, to keep a plugin that throws on every request from flooding the log. */
  lastErrorLog: number;
  suppressed: number;
}

const DUNNO: Decision = Object.freeze({ action: 'DUNNO', plugin: undefined });
const ERROR_LOG_INTERVAL_MS = 10_000;
/** Longer cache keys (built from a client's sender, recipient…) are kept as a digest: cache_size of them must not cost cache_size × 30 kB. */
const CACHE_KEY_CHARS = 1024;

export class PolicyChain {
  private readonly links: Link[];

  constructor(
    links: readonly ChainLink[],
    private readonly opts: { readonly log: Logger; readonly now: () => number; readonly cacheSize: number },
  ) {
    this.links = links.map((l) => ({
      ...l, onError: l.onError ?? l.plugin.onError ?? FAIL_CLOSED, cache: new Map(), lastErrorLog: -Infinity, suppressed: 0,
    }));
  }

  /** The chain's answer; never rejects. */
  async decide(req: PolicyRequest): Promise<Decision> {
    return this.decideFrom(0, req);
  }

  /**
   * The same answer, given at once when every plugin asked answered at once
   * (the server's path: a lists check needs no promise); otherwise a promise
   * that never rejects. Never throws.
   */
  decideNow(req: PolicyRequest): Decision | Promise<Decision> {
    return this.decideFrom(0, req);
  }

  private decideFrom(first: number, req: PolicyRequest): Decision | Promise<Decision> {
    for (let i = first; i < this.links.length; i++) {
      const link = this.links[i] as Link;
      const action = this.ask(link, req);
      if (typeof action === 'object') {
        return action.then((a) => (isDecisive(a) ? { action: a, plugin: link.plugin.name } : this.decideFrom(i + 1, req)));
      }
      if (isDecisive(action)) return { action, plugin: link.plugin.name };
    }
    return DUNNO;
  }

  /** The plugin's answer (from the cache if there is one; its failure action if it fails), or a promise of it; never throws, never rejects. */
  private ask(link: Link, req: PolicyRequest): PolicyAction | undefined | Promise<PolicyAction | undefined> {
    const { plugin } = link;
    let key: string | undefined;
    let answer: PolicyAction | undefined | Promise<PolicyAction | undefined>;
    try {
      if (link.cacheTtlMs > 0 && this.opts.cacheSize > 0 && plugin.cacheKey !== undefined) {
        const raw = plugin.cacheKey(req);
        key = raw === undefined ? undefined : boundedKey(raw, CACHE_KEY_CHARS);
        if (key !== undefined) {
          const hit = link.cache.get(key);
          if (hit !== undefined) {
            if (hit.expires > this.opts.now()) return hit.action;
            link.cache.delete(key);
          }
        }
      }
      answer = plugin.check(req);
    } catch (err) {
      return this.fail(link, err, req);
    }
    if (answer === null || typeof answer !== 'object') return this.accept(link, key, answer, req);
    return Promise.resolve(answer).then(
      (a) => this.accept(link, key, a, req),
      (err: unknown) => this.fail(link, err, req),
    );
  }

  /** A plugin's answer, checked (a line break would break the reply) and cached. */
  private accept(link: Link, key: string | undefined, action: unknown, req: PolicyRequest): PolicyAction | undefined {
    if (action !== undefined && (typeof action !== 'string' || /[\r\n]/.test(action))) {
      return this.fail(link, new Error(`returned an action that cannot be sent: ${JSON.stringify(action)}`), req);
    }
    if (key !== undefined) this.remember(link, key, action);
    return action;
  }

  private remember(link: Link, key: string, action: PolicyAction | undefined): void {
    const cache = link.cache;
    if (cache.size >= this.opts.cacheSize) {
      // Maps iterate in insertion order, oldest first. Evict an eighth at a
      // time: V8 keeps deleted entries at the front of a Map until it
      // rehashes, so finding "the oldest" one by one gets slower as the cache
      // churns (measured: 6.5 µs per insert at 10 000 entries).
      let n = Math.max(1, this.opts.cacheSize >> 3);
      for (const k of cache.keys()) {
        cache.delete(k);
        if (--n === 0) break;
      }
    }
    cache.set(key, { action, expires: this.opts.now() + link.cacheTtlMs });
  }

  /**
   * The link's failure action, logged at most once per ERROR_LOG_INTERVAL_MS
   * per plugin (with a count of the ones left out), and never cached:
   * nothing passes it to remember().
   */
  private fail(link: Link, err: unknown, req: PolicyRequest): PolicyAction {
    // A shared state engine that is down: its guard logs the outage once and counts every call (src/state/engine-guard.ts).
    if (err instanceof StateUnavailableError) return link.onError;
    const now = this.opts.now();
    if (now - link.lastErrorLog < ERROR_LOG_INTERVAL_MS) {
      link.suppressed++;
      return link.onError;
    }
    const more = link.suppressed > 0 ? ` (${link.suppressed} more since the last report)` : '';
    link.lastErrorLog = now;
    link.suppressed = 0;
    const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
    this.opts.log.error(`policy plugin ${link.plugin.name} check failed, answered ${JSON.stringify(link.onError)}${more}: ${detail}`, {
      client: req.get('client_address'), from: req.get('sender'), to: req.get('recipient'),
    });
    return link.onError;
  }

  /** Drops expired cache entries and runs each plugin's maintenance, one after another. */
  async maintain(now: number): Promise<void> {
    for (const link of this.links) {
      for (const [key, entry] of link.cache) if (entry.expires <= now) link.cache.delete(key);
      if (link.plugin.maintain === undefined) continue;
      try {
        await link.plugin.maintain(now);
      } catch (err) {
        // The state engine's outage is already logged, once.
        if (err instanceof StateUnavailableError) continue;
        this.opts.log.error(`policy plugin ${link.plugin.name} maintenance failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    }
  }

  async close(): Promise<void> {
    for (const link of this.links) {
      link.cache.clear();
      try {
        await link.plugin.close?.();
      } catch (err) {
        this.opts.log.warn(`policy plugin ${link.plugin.name} close failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
}
