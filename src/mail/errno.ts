// The one errno → Status table. Every leaf that touches the file system turns a
// failed system call into a Status here, so "is this worth retrying?" is decided
// in exactly one place (../shared/STYLE.md habit 1, ../shared/notes/reliability.md §0.2).
//
// Exports: statusFromError(err, what) → Status; errnoError(code, path) for a
// refusal a leaf detects itself (a symlinked maildir/new is ELOOP, like
// O_NOFOLLOW would say) so the table classifies it too; ERRNO_TABLE (read-only,
// for docs and tests). Never throws: an error it cannot classify (no errno, or an
// errno not in the table) becomes 4.3.0 — "unknown means temporary", bounded by
// the queue lifetime.
//
// Choices follow Postfix's mbox_dsn()/local(8), except that permission problems
// are temporary here: admins create maildirs and fix modes after the first
// deferral, and a deferral costs a retry where a bounce loses the message.
import { constants } from 'node:os';
import { getSystemErrorMap } from 'node:util';
import { status, type EnhancedCode, type Status } from './status.js';

interface Row {
  readonly code: EnhancedCode;
  /** SMTP reply number when the class default (451/550) is not right. */
  readonly reply?: number;
  /** Replaces the system's message where that one misleads (ELOOP) or is missing (EDQUOT). */
  readonly text?: string;
  /** Append "(uid N, gid G)" so the log says whose permissions were lacking. */
  readonly who?: true;
}

export const ERRNO_TABLE: Readonly<Record<string, Row>> = Object.freeze({
  // Transient by nature: a lock or a server that will answer later.
  EAGAIN: { code: '4.2.0' },
  EWOULDBLOCK: { code: '4.2.0' },
  EBUSY: { code: '4.2.0' },
  EINTR: { code: '4.2.0' },
  ESTALE: { code: '4.2.0', text: 'Stale file handle' },
  // The file system is full: everybody's problem, it will be freed (RFC 3463 X.3.1).
  ENOSPC: { code: '4.3.1', reply: 452, text: 'No space left on device (mail system full)' },
  // This mailbox is full: Postfix local(8) bounces, so do we (RFC 3463 X.2.2).
  EDQUOT: { code: '5.2.2', reply: 552, text: 'Disk quota exceeded (mailbox full)' },
  EFBIG: { code: '5.2.2', reply: 552, text: 'File too large (mailbox full)' },
  // Permissions: temporary, see the header; the text names the uid to fix.
  EACCES: { code: '4.2.0', text: 'Permission denied', who: true },
  EPERM: { code: '4.2.0', text: 'Operation not permitted', who: true },
  EROFS: { code: '4.3.0', text: 'Read-only file system' },
  // A missing or wrong parent directory: configuration or a mount not there yet.
  ENOENT: { code: '4.3.0', text: 'No such file or directory' },
  ENOTDIR: { code: '4.3.0', text: 'Not a directory' },
  // A failing disk or a lost NFS server: temporary, as Postfix defers it.
  EIO: { code: '4.3.0', text: 'Input/output error' },
  // O_NOFOLLOW on a symlink, or a symlink where a maildir directory must be:
  // refused for good, as Postfix's safe_open() does (5.2.0).
  ELOOP: { code: '5.2.0', text: 'Is a symbolic link (refused)' },
});

const UNKNOWN: Row = { code: '4.3.0' };

// errno number → names, for errors libuv cannot name (EDQUOT and ESTALE arrive
// as "Unknown system error -122").
const NAMES_BY_NUMBER = new Map<number, string[]>();
for (const [name, n] of Object.entries(constants.errno)) {
  const names = NAMES_BY_NUMBER.get(n) ?? [];
  names.push(name);
  NAMES_BY_NUMBER.set(n, names);
}
const SYSTEM_MESSAGES = new Map<string, string>();
for (const [name, message] of getSystemErrorMap().values()) SYSTEM_MESSAGES.set(name, message);

function errnoName(err: { code?: unknown; errno?: unknown }): string | undefined {
  if (typeof err.code === 'string' && /^E[A-Z0-9]+$/.test(err.code)) return err.code;
  if (typeof err.errno === 'number') {
    const names = NAMES_BY_NUMBER.get(Math.abs(err.errno));
    return names?.find((n) => n in ERRNO_TABLE) ?? names?.[0];
  }
  return undefined;
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function whoText(): string {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  return uid === undefined ? '' : ` (not writable by uid ${uid}, gid ${gid ?? '?'})`;
}

/**
 * Maps a failed system call to a Status. `what` names the operation and the
 * path ("cannot write maildir file /home/a/Maildir/tmp/…"); the text becomes
 * "<what>: <reason>".
 */
export function statusFromError(err: unknown, what: string): Status {
  if (typeof err !== 'object' || err === null) return status(UNKNOWN.code, `${what}: ${String(err)}`);
  const e = err as { code?: unknown; errno?: unknown; message?: unknown };
  const name = errnoName(e);
  const row = (name !== undefined ? ERRNO_TABLE[name] : undefined) ?? UNKNOWN;
  let reason = row.text;
  if (reason === undefined && name !== undefined) {
    const sys = SYSTEM_MESSAGES.get(name);
    if (sys !== undefined) reason = capitalise(sys);
  }
  if (reason === undefined) reason = typeof e.message === 'string' && e.message !== '' ? e.message : 'unknown error';
  if (row.who === true) reason += whoText();
  const tag = name !== undefined && !reason.includes(name) ? ` [${name}]` : '';
  return status(row.code, `${what}: ${reason}${tag}`, row.reply);
}

/** An Error shaped like a failed system call, for conditions a leaf detects itself. */
export function errnoError(code: string, path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${path}`), { code, path });
}
