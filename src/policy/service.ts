// Assembles the policy service from the parsed `policy:` config section:
// state (the LMDB store for rosters; the policy state — greylist, rate
// counters, user policies — in LMDB or on the shared engine state.backend
// names, opened by the caller) → plugins in chain order → chain (cache) → listeners,
// plus a maintenance timer (unref'd: it never keeps the process alive) that
// runs each plugin's maintain() and sweeps the answer cache, one run at a time.
//
// The user-policy store (plugins/user-policy.ts) is built here on the same
// state and handed out as `userPolicies`, for the per-user control sockets
// that write it; with userpolicy in the chain, the greylist link skips
// recipients whose owner turned greylisting off, and without greylist in the
// chain userpolicy runs the greylist check for those who turned it on.
//
// Exports: startPolicyService, PolicyService, PolicyServiceOptions.
//
// Failure contract: a chain naming a plugin that is neither built in nor
// handed in (dnsbl, spf: opts.plugins) and a listener that cannot be opened
// (address in use, socket owner unknown) throw, naming the config key or the
// address, after undoing what was started. At run time nothing throws:
// plugin trouble is the chain's (logged, fail open), socket trouble the server's.
import { performance } from 'node:perf_hooks';
import type { TableReader } from '../db/index.js';
import type { Logger } from '../log.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import { PolicyChain, type ChainLink, type Decision } from './chain.js';
import { parseListen, type PolicyConfig } from '../config/index.js';
import { createGreylistPlugin } from './plugins/greylist.js';
import { createListsPlugin } from './plugins/lists.js';
import { createRatelimitPlugin } from './plugins/ratelimit.js';
import { createUserPolicyPlugin, createUserPolicyStore, exemptFromGreylist, type UserPolicyStore } from './plugins/user-policy.js';
import { PolicyServer, type BoundListener } from './server.js';
import { createLmdbPolicyState, type PolicyState, type StateStore } from '../state/index.js';
import type { PolicyAction, PolicyPlugin, PolicyRequest } from './types.js';

export interface PolicyServiceOptions {
  /** The parsed `policy:` section (policyConfigSchema's output). */
  readonly config: PolicyConfig;
  /** With generation(), table lookups the plugins repeat are kept until the next compile. */
  readonly tables: TableReader & { generation?(): number };
  /** The one writable store (src/state), opened and closed by the caller: list rosters, and the policy state when policyState is absent. */
  readonly state: StateStore;
  /**
   * Greylist, rate counters and user policies (src/state openPolicyState), closed by the caller; default: a new
   * one in `state` (LMDB). Services in one process (policy, milter) should share one: on LMDB a greylist write
   * not yet committed is seen only through the PolicyState that made it.
   */
  readonly policyState?: PolicyState;
  readonly log: Logger;
  /** Relative listen paths are resolved against it (the daemon's working directory). */
  readonly baseDir: string;
  /** delivery.recipient_delimiter, so list lookups split addresses as delivery does; default "+". */
  readonly recipientDelimiter?: string;
  /** Plugins built elsewhere (dnsbl, spf), by the name the chain uses. The service closes them on close(). */
  readonly plugins?: Readonly<Record<string, PolicyPlugin>>;
  /** Milliseconds since the epoch; injectable for tests. */
  readonly now?: () => number;
  /** Counts requests by deciding plugin and action, with latency, and refused connections (src/metrics); undefined: nothing is counted. */
  readonly metrics?: MetricsEvents;
}

export interface PolicyService {
  /** Every listener with its bound port (TCP, port 0 → the kernel's choice) or socket path. */
  readonly listening: readonly BoundListener[];
  /** Mailbox owners' policies (`mailproc policy`), read by the userpolicy plugin; writes apply to the next request. */
  readonly userPolicies: UserPolicyStore;
  /** Whether userpolicy is in the chain, i.e. stored policies are applied. */
  readonly userPoliciesApplied: boolean;
  /** The chain's answer for one request, as a connection would get it (also for `mailproc` diagnostics). */
  decide(req: PolicyRequest): Promise<Decision>;
  /** The same answer, given at once when every plugin asked answered at once (the milter's path), else a promise; never rejects. */
  decideNow(req: PolicyRequest): Decision | Promise<Decision>;
  /** Runs maintenance now (the timer does this every maintenance_interval). */
  maintain(): Promise<void>;
  /** Stops listening, lets in-flight requests finish, stops the timer, closes plugins (not the state: its opener does). */
  close(): Promise<void>;
}

function buildLink(name: string, o: PolicyServiceOptions, state: PolicyState, userPolicies: UserPolicyStore, now: () => number): ChainLink {
  const c = o.config;
  const greylist = (): PolicyPlugin => {
    const g = c.greylist;
    const settings = {
      delayMs: g.delay, retryWindowMs: g.retry_window, expireMs: g.expire, autoWhitelist: g.auto_whitelist,
      text: g.text, header: g.header, ipv4Prefix: g.ipv4_prefix, ipv6Prefix: g.ipv6_prefix,
    };
    return createGreylistPlugin({ state, settings, now });
  };
  switch (name) {
    case 'lists':
      return {
        plugin: createListsPlugin({
          tables: o.tables,
          isSubscriber: o.state.isSubscriber,
          recipientDelimiter: o.recipientDelimiter ?? '+',
          rejectText: c.lists.reject_text,
          cacheTtlMs: c.lists.cache_ttl,
          ...(o.tables.generation !== undefined ? { generation: () => (o.tables.generation as () => number)() } : {}),
        }),
        cacheTtlMs: c.lists.cache_ttl,
        onError: c.lists.on_error,
      };
    case 'greylist':
      return {
        plugin: c.chain.includes('userpolicy') ? exemptFromGreylist(greylist(), userPolicies) : greylist(), cacheTtlMs: 0, onError: c.greylist.on_error,
      };
    case 'userpolicy':
      return {
        plugin: createUserPolicyPlugin({ store: userPolicies, ...(c.chain.includes('greylist') ? {} : { greylist: greylist() }) }),
        cacheTtlMs: 0,
        onError: c.userpolicy.on_error,
      };
    case 'ratelimit': {
      const rules = c.ratelimit.rules.map((r) => ({
        name: r.name ?? `${r.key}/${r.limit}/${r.window / 1000}s`,
        key: r.key, limit: r.limit, windowMs: r.window, mode: r.mode, count: r.count, action: r.action,
      }));
      const shared = state.rate?.bind(state);
      const expireShared = state.expireRates?.bind(state);
      return { plugin: createRatelimitPlugin({ rules, maxKeys: c.ratelimit.max_keys, now, shared, expireShared }), cacheTtlMs: 0, onError: c.ratelimit.on_error };
    }
    default: {
      const plugin = o.plugins?.[name];
      if (plugin === undefined) throw new Error(`policy.chain: plugin "${name}" is not available (it must be built and passed to the policy service)`);
      return { plugin, cacheTtlMs: plugin.cacheTtlMs ?? 0 };
    }
  }
}

export async function startPolicyService(o: PolicyServiceOptions): Promise<PolicyService> {
  const c = o.config;
  const now = o.now ?? Date.now;
  const state = o.policyState ?? createLmdbPolicyState(o.state);
  const userPolicies = createUserPolicyStore(state, o.tables, o.recipientDelimiter ?? '+');
  const chain = new PolicyChain(c.chain.map((name) => buildLink(name, o, state, userPolicies, now)), { log: o.log, now, cacheSize: c.cache_size });

  const decide = (req: PolicyRequest): Promise<Decision> => chain.decide(req);
  /** A decision as the connection sends it; a decisive one is logged (at info: the fields are not even built below that). */
  const answer = (req: PolicyRequest, d: Decision, started: number): PolicyAction => {
    o.metrics?.policyDecided(d.plugin, d.action, (performance.now() - started) / 1000);
    if (d.plugin !== undefined && o.log.enabled('info')) {
      o.log.info(`${d.plugin}: action=${d.action}`, {
        client: req.get('client_address'), from: req.get('sender'), to: req.get('recipient'), state: req.get('protocol_state'),
      });
    }
    return d.action;
  };
  const server = new PolicyServer({
    listen: c.listen.map((spec) => parseListen(spec, o.baseDir)),
    socket: c.socket,
    limits: {
      requestSize: c.limits.request_size,
      requestTimeoutMs: c.limits.request_timeout,
      idleTimeoutMs: c.limits.idle_timeout,
      connections: c.limits.connections,
      connectionsPerClient: c.limits.connections_per_client,
    },
    decide: (req) => {
      const started = performance.now();
      const d = chain.decideNow(req);
      return d instanceof Promise ? d.then((x) => answer(req, x, started)) : answer(req, d, started);
    },
    log: o.log,
    metrics: o.metrics,
  });
  try {
    await server.start();
  } catch (err) {
    await chain.close();
    throw err;
  }

  let running: Promise<void> | undefined;
  const maintain = (): Promise<void> => {
    // One run at a time: a slow sweep is not started again on top of itself.
    running ??= chain.maintain(now()).finally(() => {
      running = undefined;
    });
    return running;
  };
  const timer = setInterval(() => void maintain(), c.maintenance_interval);
  timer.unref();

  o.log.info(`policy service listening on ${server.listening.map((l) => l.spec).join(', ') || '(nothing)'}`, { chain: c.chain.join(',') });
  let closed: Promise<void> | undefined;
  return {
    listening: server.listening,
    userPolicies,
    userPoliciesApplied: c.chain.includes('userpolicy'),
    decide,
    decideNow: (req) => chain.decideNow(req),
    maintain,
    close: () => {
      closed ??= (async () => {
        clearInterval(timer);
        await server.close();
        await running;
        await chain.close();
      })();
      return closed;
    },
  };
}
