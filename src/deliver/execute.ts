// Executes one planned destination in the worker (already running as the
// recipient's user): dispatches to the leaf for its kind and returns exactly
// one result. Leaves never call leaves. Only the kinds with a leaf come here
// (WorkerDestination): forward and list are the relay's, reject the planner's.
// Pipe options missing from LeafOptions take the defaults below. A copy's
// redelivery token (src/mail/redelivery.ts) reaches the maildir leaf only:
// an mbox append or a pipe's run leaves no name to look for, so those copies
// are written again when a queued attempt repeats (NOTES.md, "Redelivery").
import type { Destination } from '../classify/rules.js';
import { ok } from '../mail/status.js';
import type { Delivery } from './types.js';
import { deliverMaildir } from './maildir.js';
import { deliverMbox } from './mbox.js';
import type { MessageCopy } from './types.js';

/** The destinations a worker executes: the kinds that have a leaf. */
export type WorkerDestination = Extract<Destination, { kind: 'maildir' | 'mbox' | 'pipe' | 'discard' }>;

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

/** One copy's redelivery token, and whether to look for it before writing. */
export interface CopyRedelivery {
  readonly token: string;
  readonly check: boolean;
}

export async function executeDestination(copy: MessageCopy, d: WorkerDestination, o: LeafOptions, redelivery?: CopyRedelivery): Promise<Delivery> {
  switch (d.kind) {
    case 'maildir':
      return deliverMaildir(copy, {
        path: d.path, hostname: o.hostname, fsync: o.fsync,
        ...(d.folder !== undefined ? { folder: d.folder } : {}), ...(redelivery !== undefined ? { redelivery } : {}),
      });
    case 'mbox':
      return deliverMbox(copy, {
        path: d.path, fsync: o.fsync,
        lockAttempts: o.mboxLockAttempts, lockDelayMs: o.mboxLockDelayMs, staleLockMs: o.mboxStaleLockMs,
      });
    case 'discard':
      return { status: ok('Discarded by rule') };
    case 'pipe':
      // Loaded on first use: execa is most of a worker's memory, and most users have no pipe.
      return (await import('./pipe.js')).deliverPipe(copy, { argv: d.argv, timeoutMs: o.pipeTimeoutMs ?? PIPE_TIMEOUT_MS, unknownExit: o.pipeUnknownExit ?? 'temporary' });
  }
}
