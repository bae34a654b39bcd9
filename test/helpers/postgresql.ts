// A throwaway PostgreSQL for tests: initdb into a temp directory and a
// postgres started by us on a unix socket in that directory and a free
// loopback port, as the package's `postgres` user (PostgreSQL refuses to run
// as root). Stopped by its PID (fast shutdown, then SIGKILL), the directory
// removed. Debian package "postgresql"; requirePostgres skips (fails under
// CI=true) when it is missing.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { freePort } from './postfix.js';

export interface TestPostgres {
  readonly dir: string;
  readonly port: number;
  /** postgresql://postgres@127.0.0.1:PORT/postgres (trust authentication on loopback). */
  readonly url: string;
  readonly pid: number;
  /** Runs SQL with psql over the unix socket; throws with psql's stderr when it fails. */
  sql(statements: string): string;
  /** Fast shutdown (SIGINT), SIGKILL after 30 s; the data directory stays (start it again with restart()). */
  stop(): Promise<void>;
  /** Starts the same cluster again on the same port. */
  restart(): Promise<void>;
  /** stop() and remove the directory. */
  destroy(): Promise<void>;
}

function binDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] !== undefined ? join(root, versions[0], 'bin') : undefined;
}

/** The server binaries' directory, or undefined with the test skipped (failed under CI=true). */
export function requirePostgres(t: TestContext): string | undefined {
  const bin = binDir();
  const user = spawnSync('id', ['-u', 'postgres']).status === 0;
  if (bin !== undefined && user && process.getuid?.() === 0) return bin;
  const why = process.getuid?.() !== 0 ? 'needs root (PostgreSQL runs as the postgres user)' : 'PostgreSQL not found: install the Debian package "postgresql"';
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return undefined;
}

const READY_TIMEOUT_MS = 120_000;

export async function startPostgres(bin: string): Promise<TestPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-pg-'));
  const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  chownSync(dir, uid, gid);
  const data = join(dir, 'data');
  const as = { uid, gid, cwd: dir, env: { ...process.env, HOME: dir } };
  const init = spawnSync(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale', 'C'], { ...as, encoding: 'utf8' });
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${init.stderr}`);
  }
  const port = await freePort();
  let child: ChildProcess | undefined;

  const start = async (): Promise<void> => {
    // Spawned as postgres directly (not through runuser), so the PID we signal is postgres's own.
    const c = spawn(join(bin, 'postgres'), ['-D', data, '-k', dir, '-p', String(port),
      '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'], { ...as, stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`postgres not ready within ${READY_TIMEOUT_MS / 1000} s:\n${log}`)), READY_TIMEOUT_MS);
      c.stderr?.on('data', (b: Buffer) => {
        log += b.toString('utf8');
        if (/database system is ready to accept connections/.test(log)) {
          clearTimeout(timer);
          resolve();
        }
      });
      c.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`postgres exited (${code}) before it was ready:\n${log}`));
      });
    });
    c.stderr?.resume();
  };

  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null || c.signalCode !== null) return;
    // SIGINT: PostgreSQL's fast shutdown.
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGINT');
    const timer = setTimeout(() => c.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };

  await start();
  const sql = (statements: string): string => {
    const r = spawnSync(join(bin, 'psql'), ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', statements], { ...as, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
    return r.stdout;
  };
  return {
    dir,
    port,
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
    get pid() {
      return child?.pid ?? 0;
    },
    sql,
    stop,
    restart: start,
    destroy: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
