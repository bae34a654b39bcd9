// The policy state on PostgreSQL (state.backend: postgresql://…), shared by
// every node that points at the same database. node-postgres (`pg`): a pool
// of state.pool connections per node, named (prepared) statements, no
// ORM. Each call is at most one round trip: the greylist decision and the
// rate counters are stored functions (plpgsql) that `mailproc state migrate`
// creates, run in one statement each, so their reads and writes are one
// atomic unit under row locks (INSERT … ON CONFLICT, SELECT … FOR UPDATE):
// two nodes racing on one triplet or one counter serialise on its row.
//
// Under load, greylist checks, rate checks and user-policy lookups that find
// every connection busy share one statement (round-trips.ts). The batch
// functions take their row locks in one order on every node — the greylist
// its triplets by key, then its client networks; the rate checks every
// counter by rule and key before deciding any request — so batches from
// several nodes never deadlock. A lone call uses the one-call function
// where that is cheaper and cannot deadlock (one triplet; one counter).
// Greylist and rate state are never cached: each call reads the engine
// after it was made. User policies are kept in memory between changes
// (postgres-policy-cache.ts).
//
// Schema (version PG_SCHEMA_VERSION, in table mailproc_schema):
//   mailproc_greylist          key text PK, first_seen, last_seen, passed_at bigint (ms)
//   mailproc_greylist_clients  net text PK, passes integer, last_seen bigint
//   mailproc_rate              (rule, key) PK, window_ms, win, current, previous
//   mailproc_user_policy       address text PK, uid integer (indexed), policy jsonb
//   mailproc_greylist(…), mailproc_rate(…), and (v2) mailproc_greylist_batch(…),
//   mailproc_rate_batch(…): the functions; mailproc_user_policy_notify(), the
//   trigger telling changes
// Expiry is the maintenance job's (expire(): DELETEs in chunks of 1000).
//
// Exports: openPostgresState, migratePostgres. Failure contract: see
// policy-state.ts; an unreachable server or a missed deadline is an outage
// (engine-guard.ts); a server that answers with a SQL error (a schema not
// migrated) rejects with that error, which names the fix.
import pg from 'pg';
import type { Logger } from '../log.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import { EngineGuard } from './engine-guard.js';
import { GREYLIST_REFRESH_MS, type GreylistAnswer, type GreylistParams, type PolicyState, type RateCheck } from './policy-state.js';
import { USER_POLICY_CHANNEL, UserPolicyCache } from './postgres-policy-cache.js';
import { RoundTrips } from './round-trips.js';
import type { UserPolicyRecord } from './store.js';

/** The PostgreSQL schema version `mailproc state migrate` creates; a daemon refuses a database at another. */
export const PG_SCHEMA_VERSION = 2;

/** Migrations, by the version they lead to. Each runs in the migrating transaction. */
const MIGRATIONS: readonly (readonly [number, string])[] = [[1, `
CREATE TABLE mailproc_greylist (
  key text PRIMARY KEY, first_seen bigint NOT NULL, last_seen bigint NOT NULL, passed_at bigint NOT NULL);
CREATE TABLE mailproc_greylist_clients (net text PRIMARY KEY, passes integer NOT NULL, last_seen bigint NOT NULL);
CREATE TABLE mailproc_rate (
  rule text NOT NULL, key text NOT NULL, window_ms bigint NOT NULL, win bigint NOT NULL,
  current integer NOT NULL, previous integer NOT NULL, PRIMARY KEY (rule, key));
CREATE TABLE mailproc_user_policy (address text PRIMARY KEY, uid integer NOT NULL, policy jsonb NOT NULL);
CREATE INDEX mailproc_user_policy_uid ON mailproc_user_policy (uid);

-- -1 defer, -2 pass, >= 0 first pass after that many ms. Same table as decideTriplet (policy-state.ts).
CREATE FUNCTION mailproc_greylist(p_net text, p_key text, p_now bigint, p_delay bigint, p_window bigint,
    p_expire bigint, p_awl integer, p_refresh bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE c record; t record;
BEGIN
  IF p_awl > 0 THEN
    SELECT passes, last_seen INTO c FROM mailproc_greylist_clients WHERE net = p_net;
    IF FOUND AND c.passes >= p_awl AND p_now - c.last_seen <= p_expire THEN
      IF p_now - c.last_seen >= p_refresh THEN
        UPDATE mailproc_greylist_clients SET last_seen = p_now WHERE net = p_net;
      END IF;
      RETURN -2;
    END IF;
  END IF;
  INSERT INTO mailproc_greylist (key, first_seen, last_seen, passed_at) VALUES (p_key, p_now, p_now, 0)
    ON CONFLICT (key) DO NOTHING;
  IF FOUND THEN RETURN -1; END IF;
  SELECT first_seen, last_seen, passed_at INTO t FROM mailproc_greylist WHERE key = p_key FOR UPDATE;
  IF (t.passed_at > 0 AND p_now - t.last_seen > p_expire) OR (t.passed_at = 0 AND p_now - t.first_seen > p_window) THEN
    UPDATE mailproc_greylist SET first_seen = p_now, last_seen = p_now, passed_at = 0 WHERE key = p_key;
    RETURN -1;
  END IF;
  IF t.passed_at > 0 THEN
    IF p_now - t.last_seen >= p_refresh THEN
      UPDATE mailproc_greylist SET last_seen = p_now WHERE key = p_key;
    END IF;
    RETURN -2;
  END IF;
  IF p_now - t.first_seen < p_delay THEN RETURN -1; END IF;
  UPDATE mailproc_greylist SET last_seen = p_now, passed_at = p_now WHERE key = p_key;
  IF p_awl > 0 THEN
    INSERT INTO mailproc_greylist_clients AS g (net, passes, last_seen) VALUES (p_net, 1, p_now)
      ON CONFLICT (net) DO UPDATE SET
        passes = CASE WHEN p_now - g.last_seen <= p_expire THEN g.passes + 1 ELSE 1 END, last_seen = p_now;
  END IF;
  RETURN p_now - t.first_seen;
END $$;

-- -1: allowed and counted by every rule; else the 0-based index of the first rule that refuses (nothing counted).
CREATE FUNCTION mailproc_rate(p_rules text[], p_keys text[], p_limits integer[], p_windows bigint[],
    p_sliding boolean[], p_now bigint) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE i integer; n integer := coalesce(array_length(p_rules, 1), 0); w bigint; r record;
  cur integer; prev integer; used double precision;
BEGIN
  FOR i IN 1..n LOOP
    w := p_now / p_windows[i];
    INSERT INTO mailproc_rate (rule, key, window_ms, win, current, previous)
      VALUES (p_rules[i], p_keys[i], p_windows[i], w, 0, 0) ON CONFLICT (rule, key) DO NOTHING;
    SELECT win, current, previous INTO r FROM mailproc_rate WHERE rule = p_rules[i] AND key = p_keys[i] FOR UPDATE;
    cur := CASE WHEN r.win = w THEN r.current ELSE 0 END;
    prev := CASE WHEN r.win = w THEN r.previous WHEN r.win = w - 1 THEN r.current ELSE 0 END;
    used := CASE WHEN p_sliding[i]
      THEN prev * (1 - (p_now - w * p_windows[i])::double precision / p_windows[i]) + cur ELSE cur END;
    IF used + 1 > p_limits[i] THEN RETURN i - 1; END IF;
  END LOOP;
  FOR i IN 1..n LOOP
    w := p_now / p_windows[i];
    UPDATE mailproc_rate SET
      previous = CASE WHEN win = w THEN previous WHEN win = w - 1 THEN current ELSE 0 END,
      current = CASE WHEN win = w THEN current + 1 ELSE 1 END, win = w, window_ms = p_windows[i]
      WHERE rule = p_rules[i] AND key = p_keys[i];
  END LOOP;
  RETURN -1;
END $$;
`], [2, `
-- The greylist decision for several triplets in one statement (the calls that
-- waited for a connection together; round-trips.ts), one answer each, in
-- order, as mailproc_greylist gives it. Row locks are taken in one order on
-- every node — all the triplets by key, then the client networks by net — so
-- two batches (or a batch and a single call, which locks its triplet before
-- its network) never deadlock. A whitelisted network's last-seen refresh and
-- a first pass's count are applied in that second step; a batch behaves as its
-- calls run concurrently would.
CREATE FUNCTION mailproc_greylist_batch(p_nets text[], p_keys text[], p_nows bigint[], p_delay bigint, p_window bigint,
    p_expire bigint, p_awl integer, p_refresh bigint) RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE n integer := coalesce(array_length(p_keys, 1), 0); res bigint[] := '{}'; i integer; c record; t record;
  w_nets text[] := '{}'; w_incs integer[] := '{}'; w_nows bigint[] := '{}'; v_now bigint;
BEGIN
  IF n = 0 THEN RETURN res; END IF;
  res := array_fill(NULL::bigint, ARRAY[n]);
  FOR i IN SELECT u.i FROM unnest(p_keys) WITH ORDINALITY AS u(k, i) ORDER BY u.k COLLATE "C", u.i LOOP
    v_now := p_nows[i];
    IF p_awl > 0 THEN
      SELECT passes, last_seen INTO c FROM mailproc_greylist_clients WHERE net = p_nets[i];
      IF FOUND AND c.passes >= p_awl AND v_now - c.last_seen <= p_expire THEN
        IF v_now - c.last_seen >= p_refresh THEN w_nets := w_nets || p_nets[i]; w_incs := w_incs || 0; w_nows := w_nows || v_now; END IF;
        res[i] := -2;
        CONTINUE;
      END IF;
    END IF;
    INSERT INTO mailproc_greylist (key, first_seen, last_seen, passed_at) VALUES (p_keys[i], v_now, v_now, 0)
      ON CONFLICT (key) DO NOTHING;
    IF FOUND THEN res[i] := -1; CONTINUE; END IF;
    SELECT first_seen, last_seen, passed_at INTO t FROM mailproc_greylist WHERE key = p_keys[i] FOR UPDATE;
    IF (t.passed_at > 0 AND v_now - t.last_seen > p_expire) OR (t.passed_at = 0 AND v_now - t.first_seen > p_window) THEN
      UPDATE mailproc_greylist SET first_seen = v_now, last_seen = v_now, passed_at = 0 WHERE key = p_keys[i];
      res[i] := -1;
    ELSIF t.passed_at > 0 THEN
      IF v_now - t.last_seen >= p_refresh THEN
        UPDATE mailproc_greylist SET last_seen = v_now WHERE key = p_keys[i];
      END IF;
      res[i] := -2;
    ELSIF v_now - t.first_seen < p_delay THEN
      res[i] := -1;
    ELSE
      UPDATE mailproc_greylist SET last_seen = v_now, passed_at = v_now WHERE key = p_keys[i];
      IF p_awl > 0 THEN w_nets := w_nets || p_nets[i]; w_incs := w_incs || 1; w_nows := w_nows || v_now; END IF;
      res[i] := v_now - t.first_seen;
    END IF;
  END LOOP;
  FOR c IN SELECT u.net, sum(u.inc)::integer AS inc, max(u.seen) AS seen FROM unnest(w_nets, w_incs, w_nows) AS u(net, inc, seen) GROUP BY u.net ORDER BY u.net COLLATE "C" LOOP
    IF c.inc > 0 THEN
      INSERT INTO mailproc_greylist_clients AS g (net, passes, last_seen) VALUES (c.net, c.inc, c.seen)
        ON CONFLICT (net) DO UPDATE SET
          passes = CASE WHEN c.seen - g.last_seen <= p_expire THEN g.passes + c.inc ELSE c.inc END, last_seen = c.seen;
    ELSE
      UPDATE mailproc_greylist_clients SET last_seen = c.seen WHERE net = c.net;
    END IF;
  END LOOP;
  RETURN res;
END $$;

-- The rate checks of several requests in one statement, one answer per request
-- in order, as mailproc_rate gives it: -1 allowed and counted by every rule, else
-- the 0-based index of the first rule that refuses (nothing counted). Checks
-- come flattened, each with its request's 1-based number (p_reqs, ascending).
-- Every counter of the batch is locked first, in one order on every node (rule,
-- then key), so batches never deadlock; then the requests are decided in order.
CREATE FUNCTION mailproc_rate_batch(p_reqs integer[], p_rules text[], p_keys text[], p_limits integer[], p_windows bigint[],
    p_sliding boolean[], p_nows bigint[]) RETURNS integer[] LANGUAGE plpgsql AS $$
DECLARE m integer := coalesce(array_length(p_rules, 1), 0); res integer[] := '{}'; n integer;
  i integer; j integer; e integer; w bigint; r record; cur integer; prev integer; used double precision; refused integer;
BEGIN
  IF m = 0 THEN RETURN res; END IF;
  n := p_reqs[m];
  res := array_fill(-1, ARRAY[n]);
  FOR r IN SELECT u.rule, u.key, min(u.win) AS win, min(u.seen) AS seen
      FROM unnest(p_rules, p_keys, p_windows, p_nows) AS u(rule, key, win, seen)
      GROUP BY u.rule, u.key ORDER BY u.rule COLLATE "C", u.key COLLATE "C" LOOP
    INSERT INTO mailproc_rate (rule, key, window_ms, win, current, previous)
      VALUES (r.rule, r.key, r.win, r.seen / r.win, 0, 0) ON CONFLICT (rule, key) DO NOTHING;
    PERFORM 1 FROM mailproc_rate WHERE rule = r.rule AND key = r.key FOR UPDATE;
  END LOOP;
  i := 1;
  WHILE i <= m LOOP
    e := i;
    WHILE e < m AND p_reqs[e + 1] = p_reqs[i] LOOP e := e + 1; END LOOP;
    refused := -1;
    FOR j IN i..e LOOP
      w := p_nows[j] / p_windows[j];
      SELECT win, current, previous INTO r FROM mailproc_rate WHERE rule = p_rules[j] AND key = p_keys[j];
      cur := CASE WHEN r.win = w THEN r.current ELSE 0 END;
      prev := CASE WHEN r.win = w THEN r.previous WHEN r.win = w - 1 THEN r.current ELSE 0 END;
      used := CASE WHEN p_sliding[j]
        THEN prev * (1 - (p_nows[j] - w * p_windows[j])::double precision / p_windows[j]) + cur ELSE cur END;
      IF used + 1 > p_limits[j] THEN refused := j - i; EXIT; END IF;
    END LOOP;
    IF refused < 0 THEN
      FOR j IN i..e LOOP
        w := p_nows[j] / p_windows[j];
        UPDATE mailproc_rate SET
          previous = CASE WHEN win = w THEN previous WHEN win = w - 1 THEN current ELSE 0 END,
          current = CASE WHEN win = w THEN current + 1 ELSE 1 END, win = w, window_ms = p_windows[j]
          WHERE rule = p_rules[j] AND key = p_keys[j];
      END LOOP;
    END IF;
    res[p_reqs[i]] := refused;
    i := e + 1;
  END LOOP;
  RETURN res;
END $$;

-- Every change of a user policy is told, at commit, to the nodes listening
-- (postgres-policy-cache.ts): the stored address, or '' for "all of them".
CREATE FUNCTION mailproc_user_policy_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN PERFORM pg_notify('${USER_POLICY_CHANNEL}', ''); RETURN NULL; END IF;
  IF TG_OP <> 'INSERT' THEN
    PERFORM pg_notify('${USER_POLICY_CHANNEL}', CASE WHEN octet_length(OLD.address) <= 7000 THEN OLD.address ELSE '' END);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM pg_notify('${USER_POLICY_CHANNEL}', CASE WHEN octet_length(NEW.address) <= 7000 THEN NEW.address ELSE '' END);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER mailproc_user_policy_changed AFTER INSERT OR UPDATE OR DELETE ON mailproc_user_policy
  FOR EACH ROW EXECUTE FUNCTION mailproc_user_policy_notify();
CREATE TRIGGER mailproc_user_policy_truncated AFTER TRUNCATE ON mailproc_user_policy
  FOR EACH STATEMENT EXECUTE FUNCTION mailproc_user_policy_notify();
`]];

/** Creates or updates the schema to PG_SCHEMA_VERSION; one transaction, serialised against a concurrent migrate. */
export async function migratePostgres(url: string): Promise<{ from: number; to: number }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('BEGIN');
    await client.query('CREATE TABLE IF NOT EXISTS mailproc_schema (version integer NOT NULL)');
    await client.query('LOCK TABLE mailproc_schema IN EXCLUSIVE MODE');
    const got = await client.query<{ version: number }>('SELECT version FROM mailproc_schema');
    const from = got.rows[0]?.version ?? 0;
    if (from > PG_SCHEMA_VERSION) throw new Error(`the database's policy state schema is version ${from}, newer than this mailprocd's ${PG_SCHEMA_VERSION}: upgrade mailprocd`);
    for (const [version, sql] of MIGRATIONS) if (version > from) await client.query(sql);
    if (got.rows.length === 0) await client.query('INSERT INTO mailproc_schema (version) VALUES ($1)', [PG_SCHEMA_VERSION]);
    else await client.query('UPDATE mailproc_schema SET version = $1', [PG_SCHEMA_VERSION]);
    await client.query('COMMIT');
    return { from, to: PG_SCHEMA_VERSION };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await client.end();
  }
}

export interface EngineOptions {
  readonly url: string;
  readonly label: string;
  readonly timeoutMs: number;
  readonly retryMs: number;
  readonly pool: number;
  readonly log: Logger;
  readonly metrics?: MetricsEvents | undefined;
}

/**
 * PostgreSQL text cannot hold NUL, which the greylist keys use as a separator
 * (and a digest key starts with): a backslash is doubled and NUL becomes backslash-0, one to one.
 */
const text = (s: string): string => (/[\\\0]/.test(s) ? s.replace(/\\/g, '\\\\').replace(/\0/g, '\\0') : s);

const untext = (s: string): string => (s.includes('\\') ? s.replace(/\\(\\|0)/g, (_m, c: string) => (c === '0' ? '\0' : '\\')) : s);

/** User-policy lookups a node keeps (a key and its record or "none"; about 1 KB each at most). */
const POLICY_CACHE_ENTRIES = 100_000;

interface GreylistCall {
  readonly net: string;
  readonly key: string;
  readonly now: number;
  readonly p: GreylistParams;
}

/**
 * The greylist decisions of several calls in one statement
 * (mailproc_greylist_batch), answers in call order: -1 defer, -2 pass, >= 0
 * first pass after that many ms. Calls with other parameters (a second
 * greylist configuration) go in a statement of their own.
 */
async function greylistBatch(pool: pg.Pool, calls: readonly GreylistCall[]): Promise<number[]> {
  const out: number[] = new Array<number>(calls.length).fill(Number.NaN);
  const groups = new Map<string, number[]>();
  calls.forEach((c, i) => {
    const k = `${c.p.delayMs}/${c.p.retryWindowMs}/${c.p.expireMs}/${c.p.autoWhitelist}`;
    const g = groups.get(k);
    if (g === undefined) groups.set(k, [i]);
    else g.push(i);
  });
  for (const idx of groups.values()) {
    const first = calls[idx[0] as number] as GreylistCall;
    const p = first.p;
    if (idx.length === 1) {
      // Alone: the one-triplet function, cheaper than the batch one's array handling and sort.
      const r = await pool.query<{ r: string }>({
        name: 'mailproc_greylist', text: 'SELECT mailproc_greylist($1, $2, $3, $4, $5, $6, $7, $8) AS r',
        values: [first.net, first.key, first.now, p.delayMs, p.retryWindowMs, p.expireMs, p.autoWhitelist, GREYLIST_REFRESH_MS],
      });
      out[idx[0] as number] = Number(r.rows[0]?.r ?? Number.NaN);
      continue;
    }
    const r = await pool.query<{ r: (string | null)[] }>({
      name: 'mailproc_greylist_batch',
      text: 'SELECT mailproc_greylist_batch($1::text[], $2::text[], $3::bigint[], $4, $5, $6, $7, $8) AS r',
      values: [idx.map((i) => calls[i]?.net), idx.map((i) => calls[i]?.key), idx.map((i) => calls[i]?.now), p.delayMs, p.retryWindowMs, p.expireMs, p.autoWhitelist, GREYLIST_REFRESH_MS],
    });
    const got = r.rows[0]?.r ?? [];
    idx.forEach((ci, j) => {
      out[ci] = Number(got[j] ?? Number.NaN);
    });
  }
  if (out.some((n) => !Number.isInteger(n))) throw new Error('mailproc_greylist_batch: an answer is missing');
  return out;
}

interface RateCall {
  readonly checks: readonly RateCheck[];
  readonly now: number;
}

/**
 * The rate checks of several requests in one statement (mailproc_rate_batch),
 * answers in call order: -1 allowed and counted, else the index of the rule
 * that refused. A lone request with one rule uses the one-request function:
 * one counter, one lock, nothing to order.
 */
async function rateBatch(pool: pg.Pool, calls: readonly RateCall[]): Promise<number[]> {
  const only = calls.length === 1 ? calls[0] : undefined;
  if (only !== undefined && only.checks.length <= 1) {
    if (only.checks.length === 0) return [-1];
    const c = only.checks[0] as RateCheck;
    const r = await pool.query<{ r: number }>({
      name: 'mailproc_rate', text: 'SELECT mailproc_rate($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::boolean[], $6) AS r',
      values: [[c.rule], [c.key], [c.limit], [c.windowMs], [c.mode === 'sliding'], only.now],
    });
    return [Number(r.rows[0]?.r ?? Number.NaN)];
  }
  const reqs: number[] = [];
  const flat: RateCheck[] = [];
  const nows: number[] = [];
  calls.forEach((call, i) => {
    for (const c of call.checks) {
      reqs.push(i + 1);
      flat.push(c);
      nows.push(call.now);
    }
  });
  const out = calls.map(() => -1);
  if (flat.length > 0) {
    const r = await pool.query<{ r: (number | null)[] }>({
      name: 'mailproc_rate_batch',
      text: 'SELECT mailproc_rate_batch($1::integer[], $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::boolean[], $7::bigint[]) AS r',
      values: [reqs, flat.map((c) => c.rule), flat.map((c) => c.key), flat.map((c) => c.limit), flat.map((c) => c.windowMs), flat.map((c) => c.mode === 'sliding'), nows],
    });
    const got = r.rows[0]?.r ?? [];
    // Requests without checks are not in the statement; the others are numbered up to the last with checks.
    calls.forEach((call, i) => {
      if (call.checks.length > 0) out[i] = Number(got[i] ?? Number.NaN);
    });
  }
  if (out.some((n) => !Number.isInteger(n))) throw new Error('mailproc_rate_batch: an answer is missing');
  return out;
}

/** Connection-level trouble (and the server going away) is an outage; a SQL error is an answer. */
function isOutage(err: unknown): boolean {
  if (!(err instanceof pg.DatabaseError)) return true;
  // 08 connection exception, 53 insufficient resources, 57 operator intervention (shutdown).
  return /^(08|53|57)/.test(err.code ?? '');
}

/**
 * Connects (lazily: the pool opens connections on first use) and checks the
 * schema version. A schema that is missing or at another version throws,
 * naming `mailproc state migrate`; an engine that cannot be reached is not
 * an error here: the service starts in an outage and recovers by itself.
 */
export async function openPostgresState(o: EngineOptions): Promise<PolicyState> {
  // synchronous_commit off for the request path: a greylist triplet or a rate
  // count is committed without waiting for the WAL flush (the server flushes
  // within wal_writer_delay, 200 ms). A server crash can lose the last moment's
  // triplets — those senders are greylisted once more — never make the data
  // inconsistent; the flush per request would cost more than the query. A user
  // policy, which its owner was told is set, is written with it on (writeDurably).
  //
  // A statement still running at four deadlines is given up: the server
  // cancels it (statement_timeout; a row lock held by a forgotten session, a
  // stalled disk), and a connection that does not answer a second later is
  // dropped (query_timeout: a server or network gone silent). Either way its
  // connection comes back to the pool or is replaced, so the outage probe and
  // the next requests find one: nothing holds the pool forever.
  const giveUpMs = Math.max(1000, o.timeoutMs * 4);
  const pool = new pg.Pool({
    connectionString: o.url, max: o.pool, connectionTimeoutMillis: giveUpMs, idleTimeoutMillis: 60_000,
    options: `-c synchronous_commit=off -c statement_timeout=${giveUpMs}`, query_timeout: giveUpMs + 1000, keepAlive: true,
  });
  // An idle connection the server closes emits 'error' on the pool: without a listener that would end the process.
  pool.on('error', () => undefined);
  const guard = new EngineGuard({
    label: o.label, kind: 'postgresql', timeoutMs: o.timeoutMs, retryMs: o.retryMs, log: o.log, metrics: o.metrics,
    probe: () => pool.query('SELECT 1'), isOutage,
  });
  const q = <R extends pg.QueryResultRow>(name: string, text: string, values: unknown[]): Promise<pg.QueryResult<R>> =>
    guard.run(() => pool.query<R>({ name, text, values }));

  try {
    const v = await q<{ version: number }>('mailproc_version', 'SELECT version FROM mailproc_schema', []);
    const version = v.rows[0]?.version ?? 0;
    if (version !== PG_SCHEMA_VERSION) throw new Error(`state.backend ${o.label}: policy state schema version ${version}, this mailprocd needs ${PG_SCHEMA_VERSION}: run \`mailproc state migrate\``);
  } catch (err) {
    if (err instanceof pg.DatabaseError && err.code === '42P01') {
      await pool.end().catch(() => undefined);
      guard.close();
      throw new Error(`state.backend ${o.label}: no policy state schema in this database: run \`mailproc state migrate\``, { cause: err });
    }
    if (err instanceof Error && err.name !== 'StateUnavailableError') {
      await pool.end().catch(() => undefined);
      guard.close();
      throw err;
    }
    // Unreachable: logged once by the guard; requests get their failure actions until it is back.
  }

  // The request path's statements share the pool through round-trips.ts:
  // calls that find every connection busy go out together, one statement for
  // all of them, when a connection frees.
  const trips = new RoundTrips(o.pool);
  const greylistLane = trips.lane<GreylistCall, number>((calls) => greylistBatch(pool, calls));
  const policyLane = trips.lane<readonly string[], (UserPolicyRecord | undefined)[]>(async (calls) => {
    const keys = [...new Set(calls.flat())];
    const r = await pool.query<{ address: string; policy: UserPolicyRecord }>({
      name: 'mailproc_policies', text: 'SELECT address, policy FROM mailproc_user_policy WHERE address = ANY($1::text[])', values: [keys],
    });
    const byKey = new Map(r.rows.map((row) => [row.address, row.policy]));
    return calls.map((ks) => ks.map((k) => byKey.get(k)));
  });
  const rateLane = trips.lane<RateCall, number>((calls) => rateBatch(pool, calls));

  // Users' policies (and that most recipients have none) from memory between changes.
  const cache = new UserPolicyCache({
    url: o.url, label: o.label, timeoutMs: o.timeoutMs, retryMs: o.retryMs, heartbeatMs: o.retryMs, maxEntries: POLICY_CACHE_ENTRIES, log: o.log,
  });
  void cache.start();

  /** One statement in a transaction that waits for the WAL flush. */
  const writeDurably = (text: string, values: unknown[]): Promise<pg.QueryResult> => guard.run(async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SET LOCAL synchronous_commit = on');
      const r = await client.query(text, values);
      await client.query('COMMIT');
      return r;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  });

  // In chunks, so that no statement holds many row locks or runs past the deadline.
  const chunked = async (name: string, text: string, values: unknown[]): Promise<void> => {
    for (;;) {
      const r = await q(name, text, values);
      if ((r.rowCount ?? 0) < 1000) return;
    }
  };

  return {
    kind: 'postgresql',
    label: o.label,
    outage: () => guard.outage(),
    policyCache: () => ({ listening: cache.active, entries: cache.size }),
    async greylist(net, triplet, now, p): Promise<GreylistAnswer> {
      const n = await guard.run(() => greylistLane({ net: text(net), key: text(triplet), now, p }));
      if (n === -1) return { kind: 'defer' };
      return { kind: 'pass', delayedMs: n >= 0 ? n : undefined };
    },
    rate(checks, now) {
      return guard.run(() => rateLane({ checks: checks.map((c) => ({ ...c, rule: text(c.rule), key: text(c.key) })), now }));
    },
    userPolicies(keys) {
      return cache.lookup(keys.map(text), (ks) => guard.run(() => policyLane(ks)));
    },
    async putUserPolicy(address, policy) {
      cache.forget(text(address));
      await writeDurably('INSERT INTO mailproc_user_policy (address, uid, policy) VALUES ($1, $2, $3) ON CONFLICT (address) DO UPDATE SET uid = EXCLUDED.uid, policy = EXCLUDED.policy',
        [text(address), policy.uid, JSON.stringify(policy)]).finally(() => cache.forget(text(address)));
    },
    async removeUserPolicy(address) {
      cache.forget(text(address));
      const r = await writeDurably('DELETE FROM mailproc_user_policy WHERE address = $1', [text(address)]).finally(() => cache.forget(text(address)));
      return (r.rowCount ?? 0) > 0;
    },
    async userPoliciesOf(uid) {
      const r = await q<{ address: string; policy: UserPolicyRecord }>('mailproc_policies_of', 'SELECT address, policy FROM mailproc_user_policy WHERE uid = $1 ORDER BY address', [uid]);
      return r.rows.map((row) => ({ address: untext(row.address), policy: row.policy }));
    },
    async expire(now, p) {
      await chunked('mailproc_expire_triplets', `DELETE FROM mailproc_greylist WHERE key IN (SELECT key FROM mailproc_greylist
        WHERE (passed_at > 0 AND $1 - last_seen > $2) OR (passed_at = 0 AND $1 - first_seen > $3) LIMIT 1000)`, [now, p.expireMs, p.retryWindowMs]);
      await chunked('mailproc_expire_clients', `DELETE FROM mailproc_greylist_clients WHERE net IN (SELECT net FROM mailproc_greylist_clients
        WHERE $1 - last_seen > $2 LIMIT 1000)`, [now, p.expireMs]);
    },
    async expireRates(now) {
      await chunked('mailproc_expire_rate', `DELETE FROM mailproc_rate WHERE (rule, key) IN (SELECT rule, key FROM mailproc_rate
        WHERE win < $1 / window_ms - 1 LIMIT 1000)`, [now]);
    },
    async counts() {
      const r = await q<{ t: string; c: string }>('mailproc_counts', 'SELECT (SELECT count(*) FROM mailproc_greylist) AS t, (SELECT count(*) FROM mailproc_greylist_clients) AS c', []);
      return { triplets: Number(r.rows[0]?.t ?? 0), clients: Number(r.rows[0]?.c ?? 0) };
    },
    async close() {
      guard.close();
      await cache.close();
      await pool.end();
    },
  };
}
