// Real state engines for the shared-policy-state tests: a PostgreSQL cluster
// (Debian package "postgresql") and a Redis server ("redis-server"), each
// started by the test in its own temp directory, listening on a unix socket
// there only (no TCP port), stopped by PID. PostgreSQL refuses to run as
// root, so initdb and postgres run as the `postgres` system user the package
// creates, in a directory handed to it. A missing package skips the test
// (fails it under CI=true) naming the package, as components.ts does.
//
// One engine per test file, started on the first test that asks for it
// (engine.use(t)) and stopped by the file's after(); use() also empties it,
// so each test starts from nothing. stop()/start() let the outage tests take
// the engine away and bring it back with its data.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import pg from 'pg';
import { Redis } from 'ioredis';
import { stateConfigSchema } from '../../src/config/index.js';
import { migratePolicyState } from '../../src/state/index.js';
import { findProgram } from './components.js';

export type EngineKind = 'lmdb' | 'postgresql' | 'redis';

export interface TestEngine {
  readonly kind: EngineKind;
  /** The state.backend value ("lmdb", or the engine's URL), the engine started (migrated) and emptied; undefined: skipped. */
  use(t: TestContext): Promise<string | undefined>;
  /** Stops the server (by PID), keeping its data. */
  stop(): Promise<void>;
  /** Starts it again on the same data and socket. */
  start(): Promise<void>;
  /** Stops it and removes its directory (the file's after()). */
  dispose(): Promise<void>;
}

function skipOrFail(t: TestContext, why: string): undefined {
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return undefined;
}

/** The lines a child wrote, and a wait for one that matches. */
function watch(child: ChildProcess): (re: RegExp, what: string, timeoutMs?: number) => Promise<void> {
  let text = '';
  const waiters: (() => void)[] = [];
  const onData = (b: Buffer): void => {
    text += b.toString();
    for (const w of waiters.splice(0)) w();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  child.on('exit', () => {
    for (const w of waiters.splice(0)) w();
  });
  return (re, what, timeoutMs = 60_000) => new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not seen within ${timeoutMs} ms; output: ${text.slice(-2000)}`)), timeoutMs);
    const check = (): void => {
      if (re.test(text)) {
        clearTimeout(timer);
        resolve();
      } else if (child.exitCode !== null || child.signalCode !== null) {
        clearTimeout(timer);
        reject(new Error(`${what}: the server exited (${child.exitCode ?? child.signalCode}); output: ${text.slice(-2000)}`));
      } else waiters.push(check);
    };
    check();
  });
}

async function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, signal);
  await exited;
}

/** A server that never said it was ready is stopped (by its PID) before the error goes on: no test leaves one behind. */
async function readyOrStopped(child: ChildProcess, ready: Promise<void>, signal: NodeJS.Signals): Promise<void> {
  try {
    await ready;
  } catch (err) {
    await stopChild(child, signal);
    throw err;
  }
}

function postgresBin(name: string): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  for (const v of readdirSync(base).sort().reverse()) {
    const p = join(base, v, 'bin', name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

function postgresEngine(): TestEngine {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  let url = '';
  let ids: { uid: number; gid: number } | undefined;
  const start = async (): Promise<void> => {
    const bin = postgresBin('postgres') as string;
    const c = spawn(bin, ['-D', join(dir as string, 'data'), '-k', dir as string, '-c', 'listen_addresses=', '-c', 'fsync=off',
      '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=100'], { ...ids, stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    await readyOrStopped(c, watch(c)(/database system is ready to accept connections/, 'postgres start'), 'SIGINT');
  };
  const reset = async (): Promise<void> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query('TRUNCATE mailproc_greylist, mailproc_greylist_clients, mailproc_rate, mailproc_user_policy');
    } finally {
      await client.end();
    }
  };
  return {
    kind: 'postgresql',
    async use(t) {
      const initdb = postgresBin('initdb');
      if (initdb === undefined || postgresBin('postgres') === undefined) return skipOrFail(t, 'PostgreSQL not found: install the Debian package "postgresql"');
      if (process.getuid?.() !== 0) return skipOrFail(t, 'needs root (to run PostgreSQL as the postgres user)');
      if (dir === undefined) {
        let uid: number;
        let gid: number;
        try {
          uid = Number(execFileSync('id', ['-u', 'postgres'], { stdio: 'pipe' }).toString().trim());
          gid = Number(execFileSync('id', ['-g', 'postgres'], { stdio: 'pipe' }).toString().trim());
        } catch {
          return skipOrFail(t, 'no postgres user: install the Debian package "postgresql"');
        }
        ids = { uid, gid };
        dir = mkdtempSync(join(tmpdir(), 'mailprocd-pg-'));
        chownSync(dir, uid, gid);
        const init = spawn(initdb, ['-D', join(dir, 'data'), '-U', 'mailproc', '--auth=trust', '-E', 'UTF8', '--no-sync'], { ...ids, stdio: ['ignore', 'pipe', 'pipe'] });
        const out = watch(init);
        const code = await new Promise<number | null>((resolve) => init.once('exit', resolve));
        if (code !== 0) await out(/$^/, `initdb exit ${code}`, 1);
        await start();
        url = `postgresql://mailproc@localhost/postgres?host=${encodeURIComponent(dir)}`;
        await migratePolicyState(stateConfigSchema.parse({ backend: url }));
      }
      await reset();
      return url;
    },
    stop: () => stopChild(child, 'SIGINT'),
    start,
    async dispose() {
      await stopChild(child, 'SIGINT');
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
      dir = undefined;
    },
  };
}

function redisEngine(): TestEngine {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  let url = '';
  const start = async (): Promise<void> => {
    const c = spawn(findProgram('redis-server') as string, ['--port', '0', '--unixsocket', join(dir as string, 'redis.sock'), '--unixsocketperm', '700',
      '--save', '', '--appendonly', 'no', '--dir', dir as string, '--daemonize', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    await readyOrStopped(c, watch(c)(/ready to accept connections/i, 'redis-server start'), 'SIGTERM');
  };
  return {
    kind: 'redis',
    async use(t) {
      if (findProgram('redis-server') === undefined) return skipOrFail(t, 'redis-server not found: install the Debian package "redis-server"');
      if (dir === undefined) {
        dir = mkdtempSync(join(tmpdir(), 'mailprocd-redis-'));
        await start();
        url = `unix://${join(dir, 'redis.sock')}`;
      }
      const r = new Redis({ path: join(dir, 'redis.sock'), lazyConnect: true });
      await r.connect();
      try {
        await r.flushall();
      } finally {
        r.disconnect();
      }
      await migratePolicyState(stateConfigSchema.parse({ backend: url }));
      return url;
    },
    stop: () => stopChild(child, 'SIGTERM'),
    start,
    async dispose() {
      await stopChild(child, 'SIGTERM');
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
      dir = undefined;
    },
  };
}

const lmdbEngine = (): TestEngine => ({
  kind: 'lmdb', use: () => Promise.resolve('lmdb'), stop: () => Promise.resolve(), start: () => Promise.resolve(), dispose: () => Promise.resolve(),
});

export function testEngine(kind: EngineKind): TestEngine {
  return kind === 'lmdb' ? lmdbEngine() : kind === 'postgresql' ? postgresEngine() : redisEngine();
}

/** The three backends the policy state tables run against. */
export const ENGINE_KINDS: readonly EngineKind[] = ['lmdb', 'postgresql', 'redis'];
