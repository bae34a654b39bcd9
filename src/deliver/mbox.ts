// mbox leaf: appends one message to an mbox file the way Postfix local(8) does
// (mbox_open.c, mail_copy.c; ../shared/notes/reliability.md §1.2).
//
// Exports: deliverMbox(copy, options) → Promise<Delivery>; MboxOptions;
// fromLine(sender, date) and quoteFromLines(buf, atLineStart) (pure, for tests).
//
// Steps: open O_APPEND|O_NOFOLLOW|O_NONBLOCK (creating 0600, and any missing
// directory 0700: their entries are fsynced with the message), refuse anything
// but a regular file with one link; take the dotlock path.lock (O_EXCL, retried,
// stale ones removed; ours say "mailprocd pid=P boot=B pidns=N", so one left by
// a delivery of ours that was killed — same boot and pid namespace, pid gone —
// is removed at once); re-check that the path still names the file we opened;
// append "From sender date", the header, the body with mboxo ">From " quoting,
// a final LF if missing and one empty line; fsync. Only then 2.0.0.
//
// Failure contract: every I/O error becomes a Status via the errno table. On a
// failed write or fsync the file is truncated back to its size before the
// write (and fsynced) while the lock is still held, so readers never see half a
// message. A symlink, FIFO, device, directory or hard-linked mailbox is refused
// with nothing written (5.2.0); a mailbox owned by another uid than the
// worker's (the recipient's) is refused with 4.2.0 naming its owner, as
// Postfix's safe_open does; a lock still held after the attempts is 4.2.0.
// Kernel lock: fcntl through os-lock after the dotlock, see NOTES.md. Throws
// only for bad options.
import { constants, readFileSync, readlinkSync } from 'node:fs';
import { lstat, open, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute } from 'node:path';
import { lock as lockFile } from 'os-lock';
import { setTimeout as sleep } from 'node:timers/promises';
import { statusFromError } from '../mail/errno.js';
import { ok, status, type Status } from '../mail/status.js';
import { critical } from './critical.js';
import { ignoreErrors, isCode, makeDirectories, syncDirectories } from './fs-helpers.js';
import { writeFully, type Delivery, type MessageCopy } from './types.js';

export interface MboxOptions {
  /** Absolute path of the mbox file; created 0600 if missing (its directory is not). */
  readonly path: string;
  /** Tries at the dotlock before giving up with 4.2.0 (Postfix deliver_lock_attempts: 20). */
  readonly lockAttempts?: number;
  /** Pause between tries (Postfix deliver_lock_delay: 1 s). */
  readonly lockDelayMs?: number;
  /** A dotlock older than this is removed (Postfix stale_lock_time: 500 s). */
  readonly staleLockMs?: number;
  /** fsync after appending (default true). Only benchmarks turn it off. */
  readonly fsync?: boolean;
}

const { O_RDONLY, O_WRONLY, O_APPEND, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = constants;
// O_NONBLOCK: opening a FIFO must not wait for a reader; it is refused below.
const MBOX_FLAGS = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK;
const LOCK_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;

const LF = 0x0a;
const NEWLINE = Buffer.from('\n');
const GT = Buffer.from('>');
const FROM_ = Buffer.from('From ');
const NL_FROM_ = Buffer.from('\nFrom ');

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * "From sender Sat Nov 21 09:30:25 2026\n": the date in asctime(3) form, UTC.
 * The null sender is MAILER-DAEMON. Whitespace and control characters in the
 * sender become '_' so a reader's From_ parser still finds the date.
 */
export function fromLine(sender: string, date: Date): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what we replace
  const who = sender === '' ? 'MAILER-DAEMON' : sender.replace(/[\s\x00-\x1f\x7f]/g, '_');
  const two = (n: number): string => String(n).padStart(2, '0');
  const when =
    `${DAYS[date.getUTCDay()]} ${MONTHS[date.getUTCMonth()]} ${String(date.getUTCDate()).padStart(2, ' ')} ` +
    `${two(date.getUTCHours())}:${two(date.getUTCMinutes())}:${two(date.getUTCSeconds())} ${date.getUTCFullYear()}`;
  return `From ${who} ${when}\n`;
}

/**
 * mboxo quoting without copying: slices of `buf` with a ">" chunk before every
 * line that begins with "From " (">From " and "From" without a space are left
 * alone). `atLineStart` says whether buf[0] begins a line.
 */
export function quoteFromLines(buf: Buffer, atLineStart: boolean): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  if (atLineStart && buf.subarray(0, FROM_.length).equals(FROM_)) out.push(GT);
  for (let i = buf.indexOf(NL_FROM_); i !== -1; i = buf.indexOf(NL_FROM_, i + 1)) {
    out.push(buf.subarray(start, i + 1), GT);
    start = i + 1;
  }
  out.push(buf.subarray(start));
  return out;
}

function messageChunks(copy: MessageCopy): Buffer[] {
  const { header, body } = copy;
  const bodyAtLineStart = header.length === 0 || header[header.length - 1] === LF;
  const chunks = [Buffer.from(fromLine(copy.sender, copy.arrival)), ...quoteFromLines(header, true), ...quoteFromLines(body, bodyAtLineStart)];
  const last = body.length > 0 ? body[body.length - 1] : header.length > 0 ? header[header.length - 1] : LF;
  if (last !== LF) chunks.push(NEWLINE);
  chunks.push(NEWLINE);
  return chunks;
}

const refused = (path: string, why: string): Status => status('5.2.0', `refusing to deliver to mailbox ${path}: ${why}`);

interface OpenedMailbox {
  readonly fh: FileHandle;
  /**
   * Directories that gained an entry for this delivery: the new mailbox's,
   * and the parent of each directory made for it. Without an fsync of them a
   * crash can take the new mailbox, and the message fsynced into it, away.
   */
  readonly changedDirs: readonly string[];
}

/** Opens the mailbox for appending, or says why not. */
async function openMailbox(path: string): Promise<OpenedMailbox | Status> {
  let fh: FileHandle;
  const changedDirs: string[] = [];
  try {
    fh = await open(path, MBOX_FLAGS).catch(async (err: unknown) => {
      if (!isCode(err, 'ENOENT')) throw err;
      changedDirs.push(dirname(path));
      return open(path, MBOX_FLAGS | O_CREAT, 0o600).catch(async (again: unknown) => {
        // A per-user directory such as ~/mail may not exist yet: make it (0700, as the user) once.
        if (!isCode(again, 'ENOENT')) throw again;
        for (const made of await makeDirectories(dirname(path))) changedDirs.push(dirname(made));
        return open(path, MBOX_FLAGS | O_CREAT, 0o600);
      });
    });
  } catch (err) {
    // A FIFO or socket without a reader says ENXIO, a directory EISDIR: say what it is.
    if (isCode(err, 'ENXIO') || isCode(err, 'EISDIR')) {
      const st = await lstat(path).catch(() => undefined);
      if (st !== undefined && !st.isFile()) return refused(path, 'not a regular file');
    }
    return statusFromError(err, `cannot open mailbox ${path}`);
  }
  try {
    const st = await fh.stat();
    const why = !st.isFile() ? 'not a regular file' : st.nlink !== 1 ? `it has ${st.nlink} hard links` : undefined;
    const self = process.geteuid?.();
    if (why === undefined && (self === undefined || st.uid === self)) return { fh, changedDirs };
    await ignoreErrors(fh.close());
    if (why !== undefined) return refused(path, why);
    // Postfix's safe_open: "not owned by recipient". Temporary: the owner or the admin fixes it.
    return status('4.2.0', `refusing to deliver to mailbox ${path}: it is owned by uid ${st.uid}, not by the recipient (uid ${self})`);
  } catch (err) {
    await ignoreErrors(fh.close());
    return statusFromError(err, `cannot stat mailbox ${path}`);
  }
}

/** What our dotlocks say: who holds it, on which boot, in which pid namespace. */
interface LockOwner {
  readonly pid: number;
  readonly boot: string;
  readonly pidns: string;
}

const LOCK_CONTENT_RE = /^mailprocd pid=(\d+) boot=([0-9a-f-]{36}) pidns=(\d+)\n$/;
/** More than any lock of ours; a bigger file is not ours. */
const LOCK_READ_LIMIT = 128;

let self: LockOwner | null | undefined;

/**
 * This process as a lock owner, or null when the boot id or the pid
 * namespace cannot be read (no /proc): then our locks are written empty and
 * only the stale time breaks them, as another program's.
 */
function selfAsOwner(): LockOwner | null {
  if (self === undefined) {
    try {
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      const pidns = /\[(\d+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1];
      self = pidns !== undefined && /^[0-9a-f-]{36}$/.test(boot) ? { pid: process.pid, boot, pidns } : null;
    } catch {
      self = null;
    }
  }
  return self;
}

function lockContent(o: LockOwner): string {
  return `mailprocd pid=${o.pid} boot=${o.boot} pidns=${o.pidns}\n`;
}

/** The owner a lock file of ours names, or undefined for anything else (another program's lock, a half-written one). */
function parseLockContent(text: string): LockOwner | undefined {
  const m = LOCK_CONTENT_RE.exec(text);
  return m === null ? undefined : { pid: Number(m[1]), boot: m[2] as string, pidns: m[3] as string };
}

/** kill(pid, 0): ESRCH means gone; EPERM means it exists (as another user). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return !isCode(err, 'ESRCH');
  }
}

/** Appends the message at `size`; on any failure truncates back to `size`. `syncDirs` undefined: no fsync. */
async function append(fh: FileHandle, copy: MessageCopy, path: string, size: number, syncDirs: readonly string[] | undefined): Promise<Status> {
  try {
    await writeFully(fh, messageChunks(copy));
    if (syncDirs !== undefined) {
      await fh.sync();
      await syncDirectories(syncDirs);
    }
  } catch (err) {
    // Before the lock goes: a reader must never see the partial message.
    const failure = statusFromError(err, `cannot append to mailbox ${path}`);
    try {
      await fh.truncate(size);
      await fh.sync();
    } catch (undo) {
      return status(failure.code, `${failure.text}; truncating it back to ${size} bytes also failed: ${statusFromError(undo, 'truncate').text}`, failure.reply);
    }
    return failure;
  }
  return ok(`delivered to mailbox ${path}`);
}

/** Creates the lock file with our name in it; a failed write leaves an empty lock, which is still a lock. */
async function createLock(lockPath: string): Promise<void> {
  const fh = await open(lockPath, LOCK_FLAGS, 0o600);
  const me = selfAsOwner();
  if (me !== null) await ignoreErrors(fh.writeFile(lockContent(me)));
  await ignoreErrors(fh.close());
}

interface ExistingLock {
  readonly mtimeMs: number;
  readonly ino: number;
  readonly owner?: LockOwner;
}

/** Looks at the lock someone holds; undefined when it is gone already. */
async function inspectLock(lockPath: string): Promise<ExistingLock | undefined> {
  let fh: FileHandle;
  try {
    // O_NONBLOCK: a FIFO planted as the lock must not hang us.
    fh = await open(lockPath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (err) {
    if (isCode(err, 'ENOENT')) return undefined;
    // Not readable (another user's 0600 lock, a symlink): only its age counts.
    const st = await lstat(lockPath).catch((e: unknown) => {
      if (isCode(e, 'ENOENT')) return undefined;
      throw e;
    });
    return st === undefined ? undefined : { mtimeMs: st.mtimeMs, ino: st.ino };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > LOCK_READ_LIMIT) return { mtimeMs: st.mtimeMs, ino: st.ino };
    const buf = Buffer.alloc(LOCK_READ_LIMIT);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const owner = parseLockContent(buf.subarray(0, bytesRead).toString('latin1'));
    return { mtimeMs: st.mtimeMs, ino: st.ino, ...(owner !== undefined ? { owner } : {}) };
  } finally {
    await ignoreErrors(fh.close());
  }
}

/**
 * A lock is broken when one of our deliveries on this boot and in this pid
 * namespace wrote it and its process is gone (a worker killed while it held
 * the lock), or when it is older than the stale time (anybody's, as Postfix).
 */
function isBreakable(lock: ExistingLock, staleMs: number): boolean {
  if (Date.now() - lock.mtimeMs > staleMs) return true;
  const me = selfAsOwner();
  const o = lock.owner;
  return me !== null && o !== undefined && o.boot === me.boot && o.pidns === me.pidns && o.pid !== me.pid && !isAlive(o.pid);
}

/** Takes path.lock; undefined on success, else why not. */
async function takeDotlock(lockPath: string, path: string, attempts: number, delayMs: number, staleMs: number): Promise<Status | undefined> {
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      await createLock(lockPath);
      return undefined;
    } catch (err) {
      if (!isCode(err, 'EEXIST')) return statusFromError(err, `cannot create lock file ${lockPath}`);
    }
    let lock: ExistingLock | undefined;
    try {
      lock = await inspectLock(lockPath);
    } catch (err) {
      return statusFromError(err, `cannot stat lock file ${lockPath}`);
    }
    if (lock !== undefined && isBreakable(lock, staleMs)) {
      // Only the lock we looked at: one a concurrent deliverer put there meanwhile is not ours to remove.
      const now = await lstat(lockPath).catch(() => undefined);
      if (now?.ino === lock.ino) await ignoreErrors(unlink(lockPath));
      continue;
    }
    if (lock !== undefined && attempt < attempts) await sleep(delayMs);
  }
  return status('4.2.0', `mailbox ${path} is locked: ${lockPath} still exists after ${attempts} attempts`);
}

/**
 * An fcntl write lock on the whole file, as Debian's Postfix takes after the
 * dotlock (mailbox_delivery_lock = fcntl, dotlock): excludes readers and
 * writers that lock only with fcntl (Dovecot, mutt). Never blocking: it is
 * tried again like the dotlock. Released by the close() that ends the delivery.
 */
async function takeKernelLock(fh: FileHandle, path: string, attempts: number, delayMs: number): Promise<Status | undefined> {
  for (let i = 1; ; i++) {
    try {
      await lockFile(fh.fd, { exclusive: true, immediate: true });
      return undefined;
    } catch (err) {
      if (!isCode(err, 'EAGAIN') && !isCode(err, 'EACCES')) return statusFromError(err, `cannot lock mailbox ${path}`);
      if (i >= attempts) return status('4.2.0', `mailbox ${path} is locked by another program (fcntl) after ${attempts} attempts`);
      await sleep(delayMs);
    }
  }
}

/** After locking: the path must still name the file we opened, with one link. */
async function checkUnchanged(fh: FileHandle, path: string): Promise<number | Status> {
  try {
    const [held, named] = await Promise.all([fh.stat(), lstat(path)]);
    if (held.dev === named.dev && held.ino === named.ino && named.isFile() && held.nlink === 1) return held.size;
  } catch (err) {
    if (!isCode(err, 'ENOENT')) return statusFromError(err, `cannot stat mailbox ${path}`);
  }
  // GNU pop3d and friends replace the mailbox by rename; writing now would lose the message.
  return status('4.2.0', `mailbox ${path} changed unexpectedly while being locked`);
}

async function appendLocked(copy: MessageCopy, path: string, o: Required<MboxOptions>): Promise<Status> {
  const opened = await openMailbox(path);
  if (!('fh' in opened)) return opened;
  const { fh, changedDirs } = opened;
  const lockPath = `${path}.lock`;
  let locked = false;
  try {
    const lockFailure = await takeDotlock(lockPath, path, o.lockAttempts, o.lockDelayMs, o.staleLockMs);
    if (lockFailure !== undefined) return lockFailure;
    locked = true;
    const kernelFailure = await takeKernelLock(fh, path, o.lockAttempts, o.lockDelayMs);
    if (kernelFailure !== undefined) return kernelFailure;
    const size = await checkUnchanged(fh, path);
    if (typeof size !== 'number') return size;
    // From the first byte to the fsync (or the truncate back), the worker does not exit (critical.ts).
    return await critical(() => append(fh, copy, path, size, o.fsync ? changedDirs : undefined));
  } finally {
    // close() before removing the dotlock; a close error after a successful
    // fsync loses nothing on a local file system, so it is not reported.
    await ignoreErrors(fh.close());
    if (locked) await ignoreErrors(unlink(lockPath));
  }
}

// Deliveries in this process to the same mbox wait for each other here instead
// of polling the dotlock once a second.
const queues = new Map<string, Promise<unknown>>();

export async function deliverMbox(copy: MessageCopy, options: MboxOptions): Promise<Delivery> {
  const { path } = options;
  if (!isAbsolute(path)) throw new Error(`bug: mbox path must be absolute: ${JSON.stringify(path)}`);
  if (Number.isNaN(copy.arrival.getTime())) throw new Error('bug: message arrival time is not a valid Date');
  const o: Required<MboxOptions> = {
    path,
    lockAttempts: options.lockAttempts ?? 20,
    lockDelayMs: options.lockDelayMs ?? 1000,
    staleLockMs: options.staleLockMs ?? 500_000,
    fsync: options.fsync ?? true,
  };
  if (!Number.isInteger(o.lockAttempts) || o.lockAttempts < 1) throw new Error(`bug: lockAttempts must be a positive integer, not ${o.lockAttempts}`);
  if (!(o.lockDelayMs >= 0) || !(o.staleLockMs >= 0)) throw new Error('bug: lock delays must be non-negative');

  const before = queues.get(path) ?? Promise.resolve();
  const mine = before.then(() => appendLocked(copy, path, o));
  const settled = mine.catch(() => undefined);
  queues.set(path, settled);
  try {
    return { status: await mine, path };
  } finally {
    if (queues.get(path) === settled) queues.delete(path);
  }
}
