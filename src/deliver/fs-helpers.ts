// Small file-system helpers shared by the delivery leaves (run in the worker,
// as the user). Throw the underlying errno error; the leaves map it to a Status.
import { mkdir, open } from 'node:fs/promises';
import { constants } from 'node:fs';
import { dirname } from 'node:path';

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

export function isCode(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}

export async function ignoreErrors(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch {
    // best-effort cleanup: the original error is the one reported
  }
}

/** mkdir 0700; true if made, false if it was there already. */
export async function makeDirectory(path: string): Promise<boolean> {
  try {
    await mkdir(path, { mode: 0o700 });
    return true;
  } catch (err) {
    if (isCode(err, 'EEXIST')) return false;
    throw err;
  }
}

/**
 * mkdir -p with 0700, returning the directories made. Not mkdir's own
 * `recursive`: Node's loops forever when a parent's mkdir says ENOENT although
 * its own parent exists (seen under /proc); this walk is bounded by the depth.
 */
export async function makeDirectories(path: string): Promise<string[]> {
  const made: string[] = [];
  const below: string[] = []; // missing, deepest first
  for (let p = path; ; p = dirname(p)) {
    try {
      if (await makeDirectory(p)) made.push(p);
      break;
    } catch (err) {
      if (!isCode(err, 'ENOENT') || dirname(p) === p) throw err;
      below.push(p);
    }
  }
  for (const d of below.reverse()) if (await makeDirectory(d)) made.push(d);
  return made;
}

/** fsync a directory so the entries just made in it survive a crash. */
export async function syncDirectory(path: string): Promise<void> {
  const fh = await open(path, DIR_FLAGS);
  try {
    await fh.sync();
  } finally {
    await ignoreErrors(fh.close());
  }
}

/**
 * fsync each directory once, so the entries just made in them survive a
 * crash. One we may not open (a parent with mode 0711 that is not ours) cannot
 * be helped and is skipped; any other error is thrown.
 */
export async function syncDirectories(dirs: Iterable<string>): Promise<void> {
  for (const dir of new Set(dirs)) {
    try {
      await syncDirectory(dir);
    } catch (err) {
      if (!isCode(err, 'EACCES') && !isCode(err, 'EPERM')) throw err;
    }
  }
}
