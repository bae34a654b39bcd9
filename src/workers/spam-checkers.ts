// The spam checkers: SpamAssassin running as each recipient's owner. One
// parent (libexec/spam-checker.pl, spawned here, root when we are root)
// loads and compiles the rules once, reading nothing of any user; for each
// user with mail to check it forks a child that drops to the user's uid/gid
// for good before it reads anything of theirs and serves the SPAMD protocol
// on <run>/users/<uid>/spamd.sock (the user's 0700 directory). The compiled
// rules are shared copy-on-write; libexec/NOTES.md has the numbers.
//
// Lifecycle: the parent starts on the first acquire() and again after it
// dies (not sooner than RESPAWN_MS after a failure, so a broken install costs
// one log line a while, not a Perl start per message). A child starts on its
// user's first acquire(), is reused after, stops after `idle` without use,
// and is started again on the next acquire() after it died. At most
// `maxCheckers` run at once: the least recently used idle one is stopped for
// a new one; when every one is busy, the new user waits for one to be freed.
//
// Exports: SpamCheckers (acquire, list, close), CheckerLease, CheckerInfo,
// SpamCheckersOptions, spamAssassinInstalled(perl), checkerSocketPath.
//
// Failure contract: acquire() rejects with an Error whose message says why
// (parent not installed or dead, the child failed or did not listen within
// startTimeoutMs); the caller applies fail-open or fail-closed. Nothing else
// throws; the parent's and children's trouble is logged.
//
// Why this is safe: the parent gets descriptors 0, 1, 2 only (pipes to us;
// shieldDescriptors puts /dev/null over every other inheritable one) and a
// child keeps none of them after its uid change (libexec/NOTES.md). The
// per-user directory is made here as for the control sockets: <run>/users is
// root's 0755, <run>/users/<uid> is created 0700 and handed to the user
// through an O_NOFOLLOW handle, never by name; a directory there that is not
// the user's is refused. A user owns their directory and so may replace the
// socket with a server of their own: that can only decide the verdicts of
// their own mail, which is theirs to decide (src/local/spam.ts takes nothing
// from a reply but a score, a threshold and rule names it checks).
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../log.js';
import { shieldDescriptors } from '../os/descriptors.js';
import type { Identity } from '../os/identity.js';

export const CHECKER_SCRIPT = fileURLToPath(new URL('../../../libexec/spam-checker.pl', import.meta.url));

const RESPAWN_MS = 30_000;
const STOP_GRACE_MS = 10_000;
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

export interface SpamCheckersOptions {
  /** paths.run: sockets under <run>/users/<uid>/. */
  readonly runDir: string;
  readonly perl: string;
  readonly script?: string;
  readonly idleMs: number;
  readonly maxCheckers: number;
  readonly startTimeoutMs: number;
  readonly networkTests: boolean;
  readonly bayesSyncMs: number;
  readonly bayesSyncMessages: number;
  /** Requests larger than this are refused by the checker (a little over spam.max_size). */
  readonly maxSize: number;
  readonly log: Logger;
}

export interface CheckerInfo {
  readonly user: string;
  readonly uid: number;
  readonly pid: number;
  readonly socket: string;
  readonly startedAt: Date;
  readonly idleMs: number;
  readonly checked: number;
  readonly busy: number;
  /** Private_Clean + Private_Dirty of the child, bytes; undefined when /proc cannot say. */
  readonly privateBytes?: number;
}

/** A checker held for one use: the socket to talk to, and release() when done. */
export interface CheckerLease {
  readonly socket: string;
  readonly pid: number;
  /**
   * Counts the use (a check, a learn) and frees the checker for idle expiry;
   * broken = it could not be reached (its socket gone): stopped, and started
   * anew on the next acquire(); counted = false for a lease that checked
   * nothing (`mailproc learn` asking where the checker is).
   */
  release(broken?: boolean, counted?: boolean): void;
}

interface Checker {
  readonly identity: Identity;
  readonly socket: string;
  pid: number;
  state: 'starting' | 'listening' | 'stopping';
  ready: Promise<void>;
  settle: (err?: Error) => void;
  startedAt: Date;
  lastUsed: number;
  busy: number;
  checked: number;
  timer?: NodeJS.Timeout;
}

interface Parent {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  alive: boolean;
}

export const checkerSocketPath = (runDir: string, uid: number): string => join(resolve(runDir), 'users', String(uid), 'spamd.sock');

/** Whether Perl can load Mail::SpamAssassin (Debian: spamassassin). */
export function spamAssassinInstalled(perl: string): Promise<boolean> {
  return new Promise((done) => {
    const io = shieldDescriptors(['ignore', 'ignore', 'ignore']);
    let child: ChildProcess;
    try {
      child = spawn(perl, ['-MMail::SpamAssassin', '-e', '1'], { stdio: io.stdio });
    } catch {
      done(false);
      return;
    } finally {
      io.release();
    }
    child.on('error', () => done(false));
    child.on('exit', (code) => done(code === 0));
  });
}

export class SpamCheckers {
  private parent: Parent | undefined;
  private failedAt = 0;
  private failure = '';
  private readonly checkers = new Map<number, Checker>();
  private readonly waiting: (() => void)[] = [];
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  private dirChecked = false;

  constructor(private readonly o: SpamCheckersOptions) {}

  /** The user's checker, started if need be; rejects with the reason it cannot be had. */
  async acquire(identity: Identity): Promise<CheckerLease> {
    if (this.closed) throw new Error('spam checkers are shut down');
    for (;;) {
      const c = this.checkers.get(identity.uid);
      if (c !== undefined && c.state !== 'stopping') {
        c.busy++;
        c.lastUsed = Date.now();
        try {
          await c.ready;
        } catch (err) {
          c.busy--;
          throw err;
        }
        return this.lease(c);
      }
      if (c !== undefined) {
        // Stopping: wait for it to go, then start anew.
        await c.ready.catch(() => undefined);
        await new Promise<void>((r) => this.waiting.push(r));
        continue;
      }
      if (this.running() >= this.o.maxCheckers && !this.evictOne()) {
        await new Promise<void>((r) => this.waiting.push(r));
        continue;
      }
      const fresh = this.begin(identity);
      fresh.busy++;
      try {
        await fresh.ready;
      } catch (err) {
        fresh.busy--;
        throw err;
      }
      return this.lease(fresh);
    }
  }

  /** Every checker now, for `mailproc status`. */
  async list(): Promise<CheckerInfo[]> {
    const now = Date.now();
    return Promise.all([...this.checkers.values()].filter((c) => c.state === 'listening').map(async (c) => {
      const priv = await privateBytes(c.pid);
      return {
        user: c.identity.user, uid: c.identity.uid, pid: c.pid, socket: c.socket, startedAt: c.startedAt,
        idleMs: c.busy > 0 ? 0 : now - c.lastUsed, checked: c.checked, busy: c.busy,
        ...(priv !== undefined ? { privateBytes: priv } : {}),
      };
    }));
  }

  /**
   * Starts the parent now (it takes seconds to compile the rules), so the
   * first message to check does not wait for it; failures are logged.
   */
  warm(): void {
    if (this.closed) return;
    void this.ensureParent().ready.catch((err: unknown) => this.o.log.error(`spam checker parent: ${(err as Error).message}`));
  }

  /** The pids of the checkers listening now (no /proc reads: the metrics scrape asks). */
  pids(): number[] {
    return [...this.checkers.values()].filter((c) => c.state === 'listening' && c.pid > 0).map((c) => c.pid);
  }

  /** The parent's pid, when it runs. */
  parentPid(): number | undefined {
    return this.parent?.alive === true ? this.parent.child.pid : undefined;
  }

  /** Stops every checker and the parent (they sync their Bayes journals first). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    for (const c of this.checkers.values()) c.settle(new Error('spam checkers are shut down'));
    const p = this.parent;
    if (p === undefined || !p.alive) return;
    const gone = new Promise<void>((r) => p.child.once('exit', () => r()));
    p.child.stdin?.end();
    const t = setTimeout(() => p.child.kill('SIGKILL'), STOP_GRACE_MS);
    await gone;
    clearTimeout(t);
  }

  private running(): number {
    return this.checkers.size;
  }

  private lease(c: Checker): CheckerLease {
    let done = false;
    return {
      socket: c.socket,
      pid: c.pid,
      release: (broken = false, counted = true) => {
        if (done) return;
        done = true;
        c.busy--;
        if (counted) c.checked++;
        c.lastUsed = Date.now();
        if (broken && c.state === 'listening' && this.checkers.get(c.identity.uid) === c) {
          this.o.log.warn(`spam checker for ${c.identity.user} cannot be reached on ${c.socket}; it is started again`, { uid: c.identity.uid, pid: c.pid });
          this.stop(c);
        }
        this.wake();
      },
    };
  }

  private wake(): void {
    const w = this.waiting.splice(0);
    for (const r of w) r();
  }

  /** Stops the least recently used checker with nothing in flight; false when all are busy. */
  private evictOne(): boolean {
    let lru: Checker | undefined;
    for (const c of this.checkers.values()) {
      if (c.busy === 0 && c.state === 'listening' && (lru === undefined || c.lastUsed < lru.lastUsed)) lru = c;
    }
    if (lru === undefined) return false;
    this.o.log.info(`spam checker for ${lru.identity.user} stopped to make room (spam.max_checkers ${this.o.maxCheckers})`, { uid: lru.identity.uid, pid: lru.pid });
    this.stop(lru);
    return true;
  }

  private stop(c: Checker): void {
    c.state = 'stopping';
    this.send(`stop\t${c.identity.uid}`);
  }

  private begin(identity: Identity): Checker {
    let settle!: (err?: Error) => void;
    const ready = new Promise<void>((res, rej) => {
      settle = (err) => (err ? rej(err) : res());
    });
    ready.catch(() => undefined);
    const c: Checker = {
      identity, socket: checkerSocketPath(this.o.runDir, identity.uid), pid: 0, state: 'starting',
      ready, settle, startedAt: new Date(), lastUsed: Date.now(), busy: 0, checked: 0,
    };
    let settled = false;
    c.settle = (err) => {
      if (settled) return;
      settled = true;
      if (c.timer) clearTimeout(c.timer);
      settle(err);
    };
    this.checkers.set(identity.uid, c);
    void this.launch(c).catch((err: unknown) => this.fail(c, (err as Error).message));
    return c;
  }

  private async launch(c: Checker): Promise<void> {
    const parent = this.ensureParent();
    await parent.ready;
    await this.prepareDirectory(c.identity);
    if (this.checkers.get(c.identity.uid) !== c) return;
    c.timer = setTimeout(() => this.fail(c, `it did not listen within ${Math.round(this.o.startTimeoutMs / 1000)} s`), this.o.startTimeoutMs);
    const id = c.identity;
    const syncSeconds = Math.round(this.o.bayesSyncMs / 1000);
    this.send(['start', id.uid, id.gid, id.user, id.home, c.socket, syncSeconds, this.o.bayesSyncMessages].join('\t'));
    this.ensureSweeper();
  }

  private fail(c: Checker, why: string): void {
    if (this.checkers.get(c.identity.uid) === c && c.state === 'starting') {
      this.checkers.delete(c.identity.uid);
      if (c.pid > 0) this.send(`stop\t${c.identity.uid}`);
    }
    c.settle(new Error(`spam checker for ${c.identity.user} not started: ${why}`));
    this.wake();
  }

  private ensureSweeper(): void {
    if (this.sweeper) return;
    const every = Math.max(1000, Math.min(30_000, Math.floor(this.o.idleMs / 4)));
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const c of this.checkers.values()) {
        if (c.state === 'listening' && c.busy === 0 && now - c.lastUsed >= this.o.idleMs) {
          this.o.log.info(`spam checker for ${c.identity.user} stopped after ${Math.round((now - c.lastUsed) / 1000)} s idle`, { uid: c.identity.uid, pid: c.pid });
          this.stop(c);
        }
      }
    }, every);
    this.sweeper.unref();
  }

  /** <run>/users (root's, 0755) and <run>/users/<uid> (the user's, 0700), never through a symlink. */
  private async prepareDirectory(id: Identity): Promise<void> {
    const users = join(resolve(this.o.runDir), 'users');
    const asRoot = process.getuid?.() === 0;
    if (!this.dirChecked) {
      await mkdir(users, { recursive: true, mode: 0o755 });
      const st = await lstat(users);
      if (!st.isDirectory() || (asRoot && st.uid !== 0) || (st.mode & 0o022) !== 0) {
        throw new Error(`${users} must be a directory owned by the daemon's user and writable by no one else`);
      }
      this.dirChecked = true;
    }
    const dir = join(users, String(id.uid));
    let made = false;
    try {
      await mkdir(dir, { mode: 0o700 });
      made = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let fh;
    try {
      fh = await open(dir, DIR_FLAGS);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOTDIR') throw new Error(`${dir} is not a directory`);
      throw err;
    }
    try {
      if (made) {
        if (asRoot) await fh.chown(id.uid, id.gid);
        await fh.chmod(0o700);
        return;
      }
      const st = await fh.stat();
      // Root's for a moment while the control socket inside is made (src/control/user-sockets.ts): the start fails and is tried again later.
      if (st.uid !== id.uid) throw new Error(`${dir} is owned by uid ${st.uid}, not by ${id.user} (uid ${id.uid})`);
    } finally {
      await fh.close();
    }
  }

  private ensureParent(): Parent {
    if (this.parent?.alive === true) return this.parent;
    if (Date.now() - this.failedAt < RESPAWN_MS) {
      const failed: Parent = { child: undefined as unknown as ChildProcess, ready: Promise.reject(new Error(this.failure)), alive: false };
      failed.ready.catch(() => undefined);
      return failed;
    }
    const args = [
      this.o.script ?? CHECKER_SCRIPT,
      ...(this.o.networkTests ? ['--network'] : ['--local-tests-only']),
      '--max-size', String(this.o.maxSize),
    ];
    const io = shieldDescriptors(['pipe', 'pipe', 'pipe']);
    let child: ChildProcess;
    try {
      child = spawn(this.o.perl, args, { stdio: io.stdio, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C' } });
    } finally {
      io.release();
    }
    let resolveReady!: () => void;
    let rejectReady!: (err: Error) => void;
    const ready = new Promise<void>((res, rej) => {
      resolveReady = res;
      rejectReady = rej;
    });
    ready.catch(() => undefined);
    const p: Parent = { child, ready, alive: true };
    this.parent = p;
    const startTimer = setTimeout(() => {
      rejectReady(new Error(`the checker parent did not compile the rules within ${Math.round(this.o.startTimeoutMs / 1000)} s`));
      child.kill('SIGKILL');
    }, this.o.startTimeoutMs);
    let stderrTail = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderrTail = (stderrTail + chunk).slice(-2000);
      for (const line of chunk.split('\n')) if (line.trim() !== '') this.o.log.info(`spam checker: ${line.trim().slice(0, 500)}`);
    });
    let buf = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('ready\t')) {
          clearTimeout(startTimer);
          const [, pid, version] = line.split('\t');
          this.o.log.info(`spam checker parent ready (SpamAssassin ${version ?? '?'})`, { pid: Number(pid) });
          resolveReady();
        } else {
          this.onLine(line);
        }
      }
    });
    child.on('error', (err) => {
      this.o.log.error(`spam checker parent: ${err.message}`);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(startTimer);
      p.alive = false;
      const how = signal !== null ? `signal ${signal}` : `exit ${code}`;
      if (!this.closed) {
        this.failedAt = Date.now();
        this.failure = `the checker parent ended (${how})${stderrTail.trim() !== '' ? `: ${stderrTail.trim().split('\n').slice(-1)[0]}` : ''}`;
        this.o.log.error(`spam checker parent ended (${how}); its checkers are gone`);
      }
      rejectReady(new Error(this.failure || `the checker parent ended (${how})`));
      for (const c of this.checkers.values()) c.settle(new Error(`spam checker for ${c.identity.user}: the checker parent ended`));
      this.checkers.clear();
      this.wake();
    });
    return p;
  }

  private send(line: string): void {
    const stdin = this.parent?.alive === true ? this.parent.child.stdin : undefined;
    if (stdin?.writable === true) stdin.write(`${line}\n`);
  }

  private onLine(line: string): void {
    const [kind, uidText, pidText, ...rest] = line.split('\t');
    const uid = Number(uidText);
    const pid = Number(pidText);
    const c = this.checkers.get(uid);
    switch (kind) {
      case 'started':
        if (c !== undefined && c.state === 'starting') c.pid = pid;
        return;
      case 'listening':
        if (c === undefined || c.state !== 'starting') return;
        c.pid = pid;
        c.state = 'listening';
        c.lastUsed = Date.now();
        this.o.log.info(`spam checker for ${c.identity.user} listening on ${c.socket}`, { uid, pid });
        c.settle();
        return;
      case 'failed':
        if (c !== undefined) this.fail(c, rest.join(' ') || 'no reason given');
        else this.o.log.error(`spam checker for uid ${uid} failed: ${rest.join(' ')}`);
        return;
      case 'exited': {
        if (c === undefined || (c.pid !== 0 && c.pid !== pid)) return;
        this.checkers.delete(uid);
        if (c.state !== 'stopping' && !this.closed) this.o.log.warn(`spam checker for ${c.identity.user} ended (${rest.join(' ')}); started again on the next message`, { uid, pid });
        c.settle(new Error(`spam checker for ${c.identity.user} ended (${rest.join(' ')})`));
        this.wake();
        return;
      }
      case 'error':
        this.o.log.error(`spam checker parent: ${[uidText, pidText, ...rest].filter((x) => x !== undefined).join(' ')}`);
        return;
      default:
        if (line.trim() !== '') this.o.log.warn(`spam checker parent said something unexpected: ${line.slice(0, 200)}`);
    }
  }
}

async function privateBytes(pid: number): Promise<number | undefined> {
  try {
    const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
    let kb = 0;
    for (const m of text.matchAll(/^Private_(?:Clean|Dirty):\s+(\d+) kB$/gm)) kb += Number(m[1]);
    return kb * 1024;
  } catch {
    return undefined;
  }
}
