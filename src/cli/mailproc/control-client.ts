// The client side of the daemon's control protocol (src/control/server.ts):
// one JSON request line on a unix socket, one JSON reply line. Used by
// status and queue (the admin socket, <run>/control.sock) and by policy (the
// caller's own socket). Rejects on a connection error, on a reply that is not
// JSON, or when no reply comes within 30 s; callers turn that into exit 69
// (or 77 for a socket that is not theirs).
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Config } from '../../config/index.js';

/** One request to the daemon's control socket, one reply. */
export function askDaemon(path: string, request: Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(30_000, () => sock.destroy(new Error('no answer from the daemon within 30 s')));
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
export async function askAdminSocket(config: Config, request: Record<string, unknown>): Promise<Record<string, unknown> | number> {
  const path = join(config.paths.run, 'control.sock');
  let r: Record<string, unknown>;
  try {
    r = await askDaemon(path, request);
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
