// Who a user or group is, on this host (src/os: the host's own facts, used by
// every floor that names a user — socket owners, delivery identities, the
// per-user control sockets). Resolves a user name or number, with an optional
// group, to numeric uid/gid and home, through `getent` so NSS sources (LDAP,
// sssd) work as they do for Postfix. Results are cached for a minute: a lookup per message
// would cost a process spawn. A name that does not resolve is an admin error,
// and an admin error must not bounce mail: the caller answers 4.3.0.
import { spawn, type ChildProcess } from 'node:child_process';
import { shieldDescriptors } from './descriptors.js';

export interface Identity {
  readonly user: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
}

interface PasswdEntry { name: string; uid: number; gid: number; home: string }

const TTL_MS = 60_000;
const cache = new Map<string, { at: number; value: Promise<PasswdEntry | undefined> }>();

/**
 * One `getent` run. Spawned with /dev/null over every descriptor that lacks
 * close-on-exec (lmdb's databases): getent runs as the daemon's user and
 * crosses no privilege boundary, but no child of ours gets those.
 */
function getent(db: 'passwd' | 'group', key: string): Promise<string[] | undefined> {
  return new Promise((resolve) => {
    let io: ReturnType<typeof shieldDescriptors>;
    try {
      io = shieldDescriptors(['ignore', 'pipe', 'ignore']);
    } catch {
      return resolve(undefined);
    }
    let child: ChildProcess;
    try {
      child = spawn('getent', [db, key], { stdio: io.stdio, timeout: 5000 });
    } finally {
      io.release();
    }
    const out: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.on('error', () => resolve(undefined));
    child.on('close', (code) => {
      if (code !== 0) return resolve(undefined);
      const line = Buffer.concat(out).toString('utf8').split('\n')[0] ?? '';
      resolve(line === '' ? undefined : line.split(':'));
    });
  });
}

function cached<T>(key: string, load: () => Promise<T | undefined>): Promise<T | undefined> {
  const hit = cache.get(key);
  const now = Date.now();
  if (hit && now - hit.at < TTL_MS) return hit.value as Promise<T | undefined>;
  const value = load();
  cache.set(key, { at: now, value: value as Promise<PasswdEntry | undefined> });
  return value;
}

async function lookupPasswd(user: string): Promise<PasswdEntry | undefined> {
  return cached(`p:${user}`, async () => {
    const f = await getent('passwd', user);
    if (f === undefined || f.length < 7) {
      // A bare number with no passwd entry is still a valid uid (like Postfix's default_privs).
      return /^\d+$/.test(user) ? { name: user, uid: Number(user), gid: Number(user), home: '/' } : undefined;
    }
    return { name: f[0] ?? user, uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '/' };
  });
}

export async function resolveGroup(group: string): Promise<number | undefined> {
  if (/^\d+$/.test(group)) return Number(group);
  const e = await cached(`g:${group}`, async () => {
    const f = await getent('group', group);
    return f === undefined ? undefined : { name: group, uid: 0, gid: Number(f[2]), home: '' };
  });
  return e?.gid;
}

/** Resolves user (+ optional group). Returns a reason string when it cannot. */
export async function resolveIdentity(user: string, group?: string): Promise<Identity | string> {
  const p = await lookupPasswd(user);
  if (p === undefined) return `unknown user "${user}"`;
  let gid = p.gid;
  if (group !== undefined) {
    const g = await resolveGroup(group);
    if (g === undefined) return `unknown group "${group}"`;
    gid = g;
  }
  return { user: p.name, uid: p.uid, gid, home: p.home };
}

/** For tests and SIGHUP: forget cached entries. */
export function clearIdentityCache(): void {
  cache.clear();
}
