// The client side of the daemon's control protocol (src/control/server.ts):
// one JSON request line on a unix socket, one JSON reply line. Used by
// status and queue (the admin socket, <run>/control.sock) and by policy (the
// caller's own socket). Rejects on a connection error, on a reply that is not
// JSON, or when no reply comes within 30 s; callers turn that into exit 69
// (or 77 for a socket that is not theirs). askUserSocket and askAdminSocket
// say why on stderr and return the exit code.
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Config } from '../../config/index.js';

/** One request to the daemon's control socket, one reply. */
export function askDaemon(path: string, request: Record<string, unknown>, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`no answer from the daemon within ${timeoutMs / 1000} s`)));
    sock.on('connect', () => sock.write(`${JSON.stringify(request)}\n`));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        sock.end();
        resolve(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      }
    });
    sock.on('error', reject);
  });
}

/**
 * One request to the administrator's socket, <run>/control.sock. Returns the
 * daemon's successful reply, or the exit code after saying why on stderr:
 * 69 when the daemon cannot be reached, 1 when it refused.
 */
export async function askAdminSocket(config: Config, request: Record<string, unknown>, timeoutMs?: number): Promise<Record<string, unknown> | number> {
  const path = join(config.paths.run, 'control.sock');
  let r: Record<string, unknown>;
  try {
    r = await askDaemon(path, request, timeoutMs);
  } catch (err) {
    process.stderr.write(`mailproc: cannot reach mailprocd at ${path}: ${(err as Error).message}\n`);
    return 69;
  }
  if (r.ok !== true) {
    process.stderr.write(`mailproc: ${String(r.error)}\n`);
    return 1;
  }
  return r;
}

/**
 * One request over a mailbox owner's own socket (<run>/users/<uid>/control.sock,
 * or the one given): the daemon's successful reply, or the exit code after
 * saying why on stderr — 69 no daemon or no socket, 77 not the caller's
 * socket, 1 the daemon refused.
 */
export async function askUserSocket(path: string, request: Record<string, unknown>, timeoutMs?: number): Promise<Record<string, unknown> | number> {
  let r: Record<string, unknown>;
  try {
    r = await askDaemon(path, request, timeoutMs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT'
      ? 'no socket there: the daemon is not running, or its uid table gives you no address (only mailbox owners have a socket)'
      : code === 'ECONNREFUSED' ? 'nothing answers: the daemon is not running'
        : code === 'EACCES' ? 'permission denied: it is not your socket (each user has their own, <run>/users/<uid>/control.sock)'
          : (err as Error).message;
    process.stderr.write(`mailproc: cannot reach mailprocd at ${path}: ${why}\n`);
    return code === 'EACCES' ? 77 : 69;
  }
  if (r.ok !== true) {
    process.stderr.write(`mailproc: ${String(r.error)}\n`);
    return 1;
  }
  return r;
}
