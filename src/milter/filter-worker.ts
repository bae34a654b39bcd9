// The worker thread that runs one administrator's milter filter module
// (started by filter-host.ts, one per module in milter.filters). It imports
// the module, calls its factory once to learn which events the filter defines
// (eventsOf) and reports them ("loaded") or why it cannot ("load-failed");
// then it serves every MTA connection of the daemon, multiplexed by session
// id: the factory is called again, once per session, at that session's first
// call, and each call runs the instance's method and answers with the
// normalized verdict plus, in eom, the modifications the filter made, in
// order (the host replays them on the real EomSession).
//
// session.macro(name) is synchronous in the API, and the macros live in the
// host: the worker posts the question and blocks on an Atomics.wait until the
// host has put the answer on the macro port (receiveMessageOnPort). Only this
// thread blocks, never the daemon's; an answer that does not come within the
// wait is treated as "no such macro".
//
// Exports nothing; its only interface is the messages of filter-ipc.ts.
// Failures: a method that throws or rejects, a verdict verdictOf refuses, or a
// modification with bad arguments is answered "failed" with the reason (the
// host applies milter.on_filter_error). An uncaught exception, an unhandled
// rejection or process.exit() ends this thread; the host sees the exit.
//
// Why this is as safe as it is: nothing. The module runs with the daemon's
// privileges (root) and could do anything the daemon can; a worker thread
// isolates the event loop, crashes and run time, not privileges. Filters are
// code the administrator trusts, as Postfix trusts its content filters.
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { eventsOf, MILTER_EVENTS, verdictOf, type EomSession, type MilterFilter, type MilterFilterFactory, type MilterSession } from './api.js';
import {
  bytesOf, callValue, checkHostRequest, FILTER_IPC_VERSION,
  type CallRequest, type MacroAnswer, type Modification, type WorkerReply,
} from './filter-ipc.js';

export interface FilterWorkerData {
  readonly v: typeof FILTER_IPC_VERSION;
  /** Absolute path of the module. */
  readonly path: string;
  /** Int32Array over it: 0 while a macro lookup waits, 1 once the answer is on macroPort. */
  readonly macroFlag: SharedArrayBuffer;
  readonly macroPort: MessagePort;
  /** How long a macro lookup waits for the host. */
  readonly macroWaitMs: number;
}

const port = parentPort;
if (port === null) throw new Error('filter-worker.js runs only as a worker thread (src/milter/filter-host.ts starts it)');
const data = workerData as FilterWorkerData;
const flag = new Int32Array(data.macroFlag);
const post = (m: WorkerReply): void => port.postMessage(m);

/**
 * Node 20 keeps an ES module's syntax error location out of the error it
 * throws (it prints it on stderr); `node --check` prints it as "PATH:LINE".
 * Run once, at load, and only for a module that failed to parse.
 */
function syntaxErrorLine(path: string): string | undefined {
  const r = spawnSync(process.execPath, ['--check', path], { encoding: 'utf8', timeout: 10_000 });
  const escaped = path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^(?:file://)?${escaped}:(\\d+)\\s*$`, 'm').exec(r.stderr ?? '')?.[1];
}

function describeImportError(err: unknown): string {
  const e = err as Error;
  const message = e?.message ?? String(err);
  if (e instanceof SyntaxError) {
    const line = syntaxErrorLine(data.path);
    const hint = /Unexpected token 'export'|Cannot use import statement outside a module/.test(message)
      ? ' (an ES module needs the .mjs extension, or "type": "module" in a package.json beside it)'
      : '';
    return `syntax error${line !== undefined ? ` at line ${line}` : ''}: ${message}${hint}`;
  }
  return `cannot be loaded: ${message}`;
}

function aKindOf(x: unknown): string {
  if (x === null || x === undefined) return String(x);
  return /^[aeiou]/.test(typeof x) ? `an ${typeof x}` : `a ${typeof x}`;
}

async function load(): Promise<{ factory: MilterFilterFactory; events: string[] }> {
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(data.path).href)) as { default?: unknown };
  } catch (err) {
    throw new Error(describeImportError(err));
  }
  const factory = mod.default;
  if (typeof factory !== 'function') {
    throw new Error(`its default export is ${factory === undefined ? 'missing' : aKindOf(factory)}, not a function: write \`export default () => ({ … })\` (a MilterFilterFactory, docs/milter-api.md)`);
  }
  let probe: unknown;
  try {
    probe = (factory as () => unknown)();
  } catch (err) {
    throw new Error(`its factory threw: ${(err as Error)?.message ?? String(err)}`);
  }
  if (typeof probe !== 'object' || probe === null) throw new Error(`its factory returned ${aKindOf(probe)}, not a filter object`);
  const events = [...eventsOf(probe as MilterFilter)];
  if (events.length === 0) throw new Error(`its filter defines none of the methods ${MILTER_EVENTS.join(', ')}`);
  // The probe instance is dropped: sessions get their own, one each.
  return { factory: factory as MilterFilterFactory, events };
}

let macroSeq = 0;
function askMacro(id: number, name: string): string | undefined {
  const q = ++macroSeq;
  const deadline = Date.now() + data.macroWaitMs;
  Atomics.store(flag, 0, 0);
  post({ v: FILTER_IPC_VERSION, type: 'macro', id, q, name });
  for (;;) {
    Atomics.wait(flag, 0, 0, Math.max(0, deadline - Date.now()));
    // Reset before reading: an answer posted after this sets the flag again, so none is slept through.
    Atomics.store(flag, 0, 0);
    for (;;) {
      const got = receiveMessageOnPort(data.macroPort) as { message: MacroAnswer } | undefined;
      if (got === undefined) break;
      // Answers to lookups that gave up waiting earlier are skipped.
      if (got.message.q === q) return got.message.value ?? undefined;
    }
    if (Date.now() >= deadline) return undefined;
  }
}

function needString(what: string, x: unknown): string {
  if (typeof x !== 'string') throw new TypeError(`${what}: expected a string, got ${x === null ? 'null' : typeof x}`);
  return x;
}
function needValue(what: string, x: unknown): string | Uint8Array {
  if (typeof x === 'string' || x instanceof Uint8Array) return callValue(x) as string | Uint8Array;
  throw new TypeError(`${what}: expected a string or a Buffer, got ${x === null ? 'null' : typeof x}`);
}
function needIndex(what: string, x: unknown): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new TypeError(`${what}: expected an integer ≥ 0, got ${String(x)}`);
  return x;
}
function optArgs(what: string, x: unknown): { esmtpArgs?: string } {
  return x === undefined ? {} : { esmtpArgs: needString(what, x) };
}

/** The session a method sees; in eom with the modification helpers, which record into mods while the call runs. */
function sessionFor(req: CallRequest, mods: Modification[], open: () => boolean): MilterSession | EomSession {
  const base: MilterSession = {
    macro: (name: string) => askMacro(req.id, String(name)),
    recipients: Object.freeze([...req.session.recipients]),
    sender: req.session.sender,
  };
  if (req.event !== 'eom') return Object.freeze(base);
  const record = (m: Modification): void => {
    // A modification after eom returned has nowhere to go: a bug in the filter, said loudly.
    if (!open()) throw new TypeError(`${m.op} after eom returned: modifications are taken only while eom runs`);
    mods.push(m);
  };
  const eom: EomSession = {
    ...base,
    addHeader: (name, value) => record({ op: 'addHeader', name: needString('addHeader name', name), value: needValue('addHeader value', value) }),
    insertHeader: (index, name, value) => record({ op: 'insertHeader', index: needIndex('insertHeader index', index), name: needString('insertHeader name', name), value: needValue('insertHeader value', value) }),
    changeHeader: (name, index, value) => record({
      op: 'changeHeader', name: needString('changeHeader name', name), index: needIndex('changeHeader index', index),
      value: value === null ? null : needValue('changeHeader value', value),
    }),
    addRecipient: (address, esmtpArgs) => record({ op: 'addRecipient', address: needString('addRecipient address', address), ...optArgs('addRecipient esmtpArgs', esmtpArgs) }),
    deleteRecipient: (address) => record({ op: 'deleteRecipient', address: needString('deleteRecipient address', address) }),
    changeSender: (address, esmtpArgs) => record({ op: 'changeSender', address: needString('changeSender address', address), ...optArgs('changeSender esmtpArgs', esmtpArgs) }),
    replaceBody: (chunk) => record({ op: 'replaceBody', chunk: needValue('replaceBody chunk', chunk) }),
    quarantine: (reason) => record({ op: 'quarantine', reason: needString('quarantine reason', reason) }),
    progress: () => {
      if (open()) post({ v: FILTER_IPC_VERSION, type: 'progress', id: req.id });
    },
  };
  return Object.freeze(eom);
}

/** Bytes arrive as Uint8Array; the API promises Buffers. */
function argsOf(req: CallRequest): unknown[] {
  return req.args.map((a) => (a instanceof Uint8Array ? bytesOf(a) : a));
}

const loading = load();
const instances = new Map<number, MilterFilter>();

function instanceFor(factory: MilterFilterFactory, sid: number): MilterFilter {
  let f = instances.get(sid);
  if (f === undefined) {
    try {
      f = factory();
    } catch (err) {
      throw new Error(`the factory threw: ${(err as Error)?.message ?? String(err)}`);
    }
    if (typeof f !== 'object' || f === null) throw new Error('the factory returned no filter object');
    instances.set(sid, f);
  }
  return f;
}

async function serve(req: CallRequest): Promise<void> {
  const mods: Modification[] = [];
  let open = true;
  try {
    const { factory } = await loading;
    const filter = instanceFor(factory, req.sid);
    const method = (filter as Record<string, unknown>)[req.event];
    // An instance that lacks a method the first one had has no opinion on that event.
    const got: unknown = typeof method === 'function'
      ? await (method as (...a: unknown[]) => unknown).call(filter, sessionFor(req, mods, () => open), ...argsOf(req))
      : undefined;
    const verdict = req.event === 'abort' || req.event === 'close' ? verdictOf(undefined) : verdictOf(got);
    post({ v: FILTER_IPC_VERSION, type: 'result', id: req.id, verdict, mods });
  } catch (err) {
    const why = err instanceof Error ? `${err.name === 'Error' ? '' : `${err.name}: `}${err.message}` : `threw ${String(err)}`;
    post({ v: FILTER_IPC_VERSION, type: 'failed', id: req.id, why });
  } finally {
    open = false;
    if (req.event === 'close') instances.delete(req.sid);
  }
}

loading.then(
  ({ events }) => post({ v: FILTER_IPC_VERSION, type: 'loaded', events: events as CallRequest['event'][] }),
  (err: unknown) => post({ v: FILTER_IPC_VERSION, type: 'load-failed', why: (err as Error).message }),
);

port.on('message', (raw: unknown) => {
  const req = checkHostRequest(raw);
  if (typeof req === 'string') {
    // The host is our own code: a bad request is a bug, worth a line on stderr (the host logs it).
    console.error(`filter worker: refused a request: ${req}`);
    return;
  }
  if (req.type === 'drop') {
    instances.delete(req.sid);
    return;
  }
  void serve(req);
});
