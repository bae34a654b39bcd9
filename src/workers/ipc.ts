// The messages between the master and a worker, versioned and checked at
// runtime on receipt (a worker is a separate, less trusted process; a master
// from another build must be refused, not misread). Carried over Node's IPC
// channel with "advanced" serialization, so message bytes travel as binary.
import type { Destination } from '../classify/rules.js';
import type { Status } from '../mail/status.js';
import type { CopyRecipient } from '../deliver/types.js';

export const IPC_VERSION = 1;

export interface LeafOptions {
  readonly hostname: string;
  readonly fsync: boolean;
  readonly mboxLockAttempts: number;
  readonly mboxLockDelayMs: number;
  readonly mboxStaleLockMs: number;
  /** Pipe deliveries: wall-clock limit per command; default PIPE_TIMEOUT_MS (1000 s, Postfix command_time_limit). */
  readonly pipeTimeoutMs?: number;
  /** Pipe deliveries: an exit code outside the sysexits table defers ('temporary', default) or bounces ('permanent', Postfix). */
  readonly pipeUnknownExit?: 'temporary' | 'permanent';
}

export interface DeliverRequest {
  readonly v: 1;
  readonly type: 'deliver';
  readonly id: number;
  readonly sender: string;
  readonly arrival: number;
  readonly recipient: CopyRecipient;
  /** Trace headers for this recipient. */
  readonly header: Uint8Array;
  /** Message, LF line endings. */
  readonly body: Uint8Array;
  /** Absolute paths, templates expanded. */
  readonly destinations: readonly Destination[];
  readonly options: LeafOptions;
}

export interface ShutdownRequest {
  readonly v: 1;
  readonly type: 'shutdown';
}

export type MasterMessage = DeliverRequest | ShutdownRequest;

export interface DeliveryResult {
  readonly status: Status;
  readonly path?: string;
}

export interface ReadyReply {
  readonly v: 1;
  readonly type: 'ready';
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

export interface DeliverReply {
  readonly v: 1;
  readonly type: 'delivered';
  readonly id: number;
  readonly results: readonly DeliveryResult[];
  /** Time the worker spent on the request (the leaves' work), ms. */
  readonly elapsedMs: number;
}

export type WorkerMessage = ReadyReply | DeliverReply;

const isObject = (m: unknown): m is Record<string, unknown> => typeof m === 'object' && m !== null;

/** Returns the message if it is a well-formed MasterMessage of this version, else a reason. */
export function checkMasterMessage(m: unknown): MasterMessage | string {
  if (!isObject(m)) return 'not an object';
  if (m.v !== IPC_VERSION) return `IPC version ${String(m.v)}, expected ${IPC_VERSION}`;
  if (m.type === 'shutdown') return m as unknown as ShutdownRequest;
  if (m.type !== 'deliver') return `unknown message type ${String(m.type)}`;
  if (typeof m.id !== 'number' || typeof m.sender !== 'string' || typeof m.arrival !== 'number') return 'deliver: bad envelope fields';
  if (!isObject(m.recipient) || typeof m.recipient.address !== 'string') return 'deliver: bad recipient';
  if (!(m.header instanceof Uint8Array) || !(m.body instanceof Uint8Array)) return 'deliver: header/body not binary';
  if (!Array.isArray(m.destinations) || !m.destinations.every((d) => isObject(d) && typeof d.kind === 'string')) return 'deliver: bad destinations';
  if (!isObject(m.options)) return 'deliver: no options';
  return m as unknown as DeliverRequest;
}

export function checkWorkerMessage(m: unknown): WorkerMessage | string {
  if (!isObject(m)) return 'not an object';
  if (m.v !== IPC_VERSION) return `IPC version ${String(m.v)}, expected ${IPC_VERSION}`;
  if (m.type === 'ready') {
    return typeof m.pid === 'number' && typeof m.uid === 'number' && typeof m.gid === 'number' ? (m as unknown as ReadyReply) : 'ready: bad fields';
  }
  if (m.type === 'delivered') {
    if (typeof m.id !== 'number' || !Array.isArray(m.results) || typeof m.elapsedMs !== 'number') return 'delivered: bad fields';
    const good = m.results.every((r) => isObject(r) && isObject(r.status) && typeof r.status.code === 'string' && typeof r.status.text === 'string');
    return good ? (m as unknown as DeliverReply) : 'delivered: bad results';
  }
  return `unknown message type ${String(m.type)}`;
}
