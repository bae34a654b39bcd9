// A real spamd (SpamAssassin, Debian package "spamd") for a test: started on
// a unix socket in a temp directory, local tests only (-L), no user config
// (-x), one child, its own Bayes store with auto-learning off (a CHECK would
// otherwise learn the message and change what TELL answers). When the tests
// run as root it runs as nobody (setpriv), never as root. Ready when it answers
// PING (spamd takes 1-3 s to load its rules; the deadline is 60 s for a loaded
// machine, a hang detector). Stopped by PID — SIGTERM, then SIGKILL for it and
// its children if it does not go — and its directory removed.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestContext } from 'node:test';
import { ping } from '../../src/classify/spam/index.js';
import { requireProgram } from './components.js';
import { childPids, ensureSystemUser } from './users.js';

export interface TestSpamd {
  readonly socket: string;
  readonly pid: number;
  /** What spamd wrote to stderr (its log), for diagnostics. */
  logs(): string;
  /** Stops spamd by PID and removes its directory. */
  stop(): Promise<void>;
}

export interface SpamdOptions {
  /** --allow-tell (-l): TELL learns; without it spamd refuses TELL with 69. */
  readonly allowTell?: boolean;
}

const READY_MS = 60_000;
const STOP_MS = 30_000;

/** A running spamd, or undefined with the test skipped (failed under CI=true) when spamd is not installed. */
export async function startSpamd(t: TestContext, opts: SpamdOptions = {}): Promise<TestSpamd | undefined> {
  const spamd = requireProgram(t, 'spamd', 'spamd');
  if (spamd === undefined) return undefined;
  const root = process.getuid?.() === 0;
  const setpriv = root ? requireProgram(t, 'setpriv', 'util-linux') : undefined;
  if (root && setpriv === undefined) return undefined;

  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-spamd-'));
  chmodSync(dir, 0o755);
  const home = join(dir, 'spamd');
  mkdirSync(home, { mode: 0o700 });
  const socket = join(home, 'spamd.sock');
  const args = [
    '-L', '-x', ...(opts.allowTell === true ? ['-l'] : []), '-m', '1', '--min-children', '1',
    `--socketpath=${socket}`, `--cf=bayes_path ${join(home, 'bayes')}`, '--cf=bayes_auto_learn 0', '-s', 'stderr',
  ];
  let child: ChildProcess;
  const env = { ...process.env, HOME: home };
  if (setpriv !== undefined) {
    const nobody = ensureSystemUser('nobody');
    chownSync(home, nobody.uid, nobody.gid);
    child = spawn(setpriv, [`--reuid=${nobody.uid}`, `--regid=${nobody.gid}`, '--clear-groups', spamd, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
  } else {
    child = spawn(spamd, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  }
  let log = '';
  child.stderr?.on('data', (d: Buffer) => { log += d.toString('utf8'); });
  let exit: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => { exit = signal ?? String(code); resolve(); });
    child.once('error', (err) => { exit = err.message; resolve(); });
  });

  const stop = async (): Promise<void> => {
    const pid = child.pid;
    if (exit === undefined && pid !== undefined) {
      process.kill(pid, 'SIGTERM');
      const gone = await Promise.race([exited.then(() => true), sleep(STOP_MS, false, { ref: false })]);
      if (!gone) {
        for (const kid of childPids(pid)) process.kill(kid, 'SIGKILL');
        process.kill(pid, 'SIGKILL');
        await exited;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + READY_MS;
  for (;;) {
    if (exit !== undefined) {
      await stop();
      throw new Error(`spamd exited (${exit}) before answering PING:\n${log}`);
    }
    try {
      await ping({ target: { path: socket }, connectTimeoutMs: 5_000, timeoutMs: 5_000 });
      break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`spamd did not answer PING within ${READY_MS} ms:\n${log}`);
    }
    await sleep(100);
  }
  return { socket, pid: child.pid ?? -1, logs: () => log, stop };
}
