// The one writable store and what keeps it single: the LMDB environment
// everything the daemon writes at run time lives in (store.ts), the rules for
// the keys clients choose (keys.ts), and the one-instance lock on the state
// directory (instance-lock.ts). The compiled admin tables are src/db's,
// read-only beside it. The policy state (greylist, rate counters, user
// policies) goes through PolicyState (policy-state.ts): this store, or a
// PostgreSQL / Redis that several nodes share (postgres.ts, redis.ts), as
// state.backend says (open-policy-state.ts).
export { LEGACY_DIR, openState, openStateMigrating, rosterKey, rosterMembers, rosterRange, type ClientRecord, type RosterInfo, type StateStore, type TripletRecord, type UserPolicyRecord, type UserRulesRecord, type DecisionRecord, type VacationRecord, type DedupeRecord, type ProbeRecord } from './store.js';
export { boundedKey, fitsKey, keyBytes, MAX_KEY_BYTES, storageKey } from './keys.js';
export { describeBusy, lockInstance, LOCK_FILE, type InstanceBusy, type InstanceLock } from './instance-lock.js';
export {
  createLmdbPolicyState, decideTriplet, GREYLIST_REFRESH_MS, SCHEMA_VERSION, StateUnavailableError,
  type GreylistAnswer, type GreylistParams, type PolicyCacheState, type PolicyState, type RateCheck, type StateOutage, type TripletVerdict,
} from './policy-state.js';
export { migratePolicyState, openPolicyState, type OpenPolicyStateOptions } from './open-policy-state.js';
