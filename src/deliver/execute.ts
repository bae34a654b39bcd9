// Executes one planned destination in the worker (already running as the
// recipient's user): dispatches to the leaf for its kind and returns exactly
// one result. Leaves never call leaves. Kinds that have no leaf yet (forward,
// list) defer with 4.3.5 rather than bounce: it is a configuration the admin
// can still fix, and unknown means temporary. Pipe options missing from
// LeafOptions take the defaults below.
import type { Destination } from '../classify/rules.js';
import { ok, status } from '../mail/status.js';
import type { Delivery } from './types.js';
import { deliverMaildir } from './maildir.js';
import { deliverMbox } from './mbox.js';
import type { MessageCopy } from './types.js';

/** What the master tells the leaves, per request, from the configuration. */
export interface LeafOptions {
  readonly hostname: string;
  readonly fsync: boolean;
  readonly mboxLockAttempts: number;
  readonly mboxLockDelayMs: number;
  readonly mboxStaleLockMs: number;
  /** Pipe deliveries: wall-clock limit per command; default PIPE_TIMEOUT_MS (1000 s, Postfix command_time_limit). */
  readonly pipeTimeoutMs?: number;
  /** Pipe deliveries: an exit code outside the sysexits table defers ('temporary', default) or bounces ('permanent', Postfix). */
  readonly pipeUnknownExit?: 'temporary' | 'permanent';
}

/** Default pipe time limit: Postfix's command_time_limit, 1000 s. */
export const PIPE_TIMEOUT_MS = 1_000_000;

export async function executeDestination(copy: MessageCopy, d: Destination, o: LeafOptions): Promise<Delivery> {
  switch (d.kind) {
    case 'maildir':
      return deliverMaildir(copy, { path: d.path, hostname: o.hostname, fsync: o.fsync, ...(d.folder !== undefined ? { folder: d.folder } : {}) });
    case 'mbox':
      return deliverMbox(copy, {
        path: d.path, fsync: o.fsync,
        lockAttempts: o.mboxLockAttempts, lockDelayMs: o.mboxLockDelayMs, staleLockMs: o.mboxStaleLockMs,
      });
    case 'discard':
      return { status: ok('Discarded by rule') };
    case 'reject':
      // The planner turns rejects into refusals; reaching here is a bug.
      throw new Error('bug: reject destination reached a worker');
    case 'pipe':
      // Loaded on first use: execa is most of a worker's memory, and most users have no pipe.
      return (await import('./pipe.js')).deliverPipe(copy, { argv: d.argv, timeoutMs: o.pipeTimeoutMs ?? PIPE_TIMEOUT_MS, unknownExit: o.pipeUnknownExit ?? 'temporary' });
    case 'forward':
    case 'list':
      return { status: status('4.3.5', `destination kind "${d.kind}" is not supported by this version`) };
  }
}
