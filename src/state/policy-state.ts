// The policy state seam: what the greylist, ratelimit and userpolicy plugins
// keep, behind one small async interface with three implementations — the
// local LMDB store (this file, the default, as fast as before), PostgreSQL
// (postgres.ts) and Redis (redis.ts), which several MX hosts share. Each call
// is one round trip to a shared engine: the whole greylist decision
// (auto-whitelist, triplet, pass count) is one stored function / Lua script,
// every rate rule of a request one more, a recipient's policy one lookup of
// its (at most two) exact keys.
//
// Exports: PolicyState, GreylistParams, GreylistAnswer, RateCheck,
// decideTriplet and TripletVerdict (the pure greylist decision, also the
// engines' specification), createLmdbPolicyState, StateUnavailableError,
// GREYLIST_REFRESH_MS, SCHEMA_VERSION.
//
// Failure contract: every method rejects (never throws synchronously) when
// the engine fails; a shared engine that is unreachable or past its deadline
// rejects with StateUnavailableError, which the policy chain answers with the
// plugin's failure action without logging it again (engine-guard.ts logs an
// outage once). The LMDB implementation rejects only for LMDB trouble.
import type { ClientRecord, StateStore, TripletRecord, UserPolicyRecord } from './store.js';

/** The Redis schema version `mailproc state migrate` creates (PostgreSQL has its own, postgres.ts); a daemon refuses an engine at another version. */
export const SCHEMA_VERSION = 1;

/**
 * How stale a passed triplet's or a whitelisted client's last-seen time may
 * get before a request writes a fresh one: a write per hour, not per request,
 * is plenty against an expiry measured in days.
 */
export const GREYLIST_REFRESH_MS = 3_600_000;

export interface GreylistParams {
  readonly delayMs: number;
  readonly retryWindowMs: number;
  readonly expireMs: number;
  /** Passed triplets before a client network is whitelisted; 0 = never. */
  readonly autoWhitelist: number;
}

/** delayedMs is set on the first pass only (the retry that got through). */
export type GreylistAnswer = { readonly kind: 'defer' } | { readonly kind: 'pass'; readonly delayedMs: number | undefined };

export interface RateCheck {
  /** The rule's name: nodes with the same rules share its counters. */
  readonly rule: string;
  /** The key value (already bounded in length, lower case where the rule says). */
  readonly key: string;
  readonly limit: number;
  readonly windowMs: number;
  readonly mode: 'sliding' | 'fixed';
}

/** Whether a node keeps user policies in memory now (it hears every change), and how many addresses it holds. */
export interface PolicyCacheState { readonly listening: boolean; readonly entries: number }

/** A shared engine's outage: since when (epoch ms), why, how many calls were answered with failure actions. */
export interface StateOutage { readonly since: number; readonly reason: string; readonly refused: number }

export interface PolicyState {
  readonly kind: 'lmdb' | 'postgresql' | 'redis';
  /** The engine as logs may name it (a URL without its password; "lmdb"). */
  readonly label: string;
  /** The outage in progress (a shared engine only; LMDB has none). */
  outage?(): StateOutage | undefined;
  /** PostgreSQL: whether user policies are kept in memory now (change notifications heard), and how many addresses are. */
  policyCache?(): PolicyCacheState;
  /** The whole greylist decision for one triplet, recorded atomically; `net` and `triplet` fit a key (keys.ts storageKey). */
  greylist(net: string, triplet: string, now: number, p: GreylistParams): Promise<GreylistAnswer>;
  /**
   * Shared rate counters (undefined for LMDB: its counters stay in the
   * plugin's memory, see src/policy/NOTES.md). Counts the request against
   * every check when all allow it; else counts nothing and resolves with the
   * index of the first check that refuses. -1 = allowed and counted.
   */
  rate?(checks: readonly RateCheck[], now: number): Promise<number>;
  /** Forgets rate counters two windows old (the ratelimit plugin's maintenance); absent where the engine does it (Redis TTL). */
  expireRates?(now: number): Promise<void>;
  /** The records stored under these keys (lower case), in order; one round trip. */
  userPolicies(keys: readonly string[]): Promise<(UserPolicyRecord | undefined)[]>;
  putUserPolicy(address: string, policy: UserPolicyRecord): Promise<void>;
  removeUserPolicy(address: string): Promise<boolean>;
  /** Every record `uid` set (a scan or an index: for `mailproc policy list`, not for requests). */
  userPoliciesOf(uid: number): Promise<{ address: string; policy: UserPolicyRecord }[]>;
  /**
   * The maintenance job: forgets unpassed triplets past the retry window,
   * passed ones and whitelisted clients unused for expire. Redis does this
   * itself (every key has a TTL): a no-op there.
   */
  expire(now: number, p: GreylistParams): Promise<void>;
  /** How many triplets and client networks are stored (tests, `mailproc status`). */
  counts(): Promise<{ triplets: number; clients: number }>;
  close(): Promise<void>;
}

/** The engine did not answer in time, or cannot be reached: answered with the plugin's failure action. */
export class StateUnavailableError extends Error {
  override readonly name = 'StateUnavailableError';
}

export type TripletVerdict =
  | { readonly kind: 'defer'; readonly write: TripletRecord | undefined }
  | { readonly kind: 'pass'; readonly write: TripletRecord | undefined; readonly delayedMs: number | undefined };

/** What to answer and store for a triplet seen `now`; pure. The engines' scripts implement the same table. */
export function decideTriplet(rec: TripletRecord | undefined, now: number, s: GreylistParams): TripletVerdict {
  const fresh: TripletVerdict = { kind: 'defer', write: [now, now, 0] };
  if (rec === undefined) return fresh;
  const [first, last, passedAt] = rec;
  if (passedAt > 0) {
    if (now - last > s.expireMs) return fresh;
    return { kind: 'pass', write: now - last >= GREYLIST_REFRESH_MS ? [first, now, passedAt] : undefined, delayedMs: undefined };
  }
  const age = now - first;
  if (age > s.retryWindowMs) return fresh;
  if (age < s.delayMs) return { kind: 'defer', write: undefined };
  return { kind: 'pass', write: [first, now, now], delayedMs: age };
}

const DEFER: GreylistAnswer = Object.freeze({ kind: 'defer' });
const PASS: GreylistAnswer = Object.freeze({ kind: 'pass', delayedMs: undefined });
const SWEEP_CHUNK = 1000;

/**
 * The policy state in the daemon's own LMDB store: reads are synchronous
 * gets, writes lmdb-js's batched puts. A greylist answer does not wait for
 * its write's commit (an fsync'd LMDB transaction, shared by the writes of
 * one batch): the record is kept in `pending` until it is committed, and
 * every read looks there first, so the next request — on any connection —
 * sees it as if committed. What a crash can lose is the last moment's
 * triplets: those senders are greylisted once more; nothing is let through
 * early. A write that fails is reported by the next greylist call (it
 * rejects: the chain logs it and answers the plugin's failure action).
 * No read-modify-write transaction: two requests racing on one triplet in
 * the same turn can only move a first-seen time or lose one auto-whitelist
 * count (NOTES.md).
 */
export function createLmdbPolicyState(state: StateStore): PolicyState {
  let failed: Error | undefined;
  const pendingTriplets = new Map<string, TripletRecord>();
  const pendingClients = new Map<string, ClientRecord>();
  const inflight = new Set<Promise<void>>();
  const write = <V>(pending: Map<string, V>, db: { put(key: string, value: V): Promise<boolean> }, key: string, value: V): void => {
    pending.set(key, value);
    const done: Promise<void> = db.put(key, value).then(
      () => {
        if (pending.get(key) === value) pending.delete(key);
      },
      (err: unknown) => {
        if (pending.get(key) === value) pending.delete(key);
        failed = err instanceof Error ? err : new Error(String(err));
      },
    ).finally(() => inflight.delete(done));
    inflight.add(done);
  };
  /** Until every write issued so far is committed (or failed). */
  const settled = (): Promise<unknown> => Promise.all([...inflight]);
  const triplet = (key: string): TripletRecord | undefined => pendingTriplets.get(key) ?? state.greylist.get(key);
  const client = (net: string): ClientRecord | undefined => pendingClients.get(net) ?? state.clients.get(net);
  const db = state.userPolicy;
  return {
    kind: 'lmdb',
    label: 'lmdb',
    greylist(net, key, now, p) {
      if (failed !== undefined) {
        const err = failed;
        failed = undefined;
        return Promise.reject(new Error(`a greylist write to LMDB failed: ${err.message}`, { cause: err }));
      }
      if (p.autoWhitelist > 0) {
        const c = client(net);
        if (c !== undefined && c[0] >= p.autoWhitelist && now - c[1] <= p.expireMs) {
          if (now - c[1] >= GREYLIST_REFRESH_MS) write(pendingClients, state.clients, net, [c[0], now] as ClientRecord);
          return Promise.resolve(PASS);
        }
      }
      const verdict = decideTriplet(triplet(key), now, p);
      if (verdict.write !== undefined) write(pendingTriplets, state.greylist, key, verdict.write);
      if (verdict.kind === 'defer') return Promise.resolve(DEFER);
      if (verdict.delayedMs === undefined) return Promise.resolve(PASS);
      if (p.autoWhitelist > 0) {
        const c = client(net);
        const passes = c !== undefined && now - c[1] <= p.expireMs ? c[0] : 0;
        write(pendingClients, state.clients, net, [passes + 1, now] as ClientRecord);
      }
      return Promise.resolve({ kind: 'pass', delayedMs: verdict.delayedMs });
    },
    userPolicies: (keys) => Promise.resolve(keys.map((k) => db.get(k))),
    putUserPolicy: async (address, policy) => {
      await db.put(address, policy);
    },
    removeUserPolicy: (address) => db.remove(address),
    userPoliciesOf: (uid) => {
      const out: { address: string; policy: UserPolicyRecord }[] = [];
      for (const { key, value } of db.getRange()) if (value.uid === uid) out.push({ address: key, policy: value });
      return Promise.resolve(out);
    },
    async expire(now, p) {
      await settled();
      // A key with a write still pending was just used: its committed (old) value must not get it removed.
      await sweep(state.greylist, (k, r) => !pendingTriplets.has(k) && (r[2] > 0 ? now - r[1] > p.expireMs : now - r[0] > p.retryWindowMs));
      await sweep(state.clients, (k, r) => !pendingClients.has(k) && now - r[1] > p.expireMs);
    },
    // The writes still pending are counted by what LMDB will hold once they commit.
    counts: async () => {
      await settled();
      return { triplets: state.greylist.getCount(), clients: state.clients.getCount() };
    },
    // The store is its opener's to close; its close() commits what is pending.
    close: () => Promise.resolve(),
  };
}

interface SweepDb<V> {
  getRange(o: { start?: string; limit: number }): Iterable<{ key: string; value: V }>;
  remove(key: string): Promise<boolean>;
}

/**
 * Deletes the entries `expired` picks, a chunk at a time with a turn of the
 * event loop in between, so a large database does not stall request handling.
 */
async function sweep<V>(db: SweepDb<V>, expired: (key: string, v: V) => boolean): Promise<void> {
  let after: string | undefined;
  for (;;) {
    const removals: Promise<boolean>[] = [];
    let seen = 0;
    let last: string | undefined;
    for (const { key, value } of db.getRange({ ...(after !== undefined ? { start: after } : {}), limit: SWEEP_CHUNK + 1 })) {
      if (key === after) continue;
      seen++;
      last = key;
      if (expired(key, value)) removals.push(db.remove(key));
      if (seen === SWEEP_CHUNK) break;
    }
    await Promise.all(removals);
    if (seen < SWEEP_CHUNK || last === undefined) return;
    after = last;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
