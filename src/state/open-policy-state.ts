// Opens the policy state the config's `state:` section names (state.backend):
// the daemon's own LMDB store, or a connection to the PostgreSQL or Redis
// every node shares; and `mailproc state migrate`, which creates or updates
// the shared engine's schema. The engine's URL is only ever shown without its
// password (redactUrl).
//
// Exports: openPolicyState, migratePolicyState. Failure contract: a schema
// that is missing or at another version throws (naming `mailproc state
// migrate`); an engine that cannot be reached does not: the state opens in
// an outage (engine-guard.ts) and recovers by itself. migratePolicyState
// rejects with the engine's error, the URL in it redacted.
import { redactUrl, type StateConfig } from '../config/index.js';
import type { Logger } from '../log.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import { createLmdbPolicyState, type PolicyState } from './policy-state.js';
// The engines' clients are loaded only when state.backend names one: a node on
// LMDB does not carry pg and ioredis in memory (about 8 MB of RSS).
const postgres = (): Promise<typeof PostgresModule> => import('./postgres.js');
const redis = (): Promise<typeof RedisModule> => import('./redis.js');
import type * as PostgresModule from './postgres.js';
import type * as RedisModule from './redis.js';
import type { StateStore } from './store.js';

export interface OpenPolicyStateOptions {
  readonly config: StateConfig;
  /** The daemon's LMDB store: the state itself with backend lmdb. */
  readonly store: StateStore;
  readonly log: Logger;
  readonly metrics?: MetricsEvents | undefined;
}

export async function openPolicyState(o: OpenPolicyStateOptions): Promise<PolicyState> {
  const b = o.config.backend;
  if (b.kind === 'lmdb') return createLmdbPolicyState(o.store);
  const common = { url: b.url, label: redactUrl(b.url), timeoutMs: o.config.timeout, retryMs: o.config.retry_interval, pool: o.config.pool, log: o.log, metrics: o.metrics };
  return b.kind === 'postgresql' ? (await postgres()).openPostgresState(common) : (await redis()).openRedisState({ ...common, prefix: o.config.prefix });
}

/** `mailproc state migrate`: what it did, as one line. */
export async function migratePolicyState(config: StateConfig): Promise<string> {
  const b = config.backend;
  if (b.kind === 'lmdb') return 'state.backend is lmdb: the local store needs no migration';
  const label = redactUrl(b.url);
  try {
    const { from, to } = b.kind === 'postgresql' ? await (await postgres()).migratePostgres(b.url) : await (await redis()).migrateRedis(b.url, config.prefix);
    return from === to ? `${label}: policy state schema already at version ${to}` : `${label}: policy state schema migrated from version ${from} to ${to}`;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(`${label}: ${msg.split(b.url).join(label)}`, { cause: err });
  }
}
