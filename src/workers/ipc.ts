// The messages between the master and a worker: a versioned discriminated
// union, checked field by field at runtime on receipt. A worker is a
// separate, less trusted process (it runs as a mail user and runs their
// commands), and a master or worker from another build must be refused, not
// misread: every field a receiver acts on is checked here, once, and the rest
// of the code sees only the types. Carried over Node's IPC channel with
// "advanced" serialization (V8's structured clone), so message bytes travel
// as binary and numbers as numbers.
//
// Exports: IPC_VERSION, the message types, checkMasterMessage,
// checkWorkerMessage (each returns the typed message or a reason string;
// never throws), requestIdOf (to refuse a malformed request by its id), and
// LeafOptions/DeliveryResult (re-exported from deliver/).
//
// Hand-written guards rather than a schema library: they run twice per
// delivery on the LMTP fast path and in every worker, whose memory we count
// (a schema library would be most of a worker's heap).
import type { LeafOptions, WorkerDestination } from '../deliver/execute.js';
import type { CopyRecipient, Delivery } from '../deliver/types.js';
import { isRedeliveryToken } from '../mail/redelivery.js';
import { isEnhancedCode } from '../mail/status.js';

export type { LeafOptions, WorkerDestination } from '../deliver/execute.js';
export type DeliveryResult = Delivery;

/** Bumped whenever a field changes meaning or shape; a mismatch is refused on both sides. */
export const IPC_VERSION = 3;

export interface DeliverRequest {
  readonly v: typeof IPC_VERSION;
  readonly type: 'deliver';
  readonly id: number;
  readonly sender: string;
  /** Arrival, ms since the epoch. */
  readonly arrival: number;
  readonly recipient: CopyRecipient;
  /** Trace headers for this recipient. */
  readonly header: Uint8Array;
  /** Message, LF line endings. */
  readonly body: Uint8Array;
  /** Absolute paths, templates expanded. */
  readonly destinations: readonly WorkerDestination[];
  readonly options: LeafOptions;
  /** A queued delivery: one token per destination (src/mail/redelivery.ts); check: look for them before writing. */
  readonly redelivery?: RequestRedelivery;
}

export interface RequestRedelivery {
  readonly tokens: readonly string[];
  readonly check: boolean;
}

export interface ShutdownRequest {
  readonly v: typeof IPC_VERSION;
  readonly type: 'shutdown';
}

export type MasterMessage = DeliverRequest | ShutdownRequest;

export interface ReadyReply {
  readonly v: typeof IPC_VERSION;
  readonly type: 'ready';
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

export interface DeliverReply {
  readonly v: typeof IPC_VERSION;
  readonly type: 'delivered';
  readonly id: number;
  /** One per destination of the request, in order. */
  readonly results: readonly DeliveryResult[];
  /** Time the worker spent on the request (the leaves' work), ms. */
  readonly elapsedMs: number;
}

/** A deliver request the worker could not act on (malformed or from another build): the master fails it 4.3.0. */
export interface RefusedReply {
  readonly v: typeof IPC_VERSION;
  readonly type: 'refused';
  readonly id: number;
  readonly reason: string;
}

export type WorkerMessage = ReadyReply | DeliverReply | RefusedReply;

type Fields = Record<string, unknown>;

const isObject = (m: unknown): m is Fields => typeof m === 'object' && m !== null && !Array.isArray(m);
const isString = (v: unknown): v is string => typeof v === 'string';
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isAbsolutePath = (v: unknown): v is string => typeof v === 'string' && v.startsWith('/') && !v.includes('\0');

/** Checks the version and returns the type, or a reason. */
function envelopeOf(m: unknown): { m: Fields; type: unknown } | string {
  if (!isObject(m)) return 'not an object';
  if (m.v !== IPC_VERSION) return `IPC version ${String(m.v)}, expected ${IPC_VERSION}`;
  return { m, type: m.type };
}

function checkRecipient(r: unknown): string | undefined {
  if (!isObject(r)) return 'recipient: not an object';
  for (const k of ['address', 'local', 'user', 'extension', 'domain'] as const) {
    if (!isString(r[k])) return `recipient.${k}: not a string`;
  }
  return undefined;
}

function checkDestination(d: unknown, i: number): string | undefined {
  const where = `destinations[${i}]`;
  if (!isObject(d)) return `${where}: not an object`;
  switch (d.kind) {
    case 'maildir':
      if (!isAbsolutePath(d.path)) return `${where}.path: not an absolute path`;
      if (d.folder !== undefined && !isString(d.folder)) return `${where}.folder: not a string`;
      return undefined;
    case 'mbox':
      return isAbsolutePath(d.path) ? undefined : `${where}.path: not an absolute path`;
    case 'pipe':
      if (!Array.isArray(d.argv) || d.argv.length === 0 || !d.argv.every(isString) || d.argv[0] === '') return `${where}.argv: not a non-empty list of strings`;
      return undefined;
    case 'discard':
      return undefined;
    default:
      return `${where}.kind: ${JSON.stringify(d.kind)} is not executed by a worker`;
  }
}

function checkOptions(o: unknown): string | undefined {
  if (!isObject(o)) return 'options: not an object';
  if (!isString(o.hostname) || o.hostname === '') return 'options.hostname: not a name';
  if (typeof o.fsync !== 'boolean') return 'options.fsync: not a boolean';
  for (const k of ['mboxLockAttempts', 'mboxLockDelayMs', 'mboxStaleLockMs'] as const) {
    if (!isCount(o[k])) return `options.${k}: not a count`;
  }
  if (o.pipeTimeoutMs !== undefined && !(isCount(o.pipeTimeoutMs) && o.pipeTimeoutMs > 0)) return 'options.pipeTimeoutMs: not a positive count';
  if (o.pipeUnknownExit !== undefined && o.pipeUnknownExit !== 'temporary' && o.pipeUnknownExit !== 'permanent') return 'options.pipeUnknownExit: not temporary|permanent';
  return undefined;
}

function checkRedelivery(r: unknown, destinations: number): string | undefined {
  if (r === undefined) return undefined;
  if (!isObject(r)) return 'redelivery: not an object';
  if (typeof r.check !== 'boolean') return 'redelivery.check: not a boolean';
  if (!Array.isArray(r.tokens) || r.tokens.length !== destinations) return 'redelivery.tokens: not one per destination';
  return r.tokens.every(isRedeliveryToken) ? undefined : 'redelivery.tokens: not redelivery tokens';
}

/** The id of a deliver request that failed its check, so the worker can refuse it by id (undefined: none to answer). */
export function requestIdOf(raw: unknown): number | undefined {
  return isObject(raw) && raw.type === 'deliver' && isCount(raw.id) ? raw.id : undefined;
}

/** The master's message as the worker may act on it, or why not. */
export function checkMasterMessage(raw: unknown): MasterMessage | string {
  const e = envelopeOf(raw);
  if (typeof e === 'string') return e;
  const { m } = e;
  if (e.type === 'shutdown') return { v: IPC_VERSION, type: 'shutdown' };
  if (e.type !== 'deliver') return `unknown message type ${JSON.stringify(e.type)}`;
  if (!isCount(m.id)) return 'deliver: id: not a count';
  if (!isString(m.sender)) return 'deliver: sender: not a string';
  if (!isFiniteNumber(m.arrival)) return 'deliver: arrival: not a time';
  if (!(m.header instanceof Uint8Array) || !(m.body instanceof Uint8Array)) return 'deliver: header/body: not binary';
  const why = checkRecipient(m.recipient)
    ?? (Array.isArray(m.destinations) && m.destinations.length > 0 ? m.destinations.map(checkDestination).find((x) => x !== undefined) : 'destinations: not a non-empty list')
    ?? checkOptions(m.options)
    ?? checkRedelivery(m.redelivery, (m.destinations as unknown[]).length);
  return why === undefined ? (m as unknown as DeliverRequest) : `deliver: ${why}`;
}

function checkResult(r: unknown, i: number): string | undefined {
  if (!isObject(r) || !isObject(r.status)) return `results[${i}]: no status`;
  const s = r.status;
  if (!isString(s.code) || !isEnhancedCode(s.code)) return `results[${i}].status.code: not an enhanced status code`;
  if (!isString(s.text)) return `results[${i}].status.text: not a string`;
  if (s.reply !== undefined && !(isCount(s.reply) && s.reply >= 200 && s.reply < 600)) return `results[${i}].status.reply: not a reply number`;
  if (r.path !== undefined && !isString(r.path)) return `results[${i}].path: not a string`;
  return undefined;
}

/** A worker's message as the master may act on it, or why not. */
export function checkWorkerMessage(raw: unknown): WorkerMessage | string {
  const e = envelopeOf(raw);
  if (typeof e === 'string') return e;
  const { m } = e;
  if (e.type === 'ready') {
    return isCount(m.pid) && isCount(m.uid) && isCount(m.gid) ? (m as unknown as ReadyReply) : 'ready: pid/uid/gid: not counts';
  }
  if (e.type === 'refused') {
    return isCount(m.id) && isString(m.reason) ? (m as unknown as RefusedReply) : 'refused: id/reason: bad fields';
  }
  if (e.type !== 'delivered') return `unknown message type ${JSON.stringify(e.type)}`;
  if (!isCount(m.id)) return 'delivered: id: not a count';
  if (!isFiniteNumber(m.elapsedMs) || m.elapsedMs < 0) return 'delivered: elapsedMs: not a duration';
  if (!Array.isArray(m.results)) return 'delivered: results: not a list';
  const why = m.results.map(checkResult).find((x) => x !== undefined);
  return why === undefined ? (m as unknown as DeliverReply) : `delivered: ${why}`;
}
