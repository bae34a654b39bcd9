// Which open descriptors of this process would survive an exec, read from
// /proc/self/fdinfo (Node has no fcntl). Every spawn of the master goes
// through shieldDescriptors (the pool's workers, getent in identity.ts), so no
// child receives the master's inheritable descriptors; a worker uses
// closeInheritableDescriptors to close whatever it inherited anyway before it
// runs user code.
//
// Why it is needed: lmdb's native code opens data.mdb read-write WITHOUT
// O_CLOEXEC (the table database and the policy database), so every child the
// master spawns inherits them; a user's pipe command could pwrite the uid
// table. Node's own descriptors and libuv's are all close-on-exec, so "lacks
// O_CLOEXEC" is exactly "was opened by native code that forgot it, or was
// inherited from whoever started us".
//
// Exports: parseFdinfoFlags(text) (pure), inheritableDescriptors(dir?),
// shieldDescriptors(stdio) for a spawn, closeInheritableDescriptors(keep).
// Linux only: without /proc they find nothing (inheritableDescriptors and
// closeInheritableDescriptors say so by returning undefined); they never
// throw, except shieldDescriptors when /dev/null cannot be opened.
import { closeSync, openSync, readFileSync, readdirSync } from 'node:fs';

/** O_CLOEXEC as /proc/PID/fdinfo's "flags:" field shows it (octal 02000000 on every Linux architecture but alpha, sparc, parisc). */
export const O_CLOEXEC = 0o2000000;

/** The open flags in an fdinfo file ("flags:\t02100002", octal), or undefined when there is no such line. */
export function parseFdinfoFlags(text: string): number | undefined {
  const m = /^flags:\s*([0-7]+)\s*$/m.exec(text);
  return m === null ? undefined : parseInt(m[1] as string, 8);
}

/**
 * Descriptors above 2 that lack O_CLOEXEC, ascending, read from `dir`
 * (default /proc/self/fdinfo). undefined when the directory cannot be read
 * (no /proc mounted).
 * The directory handle used to list it is close-on-exec, so it never
 * appears; a descriptor closed while we look is skipped.
 */
export function inheritableDescriptors(dir = '/proc/self/fdinfo'): number[] | undefined {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return undefined;
  }
  const found: number[] = [];
  for (const name of names) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd <= 2) continue;
    let flags: number | undefined;
    try {
      flags = parseFdinfoFlags(readFileSync(`${dir}/${name}`, 'utf8'));
    } catch {
      continue; // closed meanwhile
    }
    // A line we cannot read is treated as inheritable: closing too much is safe here, leaking is not.
    if (flags === undefined || (flags & O_CLOEXEC) === 0) found.push(fd);
  }
  return found.sort((a, b) => a - b);
}

/**
 * Closes every descriptor above 2 that lacks O_CLOEXEC, except those in
 * `keep`; returns the ones closed, or undefined when /proc/self/fdinfo could
 * not be read (the caller decides whether that is fatal).
 */
export function closeInheritableDescriptors(keep: readonly number[] = []): number[] | undefined {
  const open = inheritableDescriptors();
  if (open === undefined) return undefined;
  const closed: number[] = [];
  for (const fd of open) {
    if (keep.includes(fd)) continue;
    try {
      closeSync(fd);
      closed.push(fd);
    } catch {
      // EBADF: already gone
    }
  }
  return closed;
}

/** What a spawn's stdio array may hold at one index (a subset of Node's StdioOptions). */
export type StdioEntry = 'ignore' | 'inherit' | 'pipe' | 'ipc' | number;

/**
 * A spawn's stdio array that also covers every descriptor of this process
 * lacking O_CLOEXEC: each one the given entries do not already replace gets
 * /dev/null at its number, which libuv dup2()s over it in the child, so the
 * child never receives it ('ignore' above 2 does not: libuv leaves that
 * number alone). Call release() once spawn() has returned (it returns after
 * the exec) to close our /dev/null handle.
 */
export function shieldDescriptors(base: readonly StdioEntry[]): { stdio: StdioEntry[]; release: () => void } {
  const stdio = [...base];
  const replaced = (fd: number): boolean => fd < stdio.length && stdio[fd] !== 'ignore';
  const leaking = (inheritableDescriptors() ?? []).filter((fd) => !replaced(fd));
  if (leaking.length === 0) return { stdio, release: () => undefined };
  // Opened by Node, so close-on-exec itself: only its dup2()ed copies reach the child.
  const devNull = openSync('/dev/null', 'r');
  for (const fd of leaking) {
    while (stdio.length < fd) stdio.push('ignore');
    stdio[fd] = devNull;
  }
  return { stdio, release: () => closeSync(devNull) };
}
