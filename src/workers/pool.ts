// The worker pool: persistent worker processes per delivery identity
// (uid:gid) — at most `userWorkers` of them, started on first use, expired
// after an idle time, replaced when they die — fed by the fair scheduler
// (scheduler.ts): one FIFO per identity, at most `userConcurrency` of its
// deliveries at once, at most `maxDeliveries` overall, round robin. The pool
// is master-side; it never touches a user's files. A delivery whose worker
// dies before answering gets 4.3.0 for each destination so the message is
// retried, never lost or reported delivered. Shutdown: stop() lets workers
// finish and exit; terminate() (the end of limits.shutdown_grace) ends them —
// SIGTERM, on which a worker kills its pipe commands' process groups and exits,
// then SIGKILL after a short time — and their deliveries get 4.3.0.
//
// Safety: workers are spawned as the master's user (root, in a multi-user
// setup) only so that they can read the daemon's code wherever it is
// installed; worker-main.ts drops to the target uid/gid before it accepts any
// message. The pool refuses uid 0 / gid 0 unless the job says the address is
// allowed to deliver as root (delivery.allow_root), and, when not root
// itself, any uid but its own. No descriptor of the master reaches a worker
// but its stdio and IPC channel: every other one that would survive the exec
// (lmdb's databases, opened without O_CLOEXEC) is overlaid with /dev/null in
// the child (descriptors.ts), and the worker is started through
// `setpriv --no-new-privs` (util-linux) when it is installed.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { CopyRecipient } from '../deliver/types.js';
import type { Logger } from '../log.js';
import { status } from '../mail/status.js';
import { shieldDescriptors } from '../os/descriptors.js';
import type { Identity } from '../os/identity.js';
import { FairScheduler } from './scheduler.js';
import { checkWorkerMessage, IPC_VERSION, type DeliverRequest, type DeliveryResult, type LeafOptions, type RequestRedelivery, type WorkerDestination } from './ipc.js';

const WORKER_MAIN = fileURLToPath(new URL('./worker-main.js', import.meta.url));

export interface DeliverJob {
  /** The configuration explicitly allows this address to deliver as root. */
  readonly allowRoot?: boolean;
  /** A table's override of this user's delivery slots (rules option concurrency=N); the latest seen wins. */
  readonly concurrency?: number;
  readonly sender: string;
  readonly recipient: CopyRecipient;
  readonly arrival: Date;
  readonly header: Buffer;
  readonly body: Buffer;
  readonly destinations: readonly WorkerDestination[];
  /** A queued delivery's tokens, one per destination, and whether the worker looks for them before writing. */
  readonly redelivery?: RequestRedelivery;
  /**
   * Asked when the job reaches a worker slot: false answers it 4.3.0 unstarted
   * (the queue's deliveries once SIGTERM has arrived; an LMTP client still
   * waiting for its reply during the shutdown grace has no such check).
   */
  readonly mayStart?: () => boolean;
}

interface Pending {
  readonly count: number;
  readonly sentAt: number;
  readonly resolve: (r: PoolResult) => void;
}

/** Where the time went, ms: waiting for a slot, master↔worker (incl. a worker start), the leaves' work. */
export interface WorkerTiming {
  readonly slotMs: number;
  readonly transferMs: number;
  readonly workMs: number;
}

export interface PoolResult {
  readonly results: DeliveryResult[];
  readonly timing: WorkerTiming;
}

interface Worker {
  readonly key: string;
  readonly identity: Identity;
  readonly child: ChildProcess;
  readonly started: number;
  readonly spawnedAt: number;
  readonly pending: Map<number, Pending>;
  lastUsed: number;
  delivered: number;
  /** Spawn until its "ready" message: the worker start latency. */
  readyMs?: number;
  /** Set when the pool ends it (terminate): the 4.3.0 text its deliveries in flight get. */
  endedBy?: string;
  idleTimer?: NodeJS.Timeout;
}

export interface WorkerInfo {
  readonly user: string;
  readonly uid: number;
  readonly gid: number;
  readonly pid: number | undefined;
  readonly startedAt: number;
  readonly messages: number;
  readonly inFlight: number;
  /** How long the worker took from spawn to ready (privileges dropped, code loaded), ms. */
  readonly readyMs?: number;
}

export interface PoolOptions {
  readonly idleMs: number;
  /** Worker processes per identity. */
  readonly userWorkers: () => number;
  /** Deliveries of one identity at once. */
  readonly userConcurrency: () => number;
  /** Deliveries at once, all identities. */
  readonly maxDeliveries: number;
  readonly leafOptions: () => LeafOptions;
  readonly log: Logger;
  /**
   * Start workers through `setpriv --no-new-privs` (default true): nothing a
   * worker runs can gain privileges, which also means a user's pipe cannot use
   * set-gid helpers such as Postfix's postdrop (see NOTES.md).
   */
  readonly noNewPrivs?: () => boolean;
}

/** Where util-linux installs setpriv; looked up once, not through PATH. */
const SETPRIV_PATHS = ['/usr/bin/setpriv', '/bin/setpriv', '/usr/sbin/setpriv', '/sbin/setpriv'];
let setprivPath: string | null | undefined;
let warnedNoSetpriv = false;

function findSetpriv(): string | undefined {
  if (setprivPath === undefined) {
    setprivPath = SETPRIV_PATHS.find((p) => {
      try {
        accessSync(p, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    }) ?? null;
  }
  return setprivPath ?? undefined;
}

const failAll = (n: number, text: string): DeliveryResult[] =>
  Array.from({ length: n }, () => ({ status: status('4.3.0', text) }));
/** After terminate()'s SIGTERM, how long a worker has to kill its commands and exit before SIGKILL. */
const KILL_AFTER_MS = 2000;
const hasExited = (w: Worker): boolean => w.child.exitCode !== null || w.child.signalCode !== null;
const exitOf = (w: Worker): Promise<void> =>
  hasExited(w) ? Promise.resolve() : new Promise((resolve) => w.child.once('exit', () => resolve()));
const NO_TIME: WorkerTiming = { slotMs: 0, transferMs: 0, workMs: 0 };
const answer = (results: DeliveryResult[], timing = NO_TIME): PoolResult => ({ results, timing });

export class WorkerPool {
  /** identity key → its workers that take new work */
  private readonly workers = new Map<string, Worker[]>();
  /** Every worker process not yet exited, retired ones (finishing their deliveries) included. */
  private readonly live = new Set<Worker>();
  private readonly scheduler: FairScheduler;
  /** identity key → slots set by a table (concurrency=N), instead of delivery.user_concurrency */
  private readonly slotOverrides = new Map<string, number>();
  private nextId = 1;
  private stopping = false;

  constructor(private readonly opts: PoolOptions) {
    this.scheduler = new FairScheduler(
      { perKey: (key) => this.slotOverrides.get(key) ?? opts.userConcurrency(), global: opts.maxDeliveries },
      (err) => opts.log.error(`bug in a scheduled delivery: ${(err as Error).stack ?? String(err)}`),
    );
  }

  /** Delivers one copy to each destination as the identity; one result per destination, in order. */
  async deliver(identity: Identity, job: DeliverJob): Promise<PoolResult> {
    const n = job.destinations.length;
    if ((identity.uid === 0 || identity.gid === 0) && job.allowRoot !== true) {
      return answer(Array.from({ length: n }, () => ({ status: status('4.3.5', `refusing to deliver as root (user ${identity.user})`) })));
    }
    const self = process.getuid?.();
    if (self !== 0 && self !== identity.uid) {
      return answer(Array.from({ length: n }, () => ({
        status: status('4.3.5', `cannot deliver as ${identity.user} (uid ${identity.uid}): mailprocd is not running as root`),
      })));
    }
    if (this.stopping) return answer(failAll(n, 'mail system is shutting down'));
    const key = `${identity.uid}:${identity.gid}`;
    if (job.concurrency !== undefined) this.slotOverrides.set(key, job.concurrency);
    const submitted = performance.now();
    return this.runInSlot(identity, async () => {
      const slotMs = performance.now() - submitted;
      if (this.stopping || job.mayStart?.() === false) return answer(failAll(n, 'mail system is shutting down'));
      const r = await this.send(key, identity, job);
      return { results: r.results, timing: { ...r.timing, slotMs } };
    });
  }

  /**
   * Runs `work` inside one of the identity's delivery slots (the fair
   * scheduler's: per-user cap, global cap, round robin), e.g. the owner's spam
   * check before their copies are planned, so that a flood to one user waits in
   * that user's queue only. Resolves or rejects as `work` does.
   */
  runInSlot<T>(identity: Identity, work: () => Promise<T>): Promise<T> {
    const key = `${identity.uid}:${identity.gid}`;
    return new Promise<T>((resolve, reject) => {
      this.scheduler.submit(key, async () => {
        try {
          resolve(await work());
        } catch (err) {
          reject(err as Error);
        }
      });
    });
  }

  /** Deliveries waiting for a slot and running, per identity ("uid:gid"). */
  load(): { key: string; queued: number; active: number }[] {
    return this.scheduler.snapshot();
  }

  private send(key: string, identity: Identity, job: DeliverJob): Promise<PoolResult> {
    const n = job.destinations.length;
    const w = this.workerFor(key, identity, job.allowRoot === true);
    const id = this.nextId++;
    const req: DeliverRequest = {
      v: IPC_VERSION, type: 'deliver', id,
      sender: job.sender, arrival: job.arrival.getTime(), recipient: job.recipient,
      header: job.header, body: job.body,
      destinations: job.destinations, options: this.opts.leafOptions(),
      ...(job.redelivery !== undefined ? { redelivery: job.redelivery } : {}),
    };
    return new Promise<PoolResult>((resolve) => {
      w.pending.set(id, { count: n, sentAt: performance.now(), resolve });
      w.lastUsed = Date.now();
      if (w.idleTimer) clearTimeout(w.idleTimer);
      w.child.send(req, (err) => {
        if (err) {
          w.pending.delete(id);
          resolve(answer(failAll(n, `cannot reach the worker for ${identity.user}: ${err.message}`)));
        }
      });
    });
  }

  /** Every worker process, including one retired and still finishing its deliveries. */
  list(): WorkerInfo[] {
    return [...this.live].map((w) => ({
      user: w.identity.user, uid: w.identity.uid, gid: w.identity.gid, pid: w.child.pid,
      startedAt: w.started, messages: w.delivered, inFlight: w.pending.size,
      ...(w.readyMs !== undefined ? { readyMs: Math.round(w.readyMs) } : {}),
    }));
  }

  /**
   * Refuses new deliveries, asks every worker to finish what it has and exit;
   * resolves once all have exited. Bounded only by terminate(): main calls it
   * at the end of limits.shutdown_grace.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const w of [...this.workers.values()].flat()) this.retire(w);
    await Promise.all([...this.live].map((w) => exitOf(w)));
  }

  /**
   * The shutdown grace is over: refuses new deliveries and ends every worker
   * now. SIGTERM first — the worker SIGKILLs its pipe commands' process groups
   * (each runs in its own, out of reach of a signal to the worker) and exits —
   * then SIGKILL after killAfterMs for one that does not (its commands may be
   * left running then; that is logged). Each delivery in flight is answered
   * 4.3.0 by the exit handler, so its recipients stay queued (or the LMTP
   * client, which got 421 4.3.2 at the grace, retries). Resolves when all have
   * exited.
   */
  async terminate(killAfterMs = KILL_AFTER_MS): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.live].map(async (w) => {
      if (hasExited(w)) return;
      this.forget(w);
      w.endedBy = 'delivery cut off: the mail system is shutting down';
      w.child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (hasExited(w)) return;
        this.opts.log.warn(`worker for ${w.identity.user} pid ${w.child.pid ?? '?'} did not exit on SIGTERM; killing it (commands it ran may be left running)`);
        w.child.kill('SIGKILL');
      }, killAfterMs);
      await exitOf(w);
      clearTimeout(timer);
    }));
  }

  /** The identity's least busy worker, or a new one while there are fewer than userWorkers. */
  private workerFor(key: string, identity: Identity, allowRoot: boolean): Worker {
    const live = this.workers.get(key) ?? [];
    const idle = live.find((w) => w.pending.size === 0);
    if (idle) return idle;
    if (live.length > 0 && live.length >= this.opts.userWorkers()) {
      return live.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    }
    const root = process.getuid?.() === 0;
    // A worker's time goes to system calls (write, fsync, link), not to
    // JavaScript: V8's optimising compilers (off in --lite-mode) and a large
    // young generation buy it nothing but memory. With a collection when idle
    // a waiting worker stays near Node's baseline (measured by npm run bench:
    // ~45 MiB RSS, ~8 MiB of it private; the node binary's pages are shared).
    // --lite-mode implies --jitless, which cannot run WebAssembly: without
    // --no-expose-wasm V8 turns the flag off itself and says so on stderr
    // ("disabling flag --expose_wasm due to conflicting flags") at every start.
    const nodeArgs = ['--lite-mode', '--no-expose-wasm', '--max-semi-space-size=1', '--expose-gc', WORKER_MAIN];
    const wanted = (this.opts.noNewPrivs?.() ?? true);
    const setpriv = wanted ? findSetpriv() : undefined;
    if (setpriv === undefined && wanted && !warnedNoSetpriv) {
      warnedNoSetpriv = true;
      this.opts.log.warn('setpriv (util-linux) not found: workers and the commands they run start without no_new_privs');
    }
    const options: SpawnOptions = {
      serialization: 'advanced',
      cwd: '/',
      env: {
        PATH: '/usr/local/bin:/usr/bin:/bin',
        // Each delivery blocks a libuv thread in fsync (file, then new/); the
        // default 4 threads would serialise a user's concurrent deliveries.
        // One malloc arena per thread would keep their memory after the load passes.
        MALLOC_ARENA_MAX: '2',
        UV_THREADPOOL_SIZE: String(Math.min(64, Math.max(4, (this.slotOverrides.get(key) ?? this.opts.userConcurrency()) * 2))),
        HOME: identity.home,
        USER: identity.user,
        LOGNAME: identity.user,
        MAILPROC_UID: String(identity.uid),
        MAILPROC_GID: String(root ? identity.gid : process.getgid?.() ?? identity.gid),
        ...(allowRoot ? { MAILPROC_ALLOW_ROOT: '1' } : {}),
        // Tells the worker to check that it really runs with no_new_privs.
        ...(setpriv !== undefined ? { MAILPROC_NO_NEW_PRIVS: '1' } : {}),
      },
    };
    // The master's descriptors that would survive the exec (lmdb opens its
    // databases read-write without O_CLOEXEC) are overlaid with /dev/null in
    // the child, so a worker never receives them; worker-main.ts then closes
    // every inheritable descriptor it finds, these and any from our own parent.
    // Its stderr comes back here, to be logged like our own lines (log.file,
    // the journal's priorities, JSON), not written past the logger.
    const io = shieldDescriptors(['ignore', 'inherit', 'pipe', 'ipc']);
    let child: ChildProcess;
    try {
      // setpriv sets no_new_privs and execs node in the same process (same
      // pid): the worker and everything it starts can never gain privileges
      // through a set-uid/set-gid program or file capabilities.
      child = setpriv !== undefined
        ? spawn(setpriv, ['--no-new-privs', process.execPath, ...nodeArgs], { ...options, stdio: io.stdio })
        : spawn(process.execPath, nodeArgs, { ...options, stdio: io.stdio });
    } finally {
      io.release();
    }
    const w: Worker = { key, identity, child, started: Date.now(), spawnedAt: performance.now(), pending: new Map(), lastUsed: Date.now(), delivered: 0 };
    this.workers.set(key, [...live, w]);
    this.live.add(w);
    this.logStderr(w);
    child.on('message', (raw: unknown) => this.onMessage(w, raw));
    child.on('error', (err) => this.opts.log.error(`worker for ${identity.user}: ${err.message}`));
    child.on('exit', (code, signal) => {
      this.live.delete(w);
      this.forget(w);
      if (w.idleTimer) clearTimeout(w.idleTimer);
      const lost = [...w.pending.values()];
      w.pending.clear();
      if (lost.length > 0 || (code !== 0 && !this.stopping)) {
        this.opts.log.warn(`worker for ${identity.user} pid ${child.pid ?? '?'} exited`, { code: code ?? undefined, signal: signal ?? undefined, lost: lost.length });
      }
      for (const p of lost) p.resolve(answer(failAll(p.count, w.endedBy ?? `worker for ${identity.user} died (${signal ?? `exit ${code}`})`)));
    });
    this.opts.log.debug(`started worker for ${identity.user}`, { pid: child.pid, uid: identity.uid, gid: identity.gid });
    return w;
  }

  /**
   * A worker writes to stderr only when something went wrong (worker-main.ts:
   * a fatal start, an uncaught error, a refused message), so every line is an
   * error. Always drained: a full pipe would block the worker.
   */
  private logStderr(w: Worker): void {
    let partial = '';
    const flush = (text: string): void => {
      for (const line of text.split('\n')) {
        if (line.trim() !== '') this.opts.log.error(`worker for ${w.identity.user} pid ${w.child.pid ?? '?'}: ${line.trim().slice(0, 2000)}`);
      }
    };
    w.child.stderr?.setEncoding('utf8');
    w.child.stderr?.on('data', (chunk: string) => {
      partial += chunk;
      const nl = partial.lastIndexOf('\n');
      if (nl < 0) {
        if (partial.length > 8192) { flush(partial); partial = ''; }
        return;
      }
      flush(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    });
    w.child.stderr?.on('end', () => flush(partial));
  }

  private onMessage(w: Worker, raw: unknown): void {
    const m = checkWorkerMessage(raw);
    if (typeof m === 'string') {
      this.opts.log.error(`malformed message from worker ${w.child.pid ?? '?'}: ${m}`);
      return;
    }
    if (m.type === 'ready') {
      w.readyMs = performance.now() - w.spawnedAt;
      this.opts.log.debug(`worker for ${w.identity.user} ready in ${Math.round(w.readyMs)} ms`, { pid: m.pid });
      return;
    }
    const p = w.pending.get(m.id);
    if (!p) return;
    w.pending.delete(m.id);
    if (m.type === 'refused') {
      this.opts.log.error(`worker for ${w.identity.user} refused a request: ${m.reason}`);
      p.resolve(answer(failAll(p.count, 'internal error: the delivery request was refused by the worker')));
      if (w.pending.size === 0) this.armIdle(w);
      return;
    }
    w.delivered++;
    const results = m.results.length === p.count ? [...m.results] : failAll(p.count, 'worker answered the wrong number of results');
    const roundTrip = performance.now() - p.sentAt;
    p.resolve({ results, timing: { slotMs: 0, transferMs: Math.max(0, roundTrip - m.elapsedMs), workMs: m.elapsedMs } });
    if (w.pending.size === 0) this.armIdle(w);
  }

  private armIdle(w: Worker): void {
    if (w.idleTimer) clearTimeout(w.idleTimer);
    w.idleTimer = setTimeout(() => {
      if (w.pending.size === 0) this.retire(w);
    }, this.opts.idleMs);
    w.idleTimer.unref();
  }

  private forget(w: Worker): void {
    const rest = (this.workers.get(w.key) ?? []).filter((x) => x !== w);
    if (rest.length > 0) this.workers.set(w.key, rest);
    else this.workers.delete(w.key);
  }

  /** Takes the worker out of the pool at once (new work gets a fresh one) and asks it to exit. */
  private retire(w: Worker): void {
    this.forget(w);
    if (w.child.connected) w.child.send({ v: IPC_VERSION, type: 'shutdown' });
  }
}
