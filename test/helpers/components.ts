// Real components a test needs (spamd, Postfix, swaks, root for system users).
// Under CI=true a missing component fails the test; elsewhere the test is
// skipped with a message naming the Debian package. It never passes without
// having run.
import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { TestContext } from 'node:test';

const SEARCH = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/sbin'];

export function findProgram(name: string): string | undefined {
  for (const dir of SEARCH) {
    const path = join(dir, name);
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {
      // try the next directory
    }
  }
  return undefined;
}

/**
 * Returns the program's path, or skips the test (fails it under CI=true)
 * naming the package to install. Call first thing in the test body.
 */
export function requireProgram(t: TestContext, name: string, debianPackage: string): string | undefined {
  const path = findProgram(name);
  if (path !== undefined) return path;
  const why = `${name} not found: install the Debian package "${debianPackage}"`;
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return undefined;
}

/** Skips (or under CI fails) a test that needs root, e.g. to create system users or mount tmpfs. */
export function requireRoot(t: TestContext, what: string): boolean {
  if (process.getuid?.() === 0) return true;
  const why = `needs root (${what})`;
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return false;
}

/**
 * Mounts a small tmpfs on dir (to fill a disk on purpose). False, with the
 * test skipped (failed under CI=true), when the kernel refuses. The caller
 * unmounts it.
 */
export function mountTmpfs(t: TestContext, dir: string, size: string): boolean {
  if (!requireRoot(t, `mount a ${size} tmpfs`)) return false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
    return true;
  } catch (err) {
    const why = `cannot mount tmpfs: ${String(err)}`;
    if (process.env.CI === 'true') throw new Error(why);
    t.skip(why);
    return false;
  }
}
