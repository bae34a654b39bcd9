// The user policies a PostgreSQL node has read, kept while the database
// tells it of every change. Each node holds one extra connection that
// LISTENs on `mailproc_user_policy`; a trigger (schema version 2) notifies
// the address of every row inserted, updated or deleted, at commit, and ''
// on a TRUNCATE (forget everything). So a recipient's policy, and the much
// more common fact that it has none, costs a round trip only the first time
// a node sees the recipient, not on every request.
//
// When the cache may answer: only while the listening connection is up, its
// LISTEN acknowledged, and no heartbeat has failed (a trivial query on it
// every `heartbeatMs`, to be answered within `timeoutMs` by the same server
// process that LISTENs). Otherwise every lookup goes to the engine and
// nothing is kept: connecting, reconnecting after an error, and closing all
// empty the cache first. A connection that dies silently is found by the
// next heartbeat: for that long at most, a change could go unheard. A lookup whose
// read may have crossed a notification (one arrived while it was in flight)
// is answered but not kept. A change made through this node (put/remove)
// empties its entry before and after the write, so its owner's next mail
// sees it at once; a change made on another node is in force here as soon as
// its notification arrives, within milliseconds of the commit — a request
// that lands in that moment is decided as if it had come just before the
// change.
//
// Exports: UserPolicyCache, USER_POLICY_CHANNEL, LISTENER_NAME. Never
// throws: connection trouble turns the cache off (lookups then go to the
// engine, whose own failures are the guard's), and it reconnects every
// `retryMs`.
import pg from 'pg';
import type { Logger } from '../log.js';
import type { UserPolicyRecord } from './store.js';

export const USER_POLICY_CHANNEL = 'mailproc_user_policy';
/** The listening connection's application_name, as pg_stat_activity shows it. */
export const LISTENER_NAME = 'mailprocd policy listener';

export interface UserPolicyCacheOptions {
  readonly url: string;
  readonly label: string;
  readonly timeoutMs: number;
  readonly retryMs: number;
  /** How often the listening connection is asked a trivial query to prove it is alive. */
  readonly heartbeatMs: number;
  /** Entries kept at most; the oldest go first. */
  readonly maxEntries: number;
  readonly log: Logger;
}

/** The server process behind a connection. */
async function backendPid(c: pg.Client): Promise<number> {
  const r = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  return Number(r.rows[0]?.pid);
}

/** A record, or null for "this key has none". */
type Entry = UserPolicyRecord | null;

export class UserPolicyCache {
  private readonly entries = new Map<string, Entry>();
  private client: pg.Client | undefined;
  private live = false;
  /** Bumped by every notification and every loss of the connection: a read that spans a bump is not kept. */
  private generation = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** What the log last said, so that each change of state is logged once. */
  private said: 'nothing' | 'listening' | 'not listening' = 'nothing';

  constructor(private readonly o: UserPolicyCacheOptions) {}

  /** Connects and starts listening; resolves either way (a failure is retried). */
  start(): Promise<void> {
    return this.connect();
  }

  /** Whether lookups may be answered from memory now (tests, status). */
  get active(): boolean {
    return this.live;
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * The records under `keys` (text-encoded as stored), from memory where
   * every key is known, else all of them from `read` (one round trip), kept
   * when no notification crossed it.
   */
  async lookup(keys: readonly string[], read: (keys: readonly string[]) => Promise<(UserPolicyRecord | undefined)[]>): Promise<(UserPolicyRecord | undefined)[]> {
    if (this.live) {
      const hit: (UserPolicyRecord | undefined)[] = [];
      for (const k of keys) {
        const e = this.entries.get(k);
        if (e === undefined) break;
        hit.push(e ?? undefined);
      }
      if (hit.length === keys.length) return hit;
    }
    const gen = this.generation;
    const wasLive = this.live;
    const got = await read(keys);
    if (wasLive && this.live && gen === this.generation) {
      keys.forEach((k, i) => this.remember(k, got[i] ?? null));
    }
    return got;
  }

  /** Forgets one key now (a write through this node); a read in flight is not kept either. */
  forget(key: string): void {
    this.generation++;
    this.entries.delete(key);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.off();
    if (this.timer !== undefined) clearTimeout(this.timer);
    const c = this.client;
    this.client = undefined;
    if (c !== undefined) await c.end().catch(() => undefined);
  }

  private remember(key: string, e: Entry): void {
    if (this.entries.size >= this.o.maxEntries && !this.entries.has(key)) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
    this.entries.set(key, e);
  }

  /** No answers from memory until listening again, and nothing of before kept. */
  private off(): void {
    this.live = false;
    this.generation++;
    this.entries.clear();
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    this.off();
    const c = new pg.Client({
      connectionString: this.o.url, connectionTimeoutMillis: Math.max(1000, this.o.timeoutMs * 4), keepAlive: true, application_name: LISTENER_NAME,
    });
    this.client = c;
    c.on('error', (err) => this.lost(c, err.message));
    c.on('end', () => this.lost(c, 'connection closed'));
    c.on('notification', (n) => {
      if (n.channel !== USER_POLICY_CHANNEL || c !== this.client) return;
      this.generation++;
      if (n.payload === undefined || n.payload === '') this.entries.clear();
      else this.entries.delete(n.payload);
    });
    let pid: number;
    try {
      await c.connect();
      await c.query(`LISTEN ${USER_POLICY_CHANNEL}`);
      pid = await backendPid(c);
    } catch (err) {
      this.lost(c, err instanceof Error ? err.message : String(err));
      return;
    }
    if (c !== this.client || this.closed) return;
    this.live = true;
    if (this.said !== 'listening') this.o.log.info(`state engine ${this.o.label}: listening for user policy changes; lookups are kept in memory between changes`);
    this.said = 'listening';
    this.beat(c, pid);
  }

  /**
   * A trivial query on the listening connection every heartbeatMs: no answer
   * within the deadline, or an answer from another server process than the
   * one that LISTENs (a transaction-mode pooler in between, which would
   * never deliver the notifications), and the cache is off.
   */
  private beat(c: pg.Client, pid: number): void {
    this.timer = setTimeout(() => {
      if (c !== this.client || this.closed) return;
      let answered = false;
      const deadline = setTimeout(() => {
        if (!answered) this.lost(c, `heartbeat not answered within ${this.o.timeoutMs} ms`);
      }, this.o.timeoutMs);
      backendPid(c).then((now) => {
        answered = true;
        clearTimeout(deadline);
        if (now !== pid) this.lost(c, `the listening connection moved from server process ${pid} to ${now}: connect to PostgreSQL directly or through a session-mode pooler`);
        else if (c === this.client && this.live) this.beat(c, pid);
      }, (err: unknown) => {
        answered = true;
        clearTimeout(deadline);
        this.lost(c, err instanceof Error ? err.message : String(err));
      });
    }, this.o.heartbeatMs);
    this.timer.unref();
  }

  /** The listening connection is gone or unproven: off, closed, and tried again later. */
  private lost(c: pg.Client, why: string): void {
    if (c !== this.client) return;
    this.client = undefined;
    this.off();
    c.removeAllListeners('notification');
    c.on('error', () => undefined);
    void c.end().catch(() => undefined);
    if (this.closed) return;
    if (this.said !== 'not listening') {
      this.said = 'not listening';
      this.o.log.info(`state engine ${this.o.label}: no user policy change notifications (${why}): every lookup asks the engine until they are back`);
    }
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.connect(), this.o.retryMs);
    this.timer.unref();
  }
}
