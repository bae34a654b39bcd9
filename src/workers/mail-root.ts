// Per-user directories under the mail root, made by the master (root code)
// before a worker writes there. The mail root is root-owned 0755, so a
// worker running as the recipient cannot create `<mail root>/<name>` itself,
// and no other local user can plant it first (what a world-writable 1777 root
// allowed: B made carol's directory, and with it carol's mailbox).
//
// Exports: prepareUserDirectories(mailRoot, identity, destinations, allowRoot)
// → Promise<Status | undefined>; userDirectoryOf(mailRoot, destination) (pure);
// clearMailRootCache() for tests.
//
// For each maildir or mbox destination that lies below the mail root, the
// first path component under it is the per-user directory. Missing: it is
// made 0700 and handed to the delivery uid:gid. Present and the delivery
// uid's: fine. Present and anybody else's, a symlink or not a directory:
// refused, 4.2.0 (temporary, like Postfix's safe_open "not owned by
// recipient": the admin fixes it and the retry delivers), with the path and
// the owner in the text, which the delivery log line carries. An mbox file
// directly in the mail root has no per-user directory and is left alone.
//
// Safe: the name is one path component (computed lexically, `..` cannot
// appear after path.resolve), mkdir never follows a symlink at the name, the
// directory is then opened O_NOFOLLOW|O_DIRECTORY and checked and chowned
// through that handle (fstat, fchown, fchmod), never by name. Cheap: what was
// prepared for an identity is remembered for a minute (one Map lookup on the
// LMTP fast path); concurrent deliveries share one preparation.
//
// Never throws: an error other than a refusal (the mail root itself missing,
// EACCES when not root) returns undefined and lets the worker report its own
// error, through the errno table, on the path it could not write.
import { constants } from 'node:fs';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Destination } from '../classify/rules.js';
import { syncDirectory } from '../deliver/index.js';
import { status, type Status } from '../mail/status.js';
import { resolveIdentity, type Identity } from '../os/identity.js';

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
/** How long a prepared directory is trusted without looking again. */
const TTL_MS = 60_000;

interface Prepared {
  readonly at: number;
  readonly owner: string;
  readonly result: Promise<Status | undefined>;
}

const prepared = new Map<string, Prepared>();

/** The per-user directory a destination lies in (`<root>/<first component>`), or undefined. */
export function userDirectoryOf(mailRoot: string, d: Destination): string | undefined {
  if (d.kind !== 'maildir' && d.kind !== 'mbox') return undefined;
  const root = resolve(mailRoot);
  const rel = relative(root, resolve(d.path));
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) return undefined;
  const parts = rel.split(sep);
  // An mbox directly in the mail root (/var/mail/alice) is a file, not a directory of the user's.
  if (parts.length === 1 && d.kind === 'mbox') return undefined;
  return join(root, parts[0] as string);
}

/**
 * Makes or checks the per-user directory of every destination below the
 * mail root; the first refusal, or undefined when the worker may go ahead.
 * Identities the pool will refuse anyway (root without allowRoot, another
 * uid when we are not root) are left alone so nothing is made for them.
 */
export async function prepareUserDirectories(
  mailRoot: string,
  identity: Identity,
  destinations: readonly Destination[],
  allowRoot: boolean,
): Promise<Status | undefined> {
  if ((identity.uid === 0 || identity.gid === 0) && !allowRoot) return undefined;
  const self = process.getuid?.();
  if (self === undefined || (self !== 0 && self !== identity.uid)) return undefined;
  const dirs = new Set<string>();
  for (const d of destinations) {
    const dir = userDirectoryOf(mailRoot, d);
    if (dir !== undefined) dirs.add(dir);
  }
  for (const dir of dirs) {
    const refusal = await prepareOne(resolve(mailRoot), dir, identity, self === 0);
    if (refusal !== undefined) return refusal;
  }
  return undefined;
}

function prepareOne(root: string, dir: string, identity: Identity, asRoot: boolean): Promise<Status | undefined> {
  const owner = `${identity.uid}:${identity.gid}`;
  const hit = prepared.get(dir);
  const now = Date.now();
  if (hit !== undefined && hit.owner === owner && now - hit.at < TTL_MS) return hit.result;
  const result = makeOrCheck(root, dir, identity, asRoot);
  const entry: Prepared = { at: now, owner, result };
  prepared.set(dir, entry);
  // Only a success is remembered: a refusal is looked at again next time (the admin may have fixed it).
  void result.then((r) => {
    if (r !== undefined && prepared.get(dir) === entry) prepared.delete(dir);
  });
  return result;
}

async function makeOrCheck(root: string, dir: string, identity: Identity, asRoot: boolean): Promise<Status | undefined> {
  let made = false;
  try {
    // Root's umask cannot widen 0700; the owner is fixed through the handle below.
    await mkdir(dir, { mode: 0o700 });
    made = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return forget(dir);
  }
  let fh: FileHandle;
  try {
    fh = await open(dir, DIR_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // O_NOFOLLOW|O_DIRECTORY: a symlink says ELOOP (or ENOTDIR), a file ENOTDIR.
    if (code === 'ELOOP' || code === 'ENOTDIR') return refuse(dir, 'it is not a directory (a symbolic link or a file)');
    return forget(dir);
  }
  try {
    if (made) {
      if (asRoot) await fh.chown(identity.uid, identity.gid);
      await fh.chmod(0o700);
      // The new entry in the mail root must survive a crash with the message written below it.
      await syncDirectory(root);
      return undefined;
    }
    const st = await fh.stat();
    if (st.uid === identity.uid) return undefined;
    const who = await resolveIdentity(String(st.uid));
    const name = typeof who === 'string' || who.user === String(st.uid) ? '' : `${who.user} `;
    return refuse(dir, `it is owned by ${name}(uid ${st.uid}), not by ${identity.user} (uid ${identity.uid})`);
  } catch {
    return forget(dir);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

function refuse(dir: string, why: string): Status {
  return status('4.2.0', `refusing to deliver below ${dir}: ${why}`);
}

/** Preparation failed for a reason the worker will meet and report itself; not remembered. */
function forget(dir: string): undefined {
  prepared.delete(dir);
  return undefined;
}

/** For tests: forget what was prepared. */
export function clearMailRootCache(): void {
  prepared.clear();
}
