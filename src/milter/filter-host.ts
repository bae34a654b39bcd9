// Administrators' milter filters (milter.filters), each run in its own worker
// thread, outside the daemon's event loop: a filter stuck in an endless loop
// or waiting on something slow cannot stop LMTP, SMTP or the policy service.
//
// loadMilterFilters({ paths, baseDir, timeoutMs, log }) starts one worker per
// module (filter-worker.ts), which imports it and calls its factory once to
// learn which event methods it defines; it resolves with one main-side
// MilterFilterFactory per module, in config order, and close(). The server
// calls such a factory once per MTA connection; it returns a proxy filter
// that has exactly the event methods the module's filter has (so the server
// negotiates only those protocol steps with the MTA), plus close — the MTA
// sends abort and quit whatever was negotiated, and close is how the worker
// learns to drop that connection's instance. One worker serves every
// connection: the module's factory runs there once per connection (at its
// first call), and the calls are multiplexed by session id.
//
// Each proxied call has milter.filter_timeout. Past it, the call rejects with
// an error naming the filter, the event and the limit, and the worker is
// terminated (the only way to stop a loop in it) and started again. A worker
// that dies (an uncaught exception or unhandled rejection in the filter,
// process.exit(), memory past its resourceLimits) rejects its pending calls
// the same way and is started again. The connections whose filter instances
// lived in a dead worker lost their state (what the filter had seen of the
// message): their later calls reject too ("its state was lost"), until the
// MTA closes that connection; new connections get the new worker. A wrong
// decision made on half a message would be worse than the failure action.
// A worker is started again at once after it died serving calls, and at the
// next call otherwise (so a module that dies while loading does not spin).
//
// In eom, the worker records the modifications the filter makes and sends
// them with the verdict; the proxy replays them, in order, on the real
// EomSession before it returns the verdict. progress() is passed on at once.
// session.macro() is answered from the real session while the call runs.
// Header values and body chunks cross as bytes and arrive as Buffers.
// A filter's console output (stdout, stderr) is logged, a line at a time,
// prefixed with "milter filter NAME:".
//
// Exports: loadMilterFilters, MilterFilterLoadError, LoadedMilterFilters,
// LoadMilterFiltersOptions, FILTER_MEMORY_MB.
// Fails: loadMilterFilters rejects with a MilterFilterLoadError naming the
// config key (milter.filters[1]) and the path of each module that is missing,
// has a syntax error, has no function as default export, whose factory
// throws, or whose worker dies or hangs while loading; the daemon does not
// start, as with any configuration error. After that, nothing here throws:
// failures are the proxied calls' rejections, for the server's
// milter.on_filter_error.
//
// Safety: a filter runs with the daemon's privileges (root, usually) in the
// daemon's process; it could do anything the daemon can. Filters are code the
// administrator trusts, as Postfix trusts its content filters. The worker
// isolates the event loop, crashes and run time, and bounds the filter's heap
// (resourceLimits, FILTER_MEMORY_MB); not privileges, files or the network.
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import type { Logger } from '../log.js';
import type { EomSession, MilterEvent, MilterFilter, MilterFilterFactory, MilterSession, MilterVerdict, NormalizedVerdict } from './api.js';
import {
  bytesOf, callValue, checkWorkerReply, FILTER_IPC_VERSION,
  type CallValue, type HostRequest, type MacroAnswer, type Modification, type WorkerReply,
} from './filter-ipc.js';
import type { FilterWorkerData } from './filter-worker.js';

const WORKER_URL = new URL('./filter-worker.js', import.meta.url);

/** Old-generation heap limit of one filter's worker; past it the worker dies (and is started again). */
export const FILTER_MEMORY_MB = 256;
/** Loading a module (at start, and each time its worker is started again) gets at least this long: a filter may read a large list. */
const MIN_LOAD_MS = 30_000;
/** Reasons kept for the connections of dead workers (one per worker generation). */
const MAX_LOST = 64;
/** Longest console line kept from a filter; the rest of the line is cut. */
const MAX_LINE = 4096;

export interface LoadMilterFiltersOptions {
  /** milter.filters, as written in the config. */
  readonly paths: readonly string[];
  /** Relative paths are resolved against it (the daemon passes its working directory). */
  readonly baseDir: string;
  /** milter.filter_timeout, ms. */
  readonly timeoutMs: number;
  readonly log: Logger;
  /** Heap limit per worker, MB; FILTER_MEMORY_MB when not given. */
  readonly memoryMb?: number;
}

export interface LoadedMilterFilters {
  /** One per module, in config order. */
  readonly factories: MilterFilterFactory[];
  /** Ends every worker; pending calls reject. */
  close(): Promise<void>;
}

/** One or more filters could not be loaded: one problem per line, each naming milter.filters[i] and the path. */
export class MilterFilterLoadError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
    this.name = 'MilterFilterLoadError';
  }
}

interface PendingCall {
  readonly id: number;
  readonly event: MilterEvent;
  readonly session: MilterSession;
  readonly live: LiveWorker;
  readonly resolve: (v: NormalizedVerdict) => void;
  readonly reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

interface LiveWorker {
  readonly gen: number;
  readonly worker: Worker;
  readonly macroPort: MessagePort;
  readonly macroFlag: Int32Array;
  /** Settles when the module reported its events, or could not load. */
  readonly ready: Promise<void>;
  readonly calls: Set<PendingCall>;
  served: number;
  /** Why it is gone; set once. */
  dead: string | undefined;
}

interface SessionState {
  /** The worker generation that holds this connection's instance. */
  gen: number | undefined;
}

/** Splits a stream into lines for the log, cutting overlong ones. */
function pipeLines(stream: Readable, line: (text: string) => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      line(buf.slice(0, nl).replace(/\r$/, ''));
      buf = buf.slice(nl + 1);
    }
    if (buf.length > MAX_LINE) {
      line(`${buf.slice(0, MAX_LINE)}…`);
      buf = '';
    }
  });
  stream.on('end', () => {
    if (buf !== '') line(buf);
    buf = '';
  });
}

function encodeArg(a: unknown): CallValue {
  if (a instanceof Uint8Array) return callValue(a) as Uint8Array;
  if (Array.isArray(a)) return a.map(String);
  if (typeof a === 'object' && a !== null) return { ...(a as Record<string, string | number>) };
  return a as string | number;
}

/** One module: its worker (started again when it dies) and the proxies of its sessions. */
class FilterModule {
  readonly factory: MilterFilterFactory;
  private events = new Set<MilterEvent>();
  private live: LiveWorker | undefined;
  private gen = 0;
  private readonly lost = new Map<number, string>();
  private readonly sessions = new Map<number, SessionState>();
  private nextSid = 1;
  private nextCall = 1;
  private closed = false;
  /** The first load succeeded: from then on a death is news for the log. */
  private inService = false;

  constructor(
    readonly name: string,
    private readonly path: string,
    private readonly timeoutMs: number,
    private readonly memoryMb: number,
    private readonly log: Logger,
  ) {
    const factory = (): MilterFilter => this.proxy();
    // The server names a bare factory after its function name in its log lines.
    Object.defineProperty(factory, 'name', { value: name });
    this.factory = factory;
  }

  /** Starts the first worker; rejects with the reason when the module cannot be loaded. */
  async load(): Promise<void> {
    const live = this.start(this.loadMs());
    await live.ready;
    this.inService = true;
  }

  private loadMs(): number {
    return Math.max(this.timeoutMs, MIN_LOAD_MS);
  }

  private start(loadMs: number): LiveWorker {
    const gen = ++this.gen;
    const { port1, port2 } = new MessageChannel();
    const sab = new SharedArrayBuffer(4);
    const workerData: FilterWorkerData = { v: FILTER_IPC_VERSION, path: this.path, macroFlag: sab, macroPort: port2, macroWaitMs: this.timeoutMs };
    const worker = new Worker(WORKER_URL, {
      workerData,
      transferList: [port2],
      stdout: true,
      stderr: true,
      resourceLimits: { maxOldGenerationSizeMb: this.memoryMb },
    });
    let loaded!: () => void;
    let failed!: (err: Error) => void;
    const ready = new Promise<void>((res, rej) => {
      loaded = res;
      failed = rej;
    });
    // A load failure may have no call waiting on it (an eager restart): keep it from being unhandled.
    ready.catch(() => undefined);
    const live: LiveWorker = { gen, worker, macroPort: port1, macroFlag: new Int32Array(sab), ready, calls: new Set(), served: 0, dead: undefined };
    this.live = live;
    let isLoaded = false;
    let lastError: string | undefined;
    const loadTimer = setTimeout(() => {
      if (isLoaded) return;
      const why = `did not finish loading within ${loadMs} ms`;
      failed(new Error(why));
      this.kill(live, why);
    }, loadMs);
    pipeLines(worker.stdout, (l) => this.log.info(`milter filter ${this.name}: ${l}`));
    pipeLines(worker.stderr, (l) => this.log.warn(`milter filter ${this.name}: ${l}`));
    worker.on('message', (raw: unknown) => {
      const m = checkWorkerReply(raw);
      if (typeof m === 'string') {
        this.log.error(`milter filter ${this.name}: its worker sent a message that was refused: ${m}`);
        // The call it claims to answer fails now rather than at the time limit.
        const id = (raw as { id?: unknown } | null)?.id;
        const c = typeof id === 'number' ? this.find(live, id) : undefined;
        if (c !== undefined) {
          live.calls.delete(c);
          this.fail(c, `its worker sent a reply that was refused: ${m}`);
        }
        return;
      }
      if (m.type === 'loaded') {
        isLoaded = true;
        clearTimeout(loadTimer);
        if (gen === 1) this.events = new Set(m.events);
        else if (m.events.length !== this.events.size || m.events.some((e) => !this.events.has(e))) {
          // The steps negotiated with the MTA follow what was learnt at start.
          this.log.warn(`milter filter ${this.name}: the module now defines ${m.events.join(', ')}; the daemon keeps asking for ${[...this.events].join(', ')} until it is restarted`, { filter: this.name });
        }
        loaded();
      } else if (m.type === 'load-failed') {
        clearTimeout(loadTimer);
        failed(new Error(m.why));
        this.kill(live, `could not load the module: ${m.why}`);
      } else {
        this.onReply(live, m);
      }
    });
    worker.on('error', (err: Error) => {
      lastError = `${err.name}: ${err.message}`;
    });
    worker.on('exit', (code) => {
      clearTimeout(loadTimer);
      port1.close();
      const why = lastError !== undefined ? `crashed (${lastError})` : `exited (code ${code})`;
      if (!isLoaded) failed(new Error(`its worker ${why} while loading`));
      this.die(live, why);
    });
    return live;
  }

  /** Marks the worker gone and rejects what it had; restarts it when it was in service. */
  private die(live: LiveWorker, why: string): void {
    if (live.dead !== undefined) return;
    live.dead = why;
    if (this.live === live) this.live = undefined;
    this.lost.set(live.gen, why);
    // Only the reason is kept per generation; the oldest go (their sessions then read "stopped").
    if (this.lost.size > MAX_LOST) this.lost.delete(this.lost.keys().next().value as number);
    for (const c of live.calls) this.fail(c, `its worker ${why}${this.closed ? '' : '; the filter is started again'}`);
    live.calls.clear();
    if (this.closed || !this.inService) return;
    if (live.served > 0) {
      this.log.warn(`milter filter ${this.name}: its worker ${why}; starting it again`, { filter: this.name });
      if (this.live === undefined) this.start(this.loadMs());
    } else {
      this.log.warn(`milter filter ${this.name}: its worker ${why}; it is started again at the next call`, { filter: this.name });
    }
  }

  /** Stops a worker now (the only way out of a loop in it). */
  private kill(live: LiveWorker, why: string): void {
    this.die(live, why);
    live.worker.terminate().catch(() => undefined);
  }

  private fail(c: PendingCall, why: string): void {
    clearTimeout(c.timer);
    c.reject(new Error(`milter filter ${this.name}: ${c.event} failed: ${why}`));
  }

  private find(live: LiveWorker, id: number): PendingCall | undefined {
    for (const c of live.calls) if (c.id === id) return c;
    return undefined;
  }

  private onReply(live: LiveWorker, m: Exclude<WorkerReply, { type: 'loaded' | 'load-failed' }>): void {
    if (m.type === 'macro') {
      const c = this.find(live, m.id);
      let value: string | null = null;
      try {
        value = c?.session.macro(m.name) ?? null;
      } catch {
        value = null;
      }
      const answer: MacroAnswer = { q: m.q, value };
      // The answer must be on the port before the worker wakes and reads it.
      live.macroPort.postMessage(answer);
      Atomics.store(live.macroFlag, 0, 1);
      Atomics.notify(live.macroFlag, 0);
      return;
    }
    const c = this.find(live, m.id);
    if (c === undefined) return; // timed out already
    if (m.type === 'progress') {
      if (c.event === 'eom') (c.session as EomSession).progress();
      return;
    }
    live.calls.delete(c);
    live.served++;
    clearTimeout(c.timer);
    if (m.type === 'failed') {
      c.reject(new Error(`milter filter ${this.name}: ${c.event} failed: ${m.why}`));
      return;
    }
    try {
      if (m.mods.length > 0) {
        if (c.event !== 'eom') throw new Error(`its worker sent modifications for ${c.event}`);
        replay(c.session as EomSession, m.mods);
      }
    } catch (err) {
      c.reject(new Error(`milter filter ${this.name}: ${c.event} failed: ${(err as Error).message}`));
      return;
    }
    c.resolve(m.verdict);
  }

  private proxy(): MilterFilter {
    const sid = this.nextSid++;
    this.sessions.set(sid, { gen: undefined });
    const out: Record<string, unknown> = {};
    for (const e of this.events) {
      if (e === 'close') continue;
      out[e] = async (s: MilterSession, ...args: unknown[]): Promise<MilterVerdict> => {
        const v = await this.call(sid, e, s, args);
        return e === 'abort' ? undefined : v;
      };
    }
    out.close = async (s: MilterSession): Promise<void> => {
      try {
        if (this.events.has('close')) await this.call(sid, 'close', s, []);
      } finally {
        this.drop(sid);
      }
    };
    return out as MilterFilter;
  }

  private drop(sid: number): void {
    const st = this.sessions.get(sid);
    this.sessions.delete(sid);
    const live = this.live;
    if (st?.gen !== undefined && live !== undefined && live.gen === st.gen && live.dead === undefined) {
      const req: HostRequest = { v: FILTER_IPC_VERSION, type: 'drop', sid };
      live.worker.postMessage(req);
    }
  }

  private call(sid: number, event: MilterEvent, session: MilterSession, args: unknown[]): Promise<NormalizedVerdict> {
    return new Promise<NormalizedVerdict>((resolveCall, rejectCall) => {
      const st = this.sessions.get(sid);
      const refuse = (why: string): void => rejectCall(new Error(`milter filter ${this.name}: ${event} failed: ${why}`));
      if (this.closed) return refuse('the milter filters are stopped');
      if (st === undefined) return refuse('called after close');
      if (st.gen !== undefined && (this.live === undefined || this.live.gen !== st.gen)) {
        // Connection-level close of a lost session has nothing to tell anyone.
        if (event === 'close') return resolveCall({ result: 'continue' });
        return refuse(`its state on this connection was lost when its worker ${this.lost.get(st.gen) ?? 'stopped'}`);
      }
      const live = this.live ?? this.start(this.loadMs());
      st.gen = live.gen;
      const c: PendingCall = { id: this.nextCall++, event, session, live, resolve: resolveCall, reject: rejectCall, timer: undefined };
      live.calls.add(c);
      c.timer = setTimeout(() => {
        live.calls.delete(c);
        this.fail(c, `it took longer than milter.filter_timeout (${this.timeoutMs} ms); its worker is stopped and started again`);
        this.kill(live, `was stopped: ${event} took longer than milter.filter_timeout (${this.timeoutMs} ms)`);
      }, this.timeoutMs);
      const req: HostRequest = {
        v: FILTER_IPC_VERSION, type: 'call', id: c.id, sid, event, args: args.map(encodeArg),
        session: { sender: session.sender, recipients: [...session.recipients] },
      };
      live.ready.then(() => {
        if (live.dead === undefined && live.calls.has(c)) live.worker.postMessage(req);
      }, (err: Error) => {
        if (!live.calls.delete(c)) return;
        this.fail(c, `the module could not be loaded again: ${err.message}`);
      });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const live = this.live;
    if (live === undefined) return;
    this.die(live, 'was stopped with the daemon');
    await live.worker.terminate().catch(() => undefined);
  }
}

function asBuffer(v: string | Uint8Array): string | Buffer {
  return typeof v === 'string' ? v : bytesOf(v);
}

/** The worker's recorded modifications, made on the real session in the order the filter made them. */
function replay(s: EomSession, mods: readonly Modification[]): void {
  for (const m of mods) {
    switch (m.op) {
      case 'addHeader': s.addHeader(m.name, asBuffer(m.value)); break;
      case 'insertHeader': s.insertHeader(m.index, m.name, asBuffer(m.value)); break;
      case 'changeHeader': s.changeHeader(m.name, m.index, m.value === null ? null : asBuffer(m.value)); break;
      case 'addRecipient': s.addRecipient(m.address, m.esmtpArgs); break;
      case 'deleteRecipient': s.deleteRecipient(m.address); break;
      case 'changeSender': s.changeSender(m.address, m.esmtpArgs); break;
      case 'replaceBody': s.replaceBody(asBuffer(m.chunk)); break;
      case 'quarantine': s.quarantine(m.reason); break;
    }
  }
}

/** Why a path cannot be a module, before a worker is started for it; undefined when it looks loadable. */
async function checkPath(path: string): Promise<string | undefined> {
  try {
    const st = await stat(path);
    return st.isFile() ? undefined : 'not a regular file';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? 'no such file' : `cannot be read: ${(err as Error).message}`;
  }
}

/**
 * Starts a worker per module and waits until each has loaded; see the file
 * header. Rejects with a MilterFilterLoadError (every worker already started
 * is ended first) when any module cannot be loaded.
 */
export async function loadMilterFilters(o: LoadMilterFiltersOptions): Promise<LoadedMilterFilters> {
  const modules = o.paths.map((p) => new FilterModule(basename(p), resolve(o.baseDir, p), o.timeoutMs, o.memoryMb ?? FILTER_MEMORY_MB, o.log));
  const problems: string[] = [];
  await Promise.all(modules.map(async (m, i) => {
    const where = `milter.filters[${i}]: ${o.paths[i] ?? ''}`;
    const bad = await checkPath(resolve(o.baseDir, o.paths[i] ?? ''));
    if (bad !== undefined) {
      problems[i] = `${where}: ${bad}`;
      return;
    }
    try {
      await m.load();
    } catch (err) {
      problems[i] = `${where}: ${(err as Error).message}`;
    }
  }));
  const close = async (): Promise<void> => {
    await Promise.all(modules.map((m) => m.close()));
  };
  const found = problems.filter((p) => p !== undefined);
  if (found.length > 0) {
    await close();
    throw new MilterFilterLoadError(found);
  }
  for (const m of modules) o.log.info(`milter filter ${m.name} loaded from ${o.paths[modules.indexOf(m)] ?? ''}`, { filter: m.name });
  return { factories: modules.map((m) => m.factory), close };
}
