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
import { migratePostgres, openPostgresState } from './postgres.js';
import { migrateRedis, openRedisState } from './redis.js';
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
  return b.kind === 'postgresql' ? openPostgresState(common) : openRedisState({ ...common, prefix: o.config.prefix });
}

/** `mailproc state migrate`: what it did, as one line. */
export async function migratePolicyState(config: StateConfig): Promise<string> {
  const b = config.backend;
  if (b.kind === 'lmdb') return 'state.backend is lmdb: the local store needs no migration';
  const label = redactUrl(b.url);
  try {
    const { from, to } = b.kind === 'postgresql' ? await migratePostgres(b.url) : await migrateRedis(b.url, config.prefix);
    return from === to ? `${label}: policy state schema already at version ${to}` : `${label}: policy state schema migrated from version ${from} to ${to}`;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new Error(`${label}: ${msg.split(b.url).join(label)}`, { cause: err });
  }
}
