// The `state:` section: where the policy state that several MX hosts must
// share lives (greylist triplets, the auto-whitelist, rate counters, user
// policies). `backend: lmdb` (the default) keeps all of it in the daemon's one
// writable LMDB environment, as before; `postgresql://…` or `redis://…` (also
// `postgres://`, `rediss://`, `unix://` for Redis over a socket) puts it on an
// engine every node connects to. Everything else the daemon writes (rosters,
// user rules, vacation and duplicate records, probes) stays in local LMDB.
//
//   backend         lmdb | postgresql://[user[:password]@]host[:port]/db[?host=/run/postgresql]
//                   | redis://[:password@]host[:port][/db] | unix:///path/redis.sock
//   timeout         the deadline of one engine round trip (default 250ms): past
//                   it the plugin answers its failure action (on_error)
//   retry_interval  while the engine is unreachable, how often it is tried again (default 1s)
//   pool            PostgreSQL connections per node (default 2): the request path keeps at
//                   most this many statements in flight, and batches the calls that wait
//   prefix          Redis key prefix, so several sites can share one Redis (default "mailproc:")
//
// Exports: stateConfigSchema, StateConfig, StateBackend, redactUrl. Pure;
// problems are zod issues whose path names the key (state.backend …).
//
// A password in the URL is never printed: redactUrl is what --check-config
// and every log line show (PGPASSWORD / ~/.pgpass or a Redis ACL file keep
// it out of the config file altogether).
import { z } from 'zod';
import { duration } from './units.js';

export type StateBackend =
  | { readonly kind: 'lmdb' }
  | { readonly kind: 'postgresql'; readonly url: string }
  | { readonly kind: 'redis'; readonly url: string };

/** The URL with any password replaced by "***" (and nothing else changed), for logs and --check-config. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*)@/i, (_m, scheme: string, auth: string) => {
    const colon = auth.indexOf(':');
    return colon < 0 ? `${scheme}${auth}@` : `${scheme}${auth.slice(0, colon)}:***@`;
  });
}

const backend = z.string().trim().min(1).transform((s, ctx): StateBackend => {
  if (s === 'lmdb') return { kind: 'lmdb' };
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    ctx.addIssue({ code: 'custom', message: `expected "lmdb", "postgresql://…" or "redis://…", got ${JSON.stringify(redactUrl(s))}` });
    return z.NEVER;
  }
  switch (u.protocol) {
    case 'postgresql:': case 'postgres:':
      return { kind: 'postgresql', url: s };
    case 'redis:': case 'rediss:': case 'unix:':
      return { kind: 'redis', url: s };
    default:
      ctx.addIssue({ code: 'custom', message: `unknown state engine "${u.protocol.replace(/:$/, '')}": expected "lmdb", "postgresql://…" or "redis://…"` });
      return z.NEVER;
  }
});

const positive = duration.refine((ms) => ms > 0, { message: 'must be more than 0' });

export const stateConfigSchema = z.object({
  backend: backend.default({ kind: 'lmdb' }),
  timeout: positive.default(250),
  retry_interval: positive.default(1000),
  pool: z.number().int().min(1).max(100).default(2),
  prefix: z.string().max(64).regex(/^[^\s]*$/, 'must not contain spaces').default('mailproc:'),
}).strict().default({ backend: { kind: 'lmdb' }, timeout: 250, retry_interval: 1000, pool: 2, prefix: 'mailproc:' });

export type StateConfig = z.output<typeof stateConfigSchema>;
export type StateConfigInput = z.input<typeof stateConfigSchema>;
