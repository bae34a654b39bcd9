// System users for privilege tests (the tests run as root). Created once with
// useradd if missing, never removed: other test runs reuse them, and removing
// a user while a file it owns exists would leave an orphan uid.
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync } from 'node:fs';

export interface SystemUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

export function ensureSystemUser(name: string): SystemUser {
  try {
    execFileSync('id', ['-u', name], { stdio: 'pipe' });
  } catch {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', name], { stdio: 'pipe' });
  }
  return {
    name,
    uid: Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim()),
  };
}

/** Real, effective, saved and filesystem uids (and gids) of a process, from /proc. */
export function processIds(pid: number): { uids: number[]; gids: number[]; groups: number[] } {
  const status = execFileSync('cat', [`/proc/${pid}/status`], { encoding: 'utf8' });
  const nums = (label: string): number[] => (new RegExp(`^${label}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  return { uids: nums('Uid'), gids: nums('Gid'), groups: nums('Groups') };
}

/** PIDs whose parent is `parent`. */
export function childPids(parent: number): number[] {
  const out: number[] = [];
  for (const line of execFileSync('ps', ['-o', 'pid=,ppid=', '-e'], { encoding: 'utf8' }).split('\n')) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number);
    if (ppid === parent && pid !== undefined) out.push(pid);
  }
  return out;
}

/**
 * A system user with a home directory of its own (SpamAssassin keeps the
 * user's prefs and Bayes there): created with its home under
 * /var/tmp/mailproc-test-homes/ when missing; the home (whatever passwd says)
 * is made and handed to the user when it does not exist. Never removed, like
 * the users: a concurrent test run may be using it.
 */
export function ensureUserWithHome(name: string): SystemUser & { readonly home: string } {
  try {
    execFileSync('id', ['-u', name], { stdio: 'pipe' });
  } catch {
    mkdirSync('/var/tmp/mailproc-test-homes', { recursive: true, mode: 0o755 });
    execFileSync('useradd', ['--system', '--user-group', '--home-dir', `/var/tmp/mailproc-test-homes/${name}`, '--no-create-home', '--shell', '/usr/sbin/nologin', name], { stdio: 'pipe' });
  }
  const user = ensureSystemUser(name);
  const home = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim().split(':')[5] ?? '';
  if (!existsSync(home)) {
    mkdirSync(home, { recursive: true, mode: 0o755 });
    chownSync(home, user.uid, user.gid);
  }
  return { ...user, home };
}
