// Listen addresses and unix-socket options, the one reading of them for every
// listener (LMTP, SMTP, policy; later milter and metrics): "unix:PATH"
// (relative to the daemon's working directory) or "HOST:PORT" /
// "[IPv6]:PORT". Validation problems are zod issues whose path names the key.
//
// Exports: listenAddress, socketOptions, octalMode (zod), Listen, parseListen.
import { resolve } from 'node:path';
import { z } from 'zod';

/** "unix:/path", "unix:./relative", "127.0.0.1:2424", "[::1]:24". */
export const listenAddress = z.string().refine((s) => /^unix:.+$/.test(s) || /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(s), {
  message: 'expected "unix:PATH" or "HOST:PORT"',
  abort: true,
}).refine((s) => s.startsWith('unix:') || Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535, {
  error: (issue) => `port out of range in ${JSON.stringify(issue.input)}`,
});

export const octalMode = z.union([z.string().regex(/^0?[0-7]{3,4}$/, 'expected an octal mode like "0660"'), z.number().int()])
  .transform((v) => (typeof v === 'number' ? v : parseInt(v, 8)));

/**
 * A unix socket's mode, owner and group. Owner and group only by default
 * (0660): whoever can connect to the LMTP socket hands mail to any mailbox.
 * Postfix's lmtp client and smtpd run as "postfix": set group: postfix.
 */
export const socketOptions = z.object({
  mode: octalMode.default(0o660),
  owner: z.string().optional(),
  group: z.string().optional(),
}).strict();

export interface Listen {
  readonly kind: 'unix' | 'tcp';
  /** Absolute socket path for unix; "" for tcp. */
  readonly path: string;
  /** Host for tcp; "" for unix. */
  readonly host: string;
  readonly port: number;
  /** As written, for logs. */
  readonly spec: string;
}

/** A validated listen address as a Listen; a relative unix path is resolved against `base`. */
export function parseListen(spec: string, base: string): Listen {
  if (spec.startsWith('unix:')) return { kind: 'unix', path: resolve(base, spec.slice(5)), host: '', port: 0, spec };
  const cut = spec.lastIndexOf(':');
  const host = spec.slice(0, cut).replace(/^\[(.*)\]$/, '$1');
  return { kind: 'tcp', path: '', host, port: Number(spec.slice(cut + 1)), spec };
}
