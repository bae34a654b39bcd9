// The one writable LMDB environment (paths.state_db, default
// <paths.state>/state-db): everything the daemon and its users write while
// it runs, apart from the compiled admin tables, which are read-only beside
// it (greylist state is written on every new triplet, and `mailproc db
// compile` clears whole tables — neither should touch the other). User rules,
// duplicate and vacation records come here too. Named sub-databases:
//   greylist          "NET\0sender\0recipient" → [firstSeen, lastSeen, passedAt] (ms; passedAt 0 = not yet)
//   greylist-clients  "NET"                    → [passes, lastSeen]
//   roster            "list\0member"           → 1   (one key per synced subscriber: a post is one point lookup)
//   roster-info       "list"                   → RosterInfo
//   user-policy       "address"                → UserPolicyRecord (lower case; what a mailbox owner set
//                                                for their address with `mailproc policy`, see plugins/user-policy.ts)
//   user-rules        "address"                → UserRulesRecord (lower case; the owner's own rules as they
//                                                wrote them, `mailproc rules`; one put replaces the whole list)
//   rules-log         [address, TIME, QUEUEID, RCPT] → DecisionRecord (an array key; address = the recipient
//                                                without extension, lower case; TIME = ms, 15 digits, so keys sort by time)
//   vacation          vacationKey(owner, sender) → [lastReplyMs, periodMs] (src/classify/vacation.ts; the
//                                                period is kept so that pruning knows each entry's own)
//   dedupe            dedupeKey(owner, Message-ID) → [firstDeliveryMs, queueId] (src/classify/duplicate.ts)
//   probes            probe id → ProbeRecord (mailmond's probes that arrived, src/local/probe.ts;
//                                                pruned after probe.keep)
// Ten named databases of maxDbs 12 (an LMDB environment needs the number
// up front; raising it later is harmless, going past it is an error at open).
// Values are arrays of numbers or plain records: no msgpack record
// structures to share between processes (see src/db/NOTES.md).
//
// Several processes may open it at once (the daemon reads, `mailproc lists
// sync` writes); LMDB serialises writers, and lmdb-js renews the daemon's read
// snapshot every event-loop turn, so a sync is seen without a restart.
//
// Keys are built from what clients send, so their length is the client's
// choice; LMDB takes at most MAX_KEY_BYTES (keys.ts). Every key built here or
// in the plugins goes through keys.ts: a read with a key that cannot fit
// answers "not there" without asking LMDB (a roster member or a user-policy
// address that long was never stored: list sync skips addresses over 254
// bytes, the control socket refuses them), and greylist keys that cannot fit
// are stored under a digest (storageKey).
//
// Vacation and dedupe records: claimVacation is one synchronous write
// transaction (LMDB serialises writers across processes, so of two
// deliveries racing for one sender exactly one gets true). lmdb-js's async
// transaction() is not used (it hung here, src/policy/NOTES.md); the sync
// one costs a commit on the caller's turn, which a vacation reply (rare, and
// about to send mail) can afford. dedupeRecord is a plain batched put, not a
// claim: it runs after a copy was delivered, and two copies racing may both
// be delivered — a duplicate, never a lost message. Keys go through
// storageKey, so a sender of any length is remembered.
//
// Exports: openState, StateStore, RosterInfo, UserPolicyRecord, UserRulesRecord,
// DecisionRecord, TripletRecord, VacationRecord, DedupeRecord, ProbeRecord,
// ClientRecord, rosterKey, rosterRange, rosterMembers, openStateMigrating, LEGACY_DIR.
// Throws only for LMDB trouble (permissions, disk), like src/db; never for a key's length.
import { mkdir, rename, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import type { DecisionCopy } from '../mail/outcome.js';
import { fitsKey, storageKey } from './keys.js';

export type TripletRecord = readonly [firstSeen: number, lastSeen: number, passedAt: number];
export type ClientRecord = readonly [passes: number, lastSeen: number];
export type VacationRecord = readonly [lastReplyMs: number, periodMs: number];
export type DedupeRecord = readonly [firstDeliveryMs: number, queueId: string];

export interface RosterInfo {
  readonly subscribers: number;
  /** ISO 8601. */
  readonly syncedAt: string;
  /** Where it came from, e.g. "mailman3 http://localhost:8001" or "file /etc/lists/dev"; never a password. */
  readonly source: string;
}

/**
 * One address's user policy as stored. Optional keys are left out, not
 * stored as undefined (msgpack would keep the key).
 */
export interface UserPolicyRecord {
  /** Sender globs (lower case) that always get through, and that `onlyAllowed` admits. */
  readonly allow: readonly string[];
  /** Sender globs (lower case) refused unless they also match `allow`. */
  readonly deny: readonly string[];
  /** Only senders matching `allow` (and the null sender) may send. */
  readonly onlyAllowed: boolean;
  /** true: greylist this recipient even if the site does not; false: never; absent: the site's setting. */
  readonly greylist?: boolean;
  /** Bytes; a message announced (SIZE=) or seen larger is refused. */
  readonly maxSize?: number;
  /**
   * The uid-table value (user name or number) that made the address the
   * setter's, or "" when it was the daemon's own user's without one (not
   * root). A record whose address the table now gives to someone else is
   * stale: ignored, and invisible to the new owner until they set their own.
   */
  readonly owner: string;
  /** The setter's uid, for `mailproc policy list`. */
  readonly uid: number;
  /** ISO 8601. */
  readonly updatedAt: string;
}

/** A mailbox owner's own rules for one address (src/control/user-rules.ts). */
export interface UserRulesRecord {
  /** Each rule as its owner wrote it, in evaluation order. */
  readonly rules: readonly string[];
  /** As UserPolicyRecord.owner: the uid-table value that made the address the setter's ("" = the default user's, or not root). */
  readonly owner: string;
  readonly uid: number;
  /** ISO 8601. */
  readonly updatedAt: string;
}

/** One message's fate for one recipient, for `mailproc rules log`. */
export interface DecisionRecord {
  /** ISO 8601. */
  readonly time: string;
  readonly queueId: string;
  readonly recipient: string;
  readonly sender: string;
  readonly subject: string;
  /** The enhanced status code recorded (2.0.0 delivered, 5.x.x refused by a rule). */
  readonly status: string;
  readonly copies: readonly DecisionCopy[];
}

/** A mailmond probe that arrived with a valid signature: when, and where its time went (ms). */
export interface ProbeRecord {
  /** mailmond's clock when it handed the probe to the MTA (from the signed header). */
  readonly sentMs: number;
  /** Our end of DATA (or the queue's pick-up). */
  readonly arrivalMs: number;
  /** When the probe was recorded: the end of its delivery. */
  readonly doneMs: number;
  /** The MTA's share: from the earliest Received date (not before sentMs) to arrivalMs. */
  readonly mtaMs: number;
  /** Postfix-style delays=a/b/c/d of our side (src/mail/outcome.ts, DeliveryTiming). */
  readonly beforeMs: number;
  readonly slotMs: number;
  readonly transferMs: number;
  readonly workMs: number;
  readonly queueId: string;
  readonly recipient: string;
}

export interface StateStore {
  readonly root: RootDatabase;
  readonly greylist: Database<TripletRecord, string>;
  readonly clients: Database<ClientRecord, string>;
  readonly roster: Database<number, string>;
  readonly rosterInfo: Database<RosterInfo, string>;
  readonly userPolicy: Database<UserPolicyRecord, string>;
  readonly userRules: Database<UserRulesRecord, string>;
  readonly rulesLog: Database<DecisionRecord, [string, string, string, string]>;
  readonly vacation: Database<VacationRecord, string>;
  readonly dedupe: Database<DedupeRecord, string>;
  readonly probes: Database<ProbeRecord, string>;
  /** A synced subscriber of `list` (its key in the lists table)? Both lower case. False for an address too long to be a key. */
  isSubscriber(list: string, address: string): boolean;
  /**
   * May a vacation reply go now? true: yes, and the reply is remembered at
   * `now`; false: one went within `periodMs` before `now`. Atomic across
   * processes: of concurrent claims for one key exactly one is true.
   */
  claimVacation(key: string, periodMs: number, now: number): boolean;
  /** The first delivery of this message to this owner, when it was within `windowMs` before `now`. */
  dedupeSeen(key: string, windowMs: number, now: number): { readonly firstMs: number; readonly queueId: string } | undefined;
  /** Remembers a delivery (after it succeeded); an entry within `windowMs` is kept, so the first one counts. */
  dedupeRecord(key: string, now: number, queueId: string, windowMs: number): Promise<void>;
  /** Deletes vacation entries whose own period has passed; returns how many. */
  pruneVacation(now: number): Promise<number>;
  /** Deletes dedupe entries older than `windowMs`; returns how many. */
  pruneDedupe(windowMs: number, now: number): Promise<number>;
  /** Deletes probe records older than `keepMs`; returns how many. */
  pruneProbes(keepMs: number, now: number): Promise<number>;
  close(): Promise<void>;
  /** True once close() was called: late writers (a delivery ending during shutdown) skip their records. */
  isClosed(): boolean;
}

export const rosterKey = (list: string, member: string): string => `${list}\0${member}`;
/** Every roster key of one list that is shorter than 64 characters sorts in [start, end) — see rosterMembers. */
export const rosterRange = (list: string): { start: string; end: string } => ({ start: `${list}\0`, end: `${list}\x01` });

/**
 * Every member of a list's synced roster, with the key it is stored under.
 * lmdb-js encodes a string key with a NUL in it like an array once it is 64
 * characters or longer (and hands it back as one), so such keys sort apart
 * from the short ones: both ranges are read.
 */
export function rosterMembers(roster: Database<number, string>, list: string): { key: string | string[]; member: string }[] {
  const out: { key: string | string[]; member: string }[] = [];
  const prefix = list.length + 1;
  for (const key of roster.getKeys(rosterRange(list))) out.push({ key, member: key.slice(prefix) });
  const long = { start: [list], end: [list, '\uffff'] } as unknown as { start: string; end: string };
  for (const key of roster.getKeys(long) as Iterable<string | string[]>) {
    if (Array.isArray(key)) out.push({ key, member: key.slice(1).join('\0') });
  }
  return out;
}

const PRUNE_CHUNK = 1000;

/**
 * Deletes the entries `expired` picks, a chunk at a time with a turn of the
 * event loop in between, so a large database does not stall deliveries.
 * Keys here are strings (no NUL: see vacationKey), so a chunk resumes after
 * the last key it saw.
 */
async function prune<V>(db: Database<V, string>, expired: (v: V) => boolean): Promise<number> {
  let after: string | undefined;
  let removed = 0;
  for (;;) {
    const removals: Promise<boolean>[] = [];
    let seen = 0;
    let last: string | undefined;
    for (const { key, value } of db.getRange({ ...(after !== undefined ? { start: after } : {}), limit: PRUNE_CHUNK + 1 })) {
      if (key === after) continue;
      seen++;
      last = key;
      if (expired(value)) removals.push(db.remove(key));
      if (seen === PRUNE_CHUNK) break;
    }
    removed += (await Promise.all(removals)).filter(Boolean).length;
    if (seen < PRUNE_CHUNK || last === undefined) return removed;
    after = last;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

export function openState(dir: string): StateStore {
  const root = open({ path: dir, maxDbs: 12 });
  const roster = root.openDB<number, string>('roster', {});
  const vacation = root.openDB<VacationRecord, string>('vacation', {});
  const dedupe = root.openDB<DedupeRecord, string>('dedupe', {});
  // After close, lmdb-js aborts the process on a read ("invalid read txn"):
  // a late caller (a delivery finishing during shutdown) gets an error instead.
  let closed = false;
  const usable = (): void => {
    if (closed) throw new Error('the state store is closed (shutting down)');
  };
  const probes = root.openDB<ProbeRecord, string>('probes', {});
  return {
    root,
    greylist: root.openDB<TripletRecord, string>('greylist', {}),
    clients: root.openDB<ClientRecord, string>('greylist-clients', {}),
    roster,
    rosterInfo: root.openDB<RosterInfo, string>('roster-info', {}),
    userPolicy: root.openDB<UserPolicyRecord, string>('user-policy', {}),
    userRules: root.openDB<UserRulesRecord, string>('user-rules', {}),
    rulesLog: root.openDB<DecisionRecord, [string, string, string, string]>('rules-log', {}),
    vacation,
    dedupe,
    probes,
    isSubscriber: (list, address) => {
      const key = rosterKey(list, address);
      return fitsKey(key) && roster.get(key) !== undefined;
    },
    isClosed: () => closed,
    claimVacation: (key, periodMs, now) => {
      usable();
      const k = storageKey(key);
      return root.transactionSync(() => {
        const last = vacation.get(k);
        // A reply "in the future" (the clock went back) counts as recent: better one reply too few.
        if (last !== undefined && now - last[0] < periodMs) return false;
        vacation.putSync(k, [now, periodMs]);
        return true;
      });
    },
    dedupeSeen: (key, windowMs, now) => {
      usable();
      const r = dedupe.get(storageKey(key));
      return r !== undefined && now - r[0] < windowMs ? { firstMs: r[0], queueId: r[1] } : undefined;
    },
    dedupeRecord: async (key, now, queueId, windowMs) => {
      usable();
      const k = storageKey(key);
      const r = dedupe.get(k);
      if (r !== undefined && now - r[0] < windowMs) return;
      await dedupe.put(k, [now, queueId]);
    },
    pruneVacation: async (now) => (closed ? 0 : prune(vacation, (r) => now - r[0] >= r[1])),
    pruneDedupe: async (windowMs, now) => (closed ? 0 : prune(dedupe, (r) => now - r[0] >= windowMs)),
    pruneProbes: async (keepMs, now) => (closed ? 0 : prune(probes, (r) => now - r.doneMs >= keepMs)),
    close: () => {
      closed = true;
      return root.close();
    },
  };
}

/** Where versions before the one writable store kept this environment: <paths.state>/policy-db. */
export const LEGACY_DIR = 'policy-db';

/**
 * Opens the store at `dir`, creating it (0755: the daemon's user writes it,
 * the CLI reads it). When `dir` does not exist yet but the older
 * <stateDir>/policy-db does, that one is renamed to `dir` first — greylist
 * state, rosters and user policies carry over. Only the daemon calls this
 * with `stateDir`, under its instance lock, so nothing else has it open.
 * Returns the store and, when it moved, what it did (for the log).
 */
export async function openStateMigrating(dir: string, stateDir: string): Promise<{ store: StateStore; migrated?: string }> {
  const legacy = join(stateDir, LEGACY_DIR);
  let migrated: string | undefined;
  if (legacy !== dir && !(await exists(dir)) && (await exists(legacy))) {
    await mkdir(dirname(dir), { recursive: true, mode: 0o755 });
    await rename(legacy, dir);
    migrated = `moved ${legacy} to ${dir} (paths.state_db)`;
  }
  await mkdir(dir, { recursive: true, mode: 0o755 });
  return { store: openState(dir), ...(migrated !== undefined ? { migrated } : {}) };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, (err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return false;
    throw err;
  });
}
