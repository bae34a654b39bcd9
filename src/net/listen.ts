// Listening on "unix:PATH" or "HOST:PORT" for every listener of the daemon
// (LMTP/SMTP, policy, control): a unix socket's directory is created, a
// socket left by a previous run is removed (anything else at that path is
// not ours to remove), and the socket gets its configured mode and
// owner/group — Postfix's lmtp client and smtpd run as user postfix. The
// socket is created owner-only (umask 0177 around the bind) and only then
// opened up to its mode, so it is never reachable by more users than the
// configuration says, not even between bind and chmod. Fails with an error
// naming the address (or the config key of a bad owner/group).
import { chmod, chown, lstat, mkdir, unlink } from 'node:fs/promises';
import type { Server } from 'node:net';
import { dirname } from 'node:path';
import { resolveGroup, resolveIdentity } from '../os/identity.js';

export interface ListenAddress {
  readonly kind: 'unix' | 'tcp';
  /** Socket path (unix). */
  readonly path: string;
  readonly host: string;
  readonly port: number;
  /** As written in the config, for messages. */
  readonly spec: string;
}

export interface SocketPermissions {
  readonly mode: number;
  readonly owner?: string | undefined;
  readonly group?: string | undefined;
}

/** Listens; for a unix socket applies `perms` (naming `key` in errors, e.g. "lmtp.socket"). */
export async function listenOn(server: Server, l: ListenAddress, perms?: SocketPermissions, key = 'socket'): Promise<void> {
  if (l.kind === 'unix') {
    await mkdir(dirname(l.path), { recursive: true, mode: 0o755 });
    const st = await lstat(l.path).catch(() => undefined);
    if (st?.isSocket()) await unlink(l.path);
  }
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(new Error(`cannot listen on ${l.spec}: ${err.message}`));
    server.once('error', onError);
    const done = (): void => {
      server.off('error', onError);
      resolve();
    };
    if (l.kind === 'unix') {
      // The bind happens inside listen(), synchronously: the umask covers exactly that.
      const umask = process.umask(0o177);
      try {
        server.listen(l.path, done);
      } finally {
        process.umask(umask);
      }
    } else {
      server.listen(l.port, l.host, done);
    }
  });
  if (l.kind !== 'unix' || perms === undefined) return;
  await chmod(l.path, perms.mode);
  const owner = perms.owner !== undefined ? await resolveIdentity(perms.owner) : undefined;
  if (typeof owner === 'string') throw new Error(`${key}.owner: ${owner}`);
  const gid = perms.group !== undefined ? await resolveGroup(perms.group) : undefined;
  if (perms.group !== undefined && gid === undefined) throw new Error(`${key}.group: unknown group "${perms.group}"`);
  if (owner !== undefined || gid !== undefined) await chown(l.path, owner?.uid ?? -1, gid ?? -1);
}

/** The bound TCP port (0 for a unix socket): tests listen on port 0. */
export function boundPort(server: Server): number {
  const a = server.address();
  return typeof a === 'object' && a !== null ? a.port : 0;
}
