// The messages between the filter host (filter-host.ts, the daemon's main
// thread) and a filter's worker thread (filter-worker.ts): a versioned
// discriminated union, checked field by field on receipt. The worker runs an
// administrator's module, which can reach `parentPort` itself and post what it
// likes; so every message the host acts on is checked here, once, and the rest
// of the code sees only the types. Carried by postMessage (structured clone):
// bytes travel as Uint8Array and are turned back into Buffers by the receiver
// (bytesOf), copied to their exact length by the sender (copyBytes) so that a
// small slice of a large packet buffer does not drag the whole buffer along.
//
// Exports: FILTER_IPC_VERSION, the message types, checkWorkerReply (the typed
// message or a reason string; never throws), checkHostRequest (the same, on
// the worker's side), copyBytes, bytesOf, callValue.
import { MILTER_EVENTS, verdictOf, type MilterEvent, type NormalizedVerdict } from './api.js';

/** Bumped whenever a field changes meaning or shape; a mismatch is refused on both sides. */
export const FILTER_IPC_VERSION = 1;

/** What the worker needs to know of the host's session for one call (macros are asked for on demand). */
export interface SessionSnapshot {
  readonly sender: string | undefined;
  readonly recipients: readonly string[];
}

/** A Buffer or string argument as it crosses: strings as strings, bytes as an exact-length Uint8Array. */
export type CallValue = string | number | null | Uint8Array | readonly string[] | { readonly [k: string]: string | number };

export interface CallRequest {
  readonly v: typeof FILTER_IPC_VERSION;
  readonly type: 'call';
  readonly id: number;
  readonly sid: number;
  readonly event: MilterEvent;
  readonly args: readonly CallValue[];
  readonly session: SessionSnapshot;
}

/** The connection ended: forget its filter instance (after its close call, if the filter has one). */
export interface DropRequest {
  readonly v: typeof FILTER_IPC_VERSION;
  readonly type: 'drop';
  readonly sid: number;
}

export type HostRequest = CallRequest | DropRequest;

/** A modification made in eom, replayed by the host on the real EomSession in the order made. */
export type Modification =
  | { readonly op: 'addHeader'; readonly name: string; readonly value: string | Uint8Array }
  | { readonly op: 'insertHeader'; readonly index: number; readonly name: string; readonly value: string | Uint8Array }
  | { readonly op: 'changeHeader'; readonly name: string; readonly index: number; readonly value: string | Uint8Array | null }
  | { readonly op: 'addRecipient'; readonly address: string; readonly esmtpArgs?: string }
  | { readonly op: 'deleteRecipient'; readonly address: string }
  | { readonly op: 'changeSender'; readonly address: string; readonly esmtpArgs?: string }
  | { readonly op: 'replaceBody'; readonly chunk: string | Uint8Array }
  | { readonly op: 'quarantine'; readonly reason: string };

export interface LoadedReply {
  readonly v: typeof FILTER_IPC_VERSION;
  readonly type: 'loaded';
  readonly events: readonly MilterEvent[];
}

export interface LoadFailedReply {
  readonly v: typeof FILTER_IPC_VERSION;
  readonly type: 'load-failed';
  readonly why: string;
}

export interface ResultReply {
  readonly v: typeof FILTER_IPC_VERSION;
  readonly type: 'result';
  readonly id: number;
  readonly verdict: NormalizedVerdict;
  readonly mods: readonly Modification[];
}

export interface FailedReply {
  readonly v: typeof FILTER_IPC_VERSION;
  readonly type: 'failed';
  readonly id: number;
  readonly why: string;
}

/** eom's progress(): passed on to the MTA at once, not with the verdict. */
export interface ProgressReply {
  readonly v: typeof FILTER_IPC_VERSION;
  readonly type: 'progress';
  readonly id: number;
}

/** session.macro(name) during call id: the worker waits (Atomics) for the answer on its macro port. */
export interface MacroRequest {
  readonly v: typeof FILTER_IPC_VERSION;
  readonly type: 'macro';
  readonly id: number;
  /** The lookup's number, echoed in the answer, so that a late answer to an abandoned lookup is never taken for the next one's. */
  readonly q: number;
  readonly name: string;
}

/** The host's answer on the macro port. */
export interface MacroAnswer {
  readonly q: number;
  readonly value: string | null;
}

export type WorkerReply = LoadedReply | LoadFailedReply | ResultReply | FailedReply | ProgressReply | MacroRequest;

/** An exact-length copy, so the clone carries only these bytes. */
export function copyBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

/** A received Uint8Array as a Buffer over the same memory. */
export function bytesOf(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/** An argument or modification value ready to cross: Buffers copied, the rest as is. */
export function callValue(x: string | Buffer | Uint8Array | null): string | Uint8Array | null {
  return x instanceof Uint8Array ? copyBytes(x) : x;
}

const EVENTS: ReadonlySet<string> = new Set(MILTER_EVENTS);
type Obj = Record<string, unknown>;
const isObject = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);
const isString = (x: unknown): x is string => typeof x === 'string';
const isId = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
const isValue = (x: unknown): boolean => isString(x) || x instanceof Uint8Array;

function envelopeOf(raw: unknown): { m: Obj; type: string } | string {
  if (!isObject(raw)) return 'not an object';
  if (raw.v !== FILTER_IPC_VERSION) return `version ${JSON.stringify(raw.v)}, expected ${FILTER_IPC_VERSION}`;
  if (!isString(raw.type)) return 'no type';
  return { m: raw, type: raw.type };
}

function checkModification(x: unknown, i: number): string | undefined {
  const bad = (what: string): string => `mods[${i}]: ${what}`;
  if (!isObject(x) || !isString(x.op)) return bad('not a modification');
  const optArgs = x.esmtpArgs === undefined || isString(x.esmtpArgs);
  switch (x.op) {
    case 'addHeader':
      return isString(x.name) && isValue(x.value) ? undefined : bad('addHeader: name/value');
    case 'insertHeader':
      return isId(x.index) && isString(x.name) && isValue(x.value) ? undefined : bad('insertHeader: index/name/value');
    case 'changeHeader':
      return isString(x.name) && isId(x.index) && (x.value === null || isValue(x.value)) ? undefined : bad('changeHeader: name/index/value');
    case 'addRecipient':
    case 'changeSender':
      return isString(x.address) && optArgs ? undefined : bad(`${x.op}: address/esmtpArgs`);
    case 'deleteRecipient':
      return isString(x.address) ? undefined : bad('deleteRecipient: address');
    case 'replaceBody':
      return isValue(x.chunk) ? undefined : bad('replaceBody: chunk');
    case 'quarantine':
      return isString(x.reason) ? undefined : bad('quarantine: reason');
    default:
      return bad(`unknown op ${JSON.stringify(x.op)}`);
  }
}

/** A worker's message as the host may act on it, or why not. */
export function checkWorkerReply(raw: unknown): WorkerReply | string {
  const e = envelopeOf(raw);
  if (typeof e === 'string') return e;
  const { m } = e;
  switch (e.type) {
    case 'loaded':
      return Array.isArray(m.events) && m.events.every((x) => isString(x) && EVENTS.has(x)) ? (m as unknown as LoadedReply) : 'loaded: events: not a list of milter events';
    case 'load-failed':
      return isString(m.why) ? (m as unknown as LoadFailedReply) : 'load-failed: why: not a string';
    case 'failed':
      return isId(m.id) && isString(m.why) ? (m as unknown as FailedReply) : 'failed: id/why: bad fields';
    case 'progress':
      return isId(m.id) ? (m as unknown as ProgressReply) : 'progress: id: not an id';
    case 'macro':
      return isId(m.id) && isId(m.q) && isString(m.name) ? (m as unknown as MacroRequest) : 'macro: id/q/name: bad fields';
    case 'result': {
      if (!isId(m.id)) return 'result: id: not an id';
      let verdict: NormalizedVerdict;
      try {
        verdict = verdictOf(m.verdict);
      } catch (err) {
        return `result: verdict: ${(err as Error).message}`;
      }
      if (!Array.isArray(m.mods)) return 'result: mods: not a list';
      const why = m.mods.map(checkModification).find((x) => x !== undefined);
      // Without the absent fields, so that the verdict reads as the filter wrote it.
      const compact: NormalizedVerdict = {
        result: verdict.result,
        ...(verdict.code !== undefined ? { code: verdict.code } : {}),
        ...(verdict.xcode !== undefined ? { xcode: verdict.xcode } : {}),
        ...(verdict.text !== undefined ? { text: verdict.text } : {}),
      };
      return why === undefined ? { v: FILTER_IPC_VERSION, type: 'result', id: m.id, verdict: compact, mods: m.mods as Modification[] } : `result: ${why}`;
    }
    default:
      return `unknown message type ${JSON.stringify(e.type)}`;
  }
}

/** The host's message as the worker may act on it, or why not. */
export function checkHostRequest(raw: unknown): HostRequest | string {
  const e = envelopeOf(raw);
  if (typeof e === 'string') return e;
  const { m } = e;
  if (e.type === 'drop') return isId(m.sid) ? (m as unknown as DropRequest) : 'drop: sid: not an id';
  if (e.type !== 'call') return `unknown message type ${JSON.stringify(e.type)}`;
  if (!isId(m.id) || !isId(m.sid)) return 'call: id/sid: not ids';
  if (!isString(m.event) || !EVENTS.has(m.event)) return `call: event ${JSON.stringify(m.event)}: not a milter event`;
  if (!Array.isArray(m.args)) return 'call: args: not a list';
  const s = m.session;
  if (!isObject(s) || !(s.sender === undefined || isString(s.sender)) || !Array.isArray(s.recipients) || !s.recipients.every(isString)) return 'call: session: bad fields';
  return m as unknown as CallRequest;
}
