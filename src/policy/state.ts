// The policy service's own LMDB environment (default <paths.state>/policy-db),
// apart from the compiled tables: greylist state is written on every new
// triplet, and `mailproc db compile` clears whole tables — neither should
// touch the other. Named sub-databases:
//   greylist          "NET\0sender\0recipient" → [firstSeen, lastSeen, passedAt] (ms; passedAt 0 = not yet)
//   greylist-clients  "NET"                    → [passes, lastSeen]
//   roster            "list\0member"           → 1   (one key per synced subscriber: a post is one point lookup)
//   roster-info       "list"                   → RosterInfo
// Values are arrays of numbers or plain records: no msgpack record
// structures to share between processes (see src/db/NOTES.md).
//
// Several processes may open it at once (the daemon reads, `mailproc lists
// sync` writes); LMDB serialises writers, and lmdb-js renews the daemon's read
// snapshot every event-loop turn, so a sync is seen without a restart.
//
// Exports: openPolicyState, PolicyState, RosterInfo, rosterKey, rosterRange.
// Throws only for LMDB trouble (permissions, disk), like src/db.
import { open, type Database, type RootDatabase } from 'lmdb';

export type TripletRecord = readonly [firstSeen: number, lastSeen: number, passedAt: number];
export type ClientRecord = readonly [passes: number, lastSeen: number];

export interface RosterInfo {
  readonly subscribers: number;
  /** ISO 8601. */
  readonly syncedAt: string;
  /** Where it came from, e.g. "mailman3 http://localhost:8001" or "file /etc/lists/dev"; never a password. */
  readonly source: string;
}

export interface PolicyState {
  readonly root: RootDatabase;
  readonly greylist: Database<TripletRecord, string>;
  readonly clients: Database<ClientRecord, string>;
  readonly roster: Database<number, string>;
  readonly rosterInfo: Database<RosterInfo, string>;
  /** A synced subscriber of `list` (its key in the lists table)? Both lower case. */
  isSubscriber(list: string, address: string): boolean;
  close(): Promise<void>;
}

export const rosterKey = (list: string, member: string): string => `${list}\0${member}`;
/** Every roster key of one list sorts in [start, end). */
export const rosterRange = (list: string): { start: string; end: string } => ({ start: `${list}\0`, end: `${list}\x01` });

export function openPolicyState(dir: string): PolicyState {
  const root = open({ path: dir, maxDbs: 8 });
  const roster = root.openDB<number, string>('roster', {});
  return {
    root,
    greylist: root.openDB<TripletRecord, string>('greylist', {}),
    clients: root.openDB<ClientRecord, string>('greylist-clients', {}),
    roster,
    rosterInfo: root.openDB<RosterInfo, string>('roster-info', {}),
    isSubscriber: (list, address) => roster.get(rosterKey(list, address)) !== undefined,
    close: () => root.close(),
  };
}
