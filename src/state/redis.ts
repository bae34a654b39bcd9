// The policy state on Redis or Valkey (state.backend: redis://…, rediss://…
// or unix:///path/redis.sock), shared by every node that points at the same
// server. ioredis: one connection per node, commands pipelined on it (many
// requests in flight share the connection), Lua scripts loaded once and
// called by digest (EVALSHA, reloaded by ioredis when the server lost them).
// Each request is one round trip: the greylist decision is one script, the
// rate rules of a request one more, a recipient's policy one MGET. A script
// runs atomically (Redis runs one at a time), so nodes racing on one triplet
// or counter serialise there.
//
// Keys (under state.prefix, default "mailproc:"):
//   g:<net\0sender\0recipient>  "first:last:passed"  PX retry_window (unpassed) / expire (passed)
//   c:<net>                     "passes:last"         PX expire
//   r:<rule>\0<key>             "win:current:previous" PX two windows
//   u:<address>                 the user policy, JSON (no TTL)
//   uid:<uid>                   set of the addresses that uid has policies for
//   schema                      the schema version (`mailproc state migrate`)
// Expiry is the engine's: every greylist and rate key carries its TTL, so
// the maintenance job has nothing to do. Decisions compare the stored times
// with the caller's clock, so a TTL only ever removes what is dead anyway.
// Redis Cluster is not supported (a script's keys would have to share a slot).
//
// Exports: openRedisState, migrateRedis. Failure contract: see
// policy-state.ts. Commands are never queued while disconnected
// (enableOfflineQueue false): a request fails at once and gets its failure
// action; ioredis reconnects by itself every retry_interval.
import { Redis, ReplyError } from 'ioredis';
import { EngineGuard } from './engine-guard.js';
import type { EngineOptions } from './postgres.js';
import { GREYLIST_REFRESH_MS, SCHEMA_VERSION, type GreylistAnswer, type PolicyState } from './policy-state.js';
import type { UserPolicyRecord } from './store.js';

// Numbers are ms since the epoch: 13 digits, which Lua's "%.14g" prints whole.
const GREYLIST_LUA = `
local now, delay, window, expire, awl, refresh = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function client()
  local c = redis.call('GET', KEYS[1])
  if not c then return nil end
  local p, l = string.match(c, '^(%d+):(%d+)$')
  return tonumber(p), tonumber(l)
end
if awl > 0 then
  local passes, last = client()
  if passes and passes >= awl and now - last <= expire then
    if now - last >= refresh then redis.call('SET', KEYS[1], passes .. ':' .. now, 'PX', expire) end
    return -2
  end
end
local function fresh()
  redis.call('SET', KEYS[2], now .. ':' .. now .. ':0', 'PX', window)
  return -1
end
local t = redis.call('GET', KEYS[2])
if not t then return fresh() end
local f, l, p = string.match(t, '^(%d+):(%d+):(%d+)$')
local first, last, passed = tonumber(f), tonumber(l), tonumber(p)
if (passed > 0 and now - last > expire) or (passed == 0 and now - first > window) then return fresh() end
if passed > 0 then
  if now - last >= refresh then redis.call('SET', KEYS[2], first .. ':' .. now .. ':' .. passed, 'PX', expire) end
  return -2
end
if now - first < delay then return -1 end
redis.call('SET', KEYS[2], first .. ':' .. now .. ':' .. now, 'PX', expire)
if awl > 0 then
  local passes, clast = client()
  if not passes or now - clast > expire then passes = 0 end
  redis.call('SET', KEYS[1], (passes + 1) .. ':' .. now, 'PX', expire)
end
return now - first
`;

const RATE_LUA = `
local now = tonumber(ARGV[1])
local seen = {}
for i = 1, #KEYS do
  local limit, w, sliding = tonumber(ARGV[i * 3 - 1]), tonumber(ARGV[i * 3]), ARGV[i * 3 + 1] == '1'
  local win = math.floor(now / w)
  local cur, prev = 0, 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local a, b, c = string.match(v, '^(%d+):(%d+):(%d+)$')
    a = tonumber(a)
    if a == win then cur, prev = tonumber(b), tonumber(c) elseif a == win - 1 then prev = tonumber(b) end
  end
  local used = cur
  if sliding then used = prev * (1 - (now - win * w) / w) + cur end
  if used + 1 > limit then return i - 1 end
  seen[i] = { win, cur, prev, w }
end
for i = 1, #KEYS do
  local s = seen[i]
  redis.call('SET', KEYS[i], s[1] .. ':' .. (s[2] + 1) .. ':' .. s[3], 'PX', 2 * s[4])
end
return -1
`;

type ScriptedRedis = Redis & {
  mpGreylist(client: string, triplet: string, ...args: (string | number)[]): Promise<number>;
  mpRate(numKeys: number, ...args: (string | number)[]): Promise<number>;
};

function connect(url: string, retryMs: number, lazy: boolean, silentMs = 1000): Redis {
  const common = {
    // Fail a command at once while disconnected: a policy request must get its failure action now, not after a queue drains.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => retryMs,
    lazyConnect: lazy,
    // A connection that answers nothing for this long with commands waiting is dropped and made anew:
    // one a network swallowed (no error, ever) would otherwise keep the node in an outage for good.
    socketTimeout: silentMs,
    keepAlive: 30_000,
  };
  const u = new URL(url);
  if (u.protocol !== 'unix:') return new Redis(url, common);
  // unix://[:password@]/path/redis.sock[?db=N]
  const db = Number(u.searchParams.get('db') ?? 0);
  return new Redis({ path: u.pathname, ...(u.password !== '' ? { password: decodeURIComponent(u.password) } : {}), db: Number.isInteger(db) ? db : 0, ...common });
}

/** Sets the schema version; Redis needs no tables, the scripts are loaded on first use. */
export async function migrateRedis(url: string, prefix: string): Promise<{ from: number; to: number }> {
  const r = connect(url, 1000, true);
  r.on('error', () => undefined);
  try {
    await r.connect();
    const from = Number((await r.get(`${prefix}schema`)) ?? 0);
    if (from > SCHEMA_VERSION) throw new Error(`the Redis policy state schema is version ${from}, newer than this mailprocd's ${SCHEMA_VERSION}: upgrade mailprocd`);
    await r.set(`${prefix}schema`, String(SCHEMA_VERSION));
    return { from, to: SCHEMA_VERSION };
  } finally {
    r.disconnect();
  }
}

/** Outage = anything but an answer from the server (a ReplyError is one: a script or command it refused). */
const isOutage = (err: unknown): boolean => !(err instanceof ReplyError);

export async function openRedisState(o: EngineOptions & { readonly prefix: string }): Promise<PolicyState> {
  // Four deadlines of silence (1 s by default) and the connection is given up.
  const r = connect(o.url, o.retryMs, true, Math.max(1000, o.timeoutMs * 4)) as ScriptedRedis;
  // Connection trouble is the guard's to report (once per outage); ioredis would log every attempt otherwise.
  r.on('error', () => undefined);
  r.defineCommand('mpGreylist', { numberOfKeys: 2, lua: GREYLIST_LUA });
  r.defineCommand('mpRate', { lua: RATE_LUA });
  const guard = new EngineGuard({
    label: o.label, kind: 'redis', timeoutMs: o.timeoutMs, retryMs: o.retryMs, log: o.log, metrics: o.metrics,
    // A first connect that failed leaves ioredis waiting for connect() (lazyConnect): ask again, then PING.
    probe: async () => {
      if (r.status === 'wait' || r.status === 'end') await r.connect();
      return r.ping();
    },
    isOutage,
  });
  const k = o.prefix;
  try {
    await guard.run(() => r.connect());
    const version = Number((await guard.run(() => r.get(`${k}schema`))) ?? 0);
    if (version !== SCHEMA_VERSION) {
      throw new Error(`state.backend ${o.label}: policy state schema version ${version} (key ${k}schema), this mailprocd needs ${SCHEMA_VERSION}: run \`mailproc state migrate\``);
    }
  } catch (err) {
    if (err instanceof Error && err.name !== 'StateUnavailableError') {
      guard.close();
      r.disconnect();
      throw err;
    }
  }
  const policyKey = (address: string): string => `${k}u:${address}`;

  return {
    kind: 'redis',
    label: o.label,
    outage: () => guard.outage(),
    async greylist(net, triplet, now, p): Promise<GreylistAnswer> {
      const n = await guard.run(() => r.mpGreylist(`${k}c:${net}`, `${k}g:${triplet}`, now, p.delayMs, p.retryWindowMs, p.expireMs, p.autoWhitelist, GREYLIST_REFRESH_MS));
      if (n === -1) return { kind: 'defer' };
      return { kind: 'pass', delayedMs: n >= 0 ? n : undefined };
    },
    rate(checks, now) {
      const keys = checks.map((c) => `${k}r:${c.rule}\0${c.key}`);
      const args = checks.flatMap((c) => [c.limit, c.windowMs, c.mode === 'sliding' ? '1' : '0']);
      return guard.run(() => r.mpRate(keys.length, ...keys, now, ...args));
    },
    async userPolicies(keys) {
      const got = await guard.run(() => r.mget(keys.map(policyKey)));
      return got.map((v) => (v === null ? undefined : (JSON.parse(v) as UserPolicyRecord)));
    },
    async putUserPolicy(address, policy) {
      const old = await guard.run(() => r.get(policyKey(address)));
      const oldUid = old === null ? undefined : (JSON.parse(old) as UserPolicyRecord).uid;
      const m = r.multi().set(policyKey(address), JSON.stringify(policy)).sadd(`${k}uid:${policy.uid}`, address);
      if (oldUid !== undefined && oldUid !== policy.uid) m.srem(`${k}uid:${oldUid}`, address);
      await guard.run(() => m.exec());
    },
    async removeUserPolicy(address) {
      const old = await guard.run(() => r.get(policyKey(address)));
      if (old === null) return false;
      const uid = (JSON.parse(old) as UserPolicyRecord).uid;
      await guard.run(() => r.multi().del(policyKey(address)).srem(`${k}uid:${uid}`, address).exec());
      return true;
    },
    async userPoliciesOf(uid) {
      const addresses = (await guard.run(() => r.smembers(`${k}uid:${uid}`))).sort();
      if (addresses.length === 0) return [];
      const got = await guard.run(() => r.mget(addresses.map(policyKey)));
      const out: { address: string; policy: UserPolicyRecord }[] = [];
      addresses.forEach((address, i) => {
        const v = got[i];
        if (v !== null && v !== undefined) out.push({ address, policy: JSON.parse(v) as UserPolicyRecord });
      });
      return out;
    },
    // Every greylist and rate key has its TTL: Redis expires them itself.
    expire: () => Promise.resolve(),
    async counts() {
      const count = async (pattern: string): Promise<number> => {
        let n = 0;
        let cursor = '0';
        do {
          const [next, keys] = await guard.run(() => r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000));
          cursor = next;
          n += keys.length;
        } while (cursor !== '0');
        return n;
      };
      return { triplets: await count(`${k}g:*`), clients: await count(`${k}c:*`) };
    },
    close() {
      guard.close();
      r.disconnect();
      return Promise.resolve();
    },
  };
}
