// The per-user control sockets: <run>/users/<uid>/control.sock, the socket
// mode 0600 and its directory 0700, both owned by the user. Only that user
// (and root) can connect, so every request on a socket is that user's: the
// file system is the authentication, and the protocol carries no credentials
// (../shared/DESIGN.md, "Address lookup and the databases"). Requests and replies are
// JSON lines (user-protocol.ts): the user's policies (`mailproc policy`), their
// own delivery rules (`mailproc rules`, user-rules.ts) and their spam checker.
//
// Which users: run as root, every user the uid table names for an exact
// address key (user@domain or user+ext@domain; not user, user+ext or
// @domain, which give no one an address to set a policy for), except root;
// and the default delivery user when the rules table has an address by name
// that no uid entry covers (that address is theirs: ownership.ts).
// Not root (a developer's `npm start`), one socket for the daemon's own user,
// who every delivery runs as anyway. The set is built at start and again on
// refresh(): SIGHUP, and a change of the tables' compile generation (polled),
// so a user added to the uid table gets a socket without a restart. A user
// no longer named loses the socket (the directory stays: other things live
// there). A user who removes their own socket gets it back at the next refresh.
//
// Ownership of an address (a policy or a rule may be changed only for the
// caller's own) is ownership.ts's: the uid table's exact entry, or the
// default user for an address only the rules table names; a catch-all or a
// list makes no owner. Not root, any address the daemon accepts is its own user's.
//
// Why creating the socket is safe as root: <run>/users is ours and writable
// by no one else, so a user cannot swap their directory for a symlink. While
// the socket is made, the user's directory is taken back (root, 0700), so
// they cannot slip a symlink in where chmod/chown would follow it; it is
// handed to them only once the socket inside is theirs.
//
// Exports: startUserSockets, UserSockets, UserSocketsOptions, userSocketPath.
// Failure contract: one user's socket that cannot be made is logged and
// skipped (the others are served); a request's trouble is an error reply.
// Nothing here throws at run time.
import { createServer, type Server, type Socket } from 'node:net';
import { chmod, chown, lstat, mkdir, unlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { TableReader, Tables } from '../db/index.js';
import type { Logger } from '../log.js';
import { lookupKeys, parseRecipient } from '../mail/address.js';
import type { UserPolicyStore } from '../policy/index.js';
import { resolveIdentity, type Identity } from '../os/identity.js';
import type { SpamCheckers } from '../workers/spam-checkers.js';
import { ownerOfAddress, type OwnershipOptions } from './ownership.js';
import { applyPolicyChange, describePolicy, isEmptyPolicy, parseUserRequest, type UserRequest } from './user-protocol.js';
import type { RulesService } from './user-rules.js';

export interface UserSocketsOptions {
  /** paths.run: the sockets go under <run>/users/<uid>/. */
  readonly runDir: string;
  /** The compiled tables: their uid table says who gets a socket. */
  readonly tables: TableReader & Pick<Tables, 'entries'>;
  readonly policies: UserPolicyStore;
  /** Whether userpolicy is in the policy chain (replies say so: stored but not applied). */
  readonly applied: boolean;
  /** delivery.recipient_delimiter. */
  readonly recipientDelimiter: string;
  readonly log: Logger;
  /** The tables' compile generation; when it changes the set of users is rebuilt. */
  readonly generation?: () => number;
  /** How often generation() is looked at; default 10 s. */
  readonly pollMs?: number;
  /** The spam checkers (undefined: SpamAssassin off or not installed): spam.checker starts the caller's. */
  readonly spam?: SpamCheckers;
  /** The rules.* requests (user-rules.ts); undefined: refused. */
  readonly rules?: RulesService;
  /** delivery.user (and group): the owner of addresses the rules table has by name and the uid table not at all (ownership.ts). */
  readonly defaultUser: () => { readonly user: string; readonly group?: string };
}

export interface UserSockets {
  /** uid → socket path, for every socket served now. */
  readonly sockets: ReadonlyMap<number, string>;
  /** Rebuilds the set of users from the uid table (one run at a time). */
  refresh(): Promise<void>;
  /** Stops listening, removes the sockets, ends open connections. */
  close(): Promise<void>;
}

/** Starts (or finds) the user's checker and says where it listens; held for nothing, the caller talks to it directly. */
export async function spamChecker(spam: SpamCheckers | undefined, who: Identity): Promise<Record<string, unknown>> {
  if (spam === undefined) return { ok: false, error: 'spam checking is off on this server (spam.enabled, or SpamAssassin is not installed)' };
  try {
    const lease = await spam.acquire(who);
    lease.release(false, false);
    return { ok: true, user: who.user, uid: who.uid, socket: lease.socket, pid: lease.pid };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

export const userSocketPath = (runDir: string, uid: number): string => join(runDir, 'users', String(uid), 'control.sock');

/** A rules.test request carries its message (up to 8 MiB, base64). */
const MAX_LINE = 12 * 1024 * 1024;
/** Per user: `mailproc policy` needs one; a few more for scripts. */
const MAX_CONNECTIONS = 16;
const IDLE_MS = 60_000;
const RESOLVE_CONCURRENCY = 8;

interface Served {
  readonly who: Identity;
  readonly path: string;
  readonly server: Server;
  readonly ino: number;
  readonly connections: Set<Socket>;
}

const notFound = (err: unknown): undefined => {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
  throw err;
};

async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const run = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
}

export async function startUserSockets(o: UserSocketsOptions): Promise<UserSockets> {
  const asRoot = process.getuid?.() === 0;
  const info = userInfo();
  const self: Identity = { user: info.username, uid: info.uid, gid: info.gid, home: info.homedir };
  const served = new Map<number, Served>();
  const sockets = new Map<number, string>();
  const usersDir = join(o.runDir, 'users');

  /** Exact address keys of the uid table and the user each names. */
  const exactEntries = (): { key: string; value: string }[] => {
    const out: { key: string; value: string }[] = [];
    for (const { key, value } of o.tables.entries('uid')) if (key.indexOf('@') > 0) out.push({ key, value });
    return out;
  };

  /** Does the rules table have an address by name that no uid entry covers (the default user's, ownership.ts)? */
  const defaultOwnsSome = (): boolean => {
    for (const { key } of o.tables.entries('rules')) {
      if (key.indexOf('@') <= 0) continue;
      if (o.tables.lookup('uid', lookupKeys(parseRecipient(key, o.recipientDelimiter))) === undefined) return true;
    }
    return false;
  };

  const ownershipOptions = (): OwnershipOptions => ({
    tables: o.tables, recipientDelimiter: o.recipientDelimiter, defaultUser: o.defaultUser(), asRoot, self,
  });

  const wantedUsers = async (): Promise<Map<number, Identity>> => {
    const wanted = new Map<number, Identity>();
    if (!asRoot) return wanted.set(self.uid, self);
    const names = [...new Set(exactEntries().map((e) => e.value))];
    if (defaultOwnsSome()) names.push(o.defaultUser().user);
    const unknown: string[] = [];
    await forEachLimited(names, RESOLVE_CONCURRENCY, async (name) => {
      const who = await resolveIdentity(name);
      if (typeof who === 'string') unknown.push(name);
      else if (who.uid !== 0 && !wanted.has(who.uid)) wanted.set(who.uid, who);
    });
    if (unknown.length > 0) o.log.warn(`user control sockets: the uid table names unknown users, who get none: ${unknown.sort().join(', ')}`);
    return wanted;
  };

  const addressesOf = async (who: Identity): Promise<string[]> => {
    const keys = new Set<string>();
    for (const e of exactEntries()) keys.add(e.key);
    for (const { key } of o.tables.entries('rules')) if (key.indexOf('@') > 0) keys.add(key);
    const mine: string[] = [];
    for (const key of keys) if ((await ownerOfAddress(ownershipOptions(), key))?.identity.uid === who.uid) mine.push(key);
    return mine.sort();
  };

  const ownership = async (who: Identity, address: string): Promise<{ owner: string } | string> => {
    const own = await ownerOfAddress(ownershipOptions(), address);
    if (own !== undefined && own.identity.uid === who.uid) return { owner: own.owner };
    if (own !== undefined) return `${address} is not yours`;
    return `${address} is not yours (a policy can be set only for an address the uid table gives you by name, as user@domain)`;
  };

  const answer = async (who: Identity, req: UserRequest): Promise<Record<string, unknown>> => {
    const applied = o.applied;
    if (req.cmd === 'policy.list') {
      const policies = (await o.policies.listByUid(who.uid)).map((e) => ({ address: e.address, policy: describePolicy(e.policy) }));
      return { ok: true, applied, user: who.user, policies, addresses: await addressesOf(who) };
    }
    if (req.cmd === 'spam.checker') return spamChecker(o.spam, who);
    if (req.cmd.startsWith('rules.')) {
      if (o.rules === undefined) return { ok: false, error: 'rules cannot be changed on this server' };
      return o.rules.answer({ root: false, who }, req as Parameters<RulesService['answer']>[1]);
    }
    const { address } = req as Extract<UserRequest, { address: string }>;
    const own = await ownership(who, address);
    if (typeof own === 'string') return { ok: false, error: own };
    switch (req.cmd) {
      case 'policy.show': {
        const p = await o.policies.get(address);
        return { ok: true, applied, address, policy: p !== undefined ? describePolicy(p) : null };
      }
      case 'policy.clear': {
        const removed = await o.policies.remove(address);
        if (removed) o.log.info(`user policy for ${address} cleared by ${who.user}`, { uid: who.uid });
        return { ok: true, applied, address, removed };
      }
      case 'policy.set': {
        const next = applyPolicyChange(await o.policies.get(address), req.change);
        if (typeof next === 'string') return { ok: false, error: `${address}: ${next}` };
        if (isEmptyPolicy(next)) {
          await o.policies.remove(address);
          o.log.info(`user policy for ${address} cleared by ${who.user} (nothing left in it)`, { uid: who.uid });
          return { ok: true, applied, address, policy: null };
        }
        const record = { ...next, owner: own.owner, uid: who.uid, updatedAt: new Date().toISOString() };
        await o.policies.put(address, record);
        o.log.info(`user policy for ${address} set by ${who.user}`, {
          uid: who.uid, allow: next.allow.length, deny: next.deny.length, only_allowed: next.onlyAllowed,
          greylist: next.greylist === undefined ? 'default' : next.greylist ? 'on' : 'off', max_size: next.maxSize ?? 'none',
        });
        return { ok: true, applied, address, policy: describePolicy(record) };
      }
      default:
        return { ok: false, error: `unexpected request ${req.cmd}` };
    }
  };

  const reply = async (who: Identity, line: string): Promise<Record<string, unknown>> => {
    const req = parseUserRequest(line);
    if (typeof req === 'string') return { ok: false, error: req };
    try {
      return await answer(who, req);
    } catch (err) {
      o.log.error(`user control socket of ${who.user}: ${req.cmd} failed: ${(err as Error).message}`);
      return { ok: false, error: `internal error: ${(err as Error).message}` };
    }
  };

  const onConnection = (who: Identity, connections: Set<Socket>) => (sock: Socket): void => {
    connections.add(sock);
    let buf = '';
    // One reply at a time, in request order.
    let pending = Promise.resolve();
    sock.setEncoding('utf8');
    sock.setTimeout(IDLE_MS, () => sock.destroy());
    sock.on('error', () => undefined);
    sock.on('close', () => connections.delete(sock));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim() === '') continue;
        pending = pending.then(async () => {
          const r = await reply(who, line);
          if (!sock.destroyed) sock.write(`${JSON.stringify(r)}\n`);
        });
      }
      if (buf.length > MAX_LINE) {
        buf = '';
        pending = pending.then(() => {
          sock.end(`${JSON.stringify({ ok: false, error: 'request too long' })}\n`);
        });
      }
    });
  };

  let checkedUsersDir = false;
  const prepareUsersDir = async (): Promise<void> => {
    if (checkedUsersDir) return;
    const existed = await lstat(usersDir).catch(notFound);
    if (existed === undefined) {
      await mkdir(usersDir, { recursive: true, mode: 0o755 });
      await chmod(usersDir, 0o755);
    }
    const st = await lstat(usersDir);
    if (!st.isDirectory() || st.uid !== self.uid || (st.mode & 0o022) !== 0) {
      throw new Error(`${usersDir} must be a directory owned by ${self.user} and writable by no one else (it holds every user's socket)`);
    }
    for (const dir of [o.runDir, usersDir]) {
      const d = dir === usersDir ? st : await lstat(dir);
      if (asRoot && (d.mode & 0o001) === 0) o.log.warn(`${dir} (mode ${(d.mode & 0o7777).toString(8)}) cannot be searched by other users: they cannot reach their control sockets`);
    }
    checkedUsersDir = true;
  };

  const serve = async (who: Identity): Promise<Served> => {
    await prepareUsersDir();
    const dir = join(usersDir, String(who.uid));
    const st: Stats | undefined = await lstat(dir).catch(notFound);
    if (st !== undefined && !st.isDirectory()) throw new Error(`${dir} exists and is not a directory`);
    if (st === undefined) await mkdir(dir, { mode: 0o700 });
    else if (!asRoot && st.uid !== self.uid) throw new Error(`${dir} belongs to uid ${st.uid}, not to ${self.user}`);
    // Ours until the socket inside is theirs (see the header).
    if (asRoot) await chown(dir, 0, 0);
    await chmod(dir, 0o700);
    const path = join(dir, 'control.sock');
    const old = await lstat(path).catch(notFound);
    if (old?.isDirectory()) throw new Error(`${path} is a directory`);
    if (old !== undefined) await unlink(path);
    const connections = new Set<Socket>();
    const server = createServer(onConnection(who, connections));
    server.maxConnections = MAX_CONNECTIONS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => o.log.error(`user control socket ${path}: ${err.message}`));
    try {
      await chmod(path, 0o600);
      if (asRoot) {
        await chown(path, who.uid, who.gid);
        await chown(dir, who.uid, who.gid);
      }
      const { ino } = await lstat(path);
      return { who, path, server, ino, connections };
    } catch (err) {
      server.close();
      throw err;
    }
  };

  const stop = async (s: Served): Promise<void> => {
    await new Promise<void>((resolve) => {
      s.server.close(() => resolve());
      for (const c of s.connections) c.destroy();
    });
    // Only our own socket: the directory is the user's, what is there now may be theirs.
    const st = await lstat(s.path).catch(() => undefined);
    if (st?.isSocket() && st.ino === s.ino) await unlink(s.path).catch(() => undefined);
  };

  let closing = false;
  const rebuild = async (): Promise<void> => {
    if (closing) return;
    const wanted = await wantedUsers();
    for (const [uid, s] of served) {
      const st = await lstat(s.path).catch(() => undefined);
      const intact = st?.isSocket() === true && st.ino === s.ino;
      if (wanted.has(uid) && intact) continue;
      await stop(s);
      served.delete(uid);
      sockets.delete(uid);
      if (!wanted.has(uid)) o.log.info(`user control socket for ${s.who.user} (uid ${uid}) closed: the uid table no longer names them`);
    }
    for (const [uid, who] of wanted) {
      if (served.has(uid)) continue;
      try {
        const s = await serve(who);
        served.set(uid, s);
        sockets.set(uid, s.path);
      } catch (err) {
        o.log.error(`user control socket for ${who.user} (uid ${uid}) not made: ${(err as Error).message}`);
      }
    }
  };

  let queue: Promise<void> = Promise.resolve();
  const refresh = (): Promise<void> => {
    queue = queue.then(rebuild).catch((err: unknown) => o.log.error(`user control sockets: ${(err as Error).message}`));
    return queue;
  };

  await refresh();
  o.log.info(`user control sockets for ${sockets.size} user(s) under ${usersDir}`);

  let generation = o.generation?.();
  const timer = o.generation === undefined ? undefined : setInterval(() => {
    const now = o.generation?.();
    if (now === generation) return;
    generation = now;
    void refresh();
  }, o.pollMs ?? 10_000);
  timer?.unref();

  let closed: Promise<void> | undefined;
  return {
    sockets,
    refresh,
    close: () => {
      closed ??= (async () => {
        closing = true;
        if (timer !== undefined) clearInterval(timer);
        await queue;
        for (const s of served.values()) await stop(s);
        served.clear();
        sockets.clear();
      })();
      return closed;
    },
  };
}
