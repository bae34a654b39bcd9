// One daemon per state directory, the way Postfix's master holds
// data_directory/master.lock: the file `mailprocd.lock` in paths.state, held
// with an exclusive fcntl lock (os-lock) for the daemon's whole life, with the
// holder's pid in it as text ("1234\n"). startDaemon takes it before anything
// else touches the state: before a table is compiled and before any socket is
// removed or bound (a second instance would otherwise unlink the first one's
// unix sockets and take their traffic).
//
// Exports: lockInstance(stateDir) → Promise<InstanceLock | InstanceBusy>;
// describeBusy(busy) (the one-line refusal); LOCK_FILE.
//
// Failure contract: a lock held by another process is an answer, not an error
// (InstanceBusy, with the holder's pid when it can be found); any other trouble
// (the directory or the file cannot be created or opened) throws with the path.
//
// Why it is right after a crash: the kernel lock is the truth, released by the
// kernel however the holder ends (kill -9 included), so a stale file never
// blocks a start; the pid in the file only names the holder in the message.
// os-lock cannot ask the kernel who holds a lock (it has no F_GETLK), so the
// pid is read from /proc/locks (Linux; matched by device and inode), else from
// the file.
//
// fcntl caveats, and why they do not bite: a process loses its lock when it
// closes ANY descriptor of the file, so nothing else opens it, and a second
// attempt from the same process (which the kernel would grant: the locks are
// per process) is refused here before it opens the file. The lock is not
// inherited by children, and the descriptor is close-on-exec (libuv opens
// with O_CLOEXEC), so no worker or pipe command holds it.
import { constants } from 'node:fs';
import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { lock, unlock } from 'os-lock';

export const LOCK_FILE = 'mailprocd.lock';

export interface InstanceLock {
  readonly kind: 'held';
  readonly path: string;
  /** Unlocks and closes; the file stays (removing it would let a third instance lock a new file while a second holds the old one). */
  release(): Promise<void>;
}

export interface InstanceBusy {
  readonly kind: 'busy';
  readonly stateDir: string;
  readonly path: string;
  /** The holder's pid, undefined when neither the file nor /proc/locks names it. */
  readonly pid: number | undefined;
}

/** Paths this process holds: fcntl would grant them again, and a second open+close would drop the first lock. */
const heldHere = new Set<string>();

const BUSY_CODES = new Set(['EAGAIN', 'EACCES', 'EBUSY']);

export async function lockInstance(stateDir: string): Promise<InstanceLock | InstanceBusy> {
  const dir = resolve(stateDir);
  const path = join(dir, LOCK_FILE);
  if (heldHere.has(path)) return { kind: 'busy', stateDir: dir, path, pid: process.pid };
  // Claimed before the first await: a concurrent call in this process is refused above.
  heldHere.add(path);
  try {
    return await takeLock(dir, path);
  } catch (err) {
    heldHere.delete(path);
    throw err;
  }
}

async function takeLock(dir: string, path: string): Promise<InstanceLock | InstanceBusy> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o644);
  } catch (err) {
    throw new Error(`cannot open ${path}: ${(err as Error).message}`);
  }
  try {
    await lock(fh.fd, { exclusive: true, immediate: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    const inode = await fh.stat().catch(() => undefined);
    await fh.close();
    if (!BUSY_CODES.has(code)) throw new Error(`cannot lock ${path}: ${(err as Error).message}`);
    heldHere.delete(path);
    // The kernel's answer first: the file may still name the previous holder for a moment.
    const pid = (inode ? await pidFromProcLocks(inode.dev, inode.ino) : undefined) ?? (await pidFromFile(path));
    return { kind: 'busy', stateDir: dir, path, pid };
  }
  try {
    await fh.truncate(0);
    await fh.write(`${process.pid}\n`, 0);
  } catch (err) {
    await fh.close();
    throw new Error(`cannot write ${path}: ${(err as Error).message}`);
  }
  let released = false;
  return {
    kind: 'held',
    path,
    async release() {
      if (released) return;
      released = true;
      await unlock(fh.fd).catch(() => undefined);
      await fh.close();
      heldHere.delete(path);
    },
  };
}

/** "cannot start: ..." line of the daemon when another instance holds the state directory. */
export function describeBusy(b: InstanceBusy): string {
  const who = b.pid !== undefined ? `mailprocd pid ${b.pid}` : 'another process (pid unknown)';
  return `state directory ${b.stateDir} is in use by ${who} (lock ${b.path}); one mailprocd per state directory`;
}

async function pidFromFile(path: string): Promise<number | undefined> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const m = /^(\d+)\n?$/.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * /proc/locks lines look like "1: POSIX  ADVISORY  WRITE 16604 fe:00:2146353 0 EOF":
 * the pid, then the device as hex major:minor and the inode.
 */
async function pidFromProcLocks(dev: number, ino: number): Promise<number | undefined> {
  const text = await readFile('/proc/locks', 'utf8').catch(() => '');
  // Linux dev_t: major in bits 8–19 and 32+, minor in bits 0–7 and 20+.
  const major = Math.floor(dev / 256) % 4096 + Math.floor(dev / 2 ** 32) * 4096;
  const minor = (dev % 256) + (Math.floor(dev / 2 ** 20) % 4096) * 256;
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    // A blocked waiter's line starts "1: ->" and shifts the fields; only holders count.
    if (f[1] !== 'POSIX' && f[1] !== 'OFDLCK') continue;
    const [maj, min, inode] = (f[5] ?? '').split(':');
    if (inode !== String(ino) || parseInt(maj ?? '', 16) !== major || parseInt(min ?? '', 16) !== minor) continue;
    const pid = Number(f[4]);
    if (Number.isInteger(pid) && pid > 0) return pid;
  }
  return undefined;
}
