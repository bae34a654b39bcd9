// The Sendmail milter wire format, protocol version 6 as Postfix (>= 2.6,
// src/milter/milter8.c) and Sendmail 8.14 (libmilter) speak it: the one
// parser and encoder for it, both directions. Pure, no I/O.
//
// A packet is a 4-byte big-endian length, then that many bytes: one command
// byte and its data. Strings are NUL-terminated; numbers are big-endian
// uint32 (uint16 for the CONNECT port).
//
// Exports:
//  - SMFIF (actions a milter may ask for), SMFIP (protocol steps: events the
//    MTA need not send, replies the milter will not send, extensions),
//    MACRO_STAGES (the SMFIM_* numbers of SMFIR_SETSYMLIST);
//  - PacketDecoder: chunks in, packets out (incremental: one packet across
//    any number of chunks, or many packets in one chunk);
//  - MtaCommand + parseCommand / encodeCommand: what the MTA sends (OPTNEG,
//    MACRO, CONNECT, HELO, MAIL, RCPT, HEADER, EOH, BODY, BODYEOB, ABORT, QUIT,
//    QUIT_NC, DATA, UNKNOWN); encodeCommand is the MTA side, for tests and
//    the benchmark, which play Postfix;
//  - MilterReply + parseReply / encodeReply: what the milter answers (every
//    decision and every end-of-message modification, SMFIR_*);
//  - negotiate: the milter's OPTNEG answer from the MTA's offer and what the
//    filters need; formatReplyCode: "550 5.7.1 text" as SMFIR_REPLYCODE wants it.
//
// Failure contract: nothing here throws on bad input. The decoder reports a
// length of 0 or over the packet limit as an `error` item and stops (there
// is no way back into step); parseCommand/parseReply return { kind: 'error',
// reason } naming the command and the field for an unknown command byte, a
// string without its NUL, a number cut short or bytes left over. Encoders
// throw a TypeError only for a caller's bug (a NUL inside a string field, a
// field too large for a packet).
//
// Bytes are kept as they are: header values and body chunks stay Buffers
// (never decoded, never re-folded: a changed byte breaks DKIM signatures);
// envelope strings, macros and names are read as UTF-8 (SMTPUTF8 addresses).

/** Actions (SMFIF_*): what a milter may do at end of message. */
export const SMFIF = {
  ADDHDRS: 0x01,
  CHGBODY: 0x02,
  ADDRCPT: 0x04,
  DELRCPT: 0x08,
  CHGHDRS: 0x10,
  QUARANTINE: 0x20,
  CHGFROM: 0x40,
  ADDRCPT_PAR: 0x80,
  SETSYMLIST: 0x100,
} as const;

/** Protocol steps (SMFIP_*): NO* = do not send the event, NR_* = the milter sends no reply to it. */
export const SMFIP = {
  NOCONNECT: 0x1,
  NOHELO: 0x2,
  NOMAIL: 0x4,
  NORCPT: 0x8,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  /** Also called SMFIP_NOHREPL. */
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  /** The MTA understands SMFIR_SKIP. */
  SKIP: 0x400,
  /** The milter wants recipients the MTA already rejected. */
  RCPT_REJ: 0x800,
  NR_CONN: 0x1000,
  NR_HELO: 0x2000,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_DATA: 0x10000,
  NR_UNKN: 0x20000,
  NR_EOH: 0x40000,
  NR_BODY: 0x80000,
  /** Header values are sent with their leading space (not one eaten after the colon), and taken back as given. */
  HDR_LEADSPC: 0x100000,
} as const;

/** SMFIM_*: macro stages as SMFIR_SETSYMLIST (the OPTNEG reply's tail) numbers them. */
export const MACRO_STAGES = { connect: 0, helo: 1, envfrom: 2, envrcpt: 3, data: 4, eom: 5, eoh: 6 } as const;
export type MacroStageName = keyof typeof MACRO_STAGES;

/** The highest protocol version we speak. */
export const MILTER_VERSION = 6;
/** Largest body chunk an MTA sends and Postfix reads back (MILTER_CHUNK_SIZE); replacement bodies are cut to it. */
export const MAX_CHUNK = 65535;

export type ConnectFamily = 'inet' | 'inet6' | 'unix' | 'unknown';
const FAMILY_BYTE: Record<ConnectFamily, string> = { inet: '4', inet6: '6', unix: 'L', unknown: 'U' };
const FAMILY_OF: Record<string, ConnectFamily> = { '4': 'inet', '6': 'inet6', L: 'unix', U: 'unknown' };

/** What the MTA sends, one record per packet. */
export type MtaCommand =
  | { readonly kind: 'optneg'; readonly version: number; readonly actions: number; readonly protocol: number }
  /** stage: the command byte (as a one-char string) the macros come before: C, H, M, R, T, N, E, L, B, U. */
  | { readonly kind: 'macro'; readonly stage: string; readonly macros: readonly (readonly [string, string])[] }
  | { readonly kind: 'connect'; readonly hostname: string; readonly family: ConnectFamily; readonly port: number; readonly address: string }
  | { readonly kind: 'helo'; readonly name: string }
  /** sender as sent: with its angle brackets ("<a@b>", "<>"); args the ESMTP parameters. */
  | { readonly kind: 'mail'; readonly sender: string; readonly args: readonly string[] }
  | { readonly kind: 'rcpt'; readonly recipient: string; readonly args: readonly string[] }
  | { readonly kind: 'header'; readonly name: string; readonly value: Buffer }
  | { readonly kind: 'eoh' }
  | { readonly kind: 'body'; readonly chunk: Buffer }
  /** End of body; Sendmail may put a last chunk in it (Postfix sends it as BODY first). */
  | { readonly kind: 'eob'; readonly chunk: Buffer }
  | { readonly kind: 'abort' }
  | { readonly kind: 'quit' }
  /** Quit this SMTP session, but a new one follows on this milter connection. */
  | { readonly kind: 'quit_nc' }
  | { readonly kind: 'data' }
  | { readonly kind: 'unknown'; readonly command: string };

/** What the milter answers. */
export type MilterReply =
  /** macros: SMFIR_SETSYMLIST's lists by stage (only with SMFIF_SETSYMLIST). */
  | { readonly kind: 'optneg'; readonly version: number; readonly actions: number; readonly protocol: number; readonly macros?: readonly (readonly [MacroStageName, string])[] }
  | { readonly kind: 'continue' | 'accept' | 'reject' | 'tempfail' | 'discard' | 'skip' | 'progress' | 'shutdown' | 'conn_fail' }
  /** text: the whole reply, "550 5.7.1 No thanks" (see formatReplyCode: '%' doubled, as Sendmail reads it as a format). */
  | { readonly kind: 'replycode'; readonly text: string }
  | { readonly kind: 'addheader'; readonly name: string; readonly value: Buffer }
  /** index: 0 = before the first header. */
  | { readonly kind: 'insheader'; readonly index: number; readonly name: string; readonly value: Buffer }
  /** index: 1-based among headers of that name; an empty value deletes the header. */
  | { readonly kind: 'chgheader'; readonly index: number; readonly name: string; readonly value: Buffer }
  | { readonly kind: 'addrcpt'; readonly recipient: string }
  | { readonly kind: 'addrcpt_par'; readonly recipient: string; readonly args: string }
  | { readonly kind: 'delrcpt'; readonly recipient: string }
  | { readonly kind: 'chgfrom'; readonly sender: string; readonly args?: string }
  | { readonly kind: 'replbody'; readonly chunk: Buffer }
  | { readonly kind: 'quarantine'; readonly reason: string };

export interface ProtocolError {
  readonly kind: 'error';
  readonly reason: string;
}

export type DecodedPacket = { readonly kind: 'packet'; readonly command: number; readonly data: Buffer } | ProtocolError;

const CMD = {
  optneg: 0x4f, macro: 0x44, connect: 0x43, helo: 0x48, mail: 0x4d, rcpt: 0x52, header: 0x4c, eoh: 0x4e,
  body: 0x42, eob: 0x45, abort: 0x41, quit: 0x51, quit_nc: 0x4b, data: 0x54, unknown: 0x55,
} as const satisfies Record<MtaCommand['kind'], number>;

const RPL = {
  optneg: 0x4f, continue: 0x63, accept: 0x61, reject: 0x72, tempfail: 0x74, discard: 0x64, skip: 0x73,
  progress: 0x70, shutdown: 0x34, conn_fail: 0x66, replycode: 0x79, addheader: 0x68, insheader: 0x69,
  chgheader: 0x6d, addrcpt: 0x2b, addrcpt_par: 0x32, delrcpt: 0x2d, chgfrom: 0x65, replbody: 0x62,
  quarantine: 0x71,
} as const satisfies Record<MilterReply['kind'], number>;

const CMD_KIND = new Map<number, MtaCommand['kind']>(Object.entries(CMD).map(([k, v]) => [v, k as MtaCommand['kind']]));
const RPL_KIND = new Map<number, MilterReply['kind']>(Object.entries(RPL).map(([k, v]) => [v, k as MilterReply['kind']]));

/** A command byte for messages: 'M' (0x4d). */
export function describeByte(b: number): string {
  return b >= 0x21 && b <= 0x7e ? `'${String.fromCharCode(b)}' (0x${b.toString(16)})` : `0x${b.toString(16).padStart(2, '0')}`;
}

/**
 * Splits a byte stream into packets. push() returns the packets completed by
 * the chunk; after an error item it returns nothing more (the stream is out
 * of step for good).
 */
export class PacketDecoder {
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private failed = false;

  /** maxPacket: the largest length field accepted (command byte + data). */
  constructor(private readonly maxPacket: number) {}

  /** Bytes held of a packet not yet complete: a caller closing the connection knows a packet was cut. */
  get buffered(): number {
    return this.pendingLength;
  }

  push(chunk: Buffer): DecodedPacket[] {
    if (this.failed) return [];
    let buf: Buffer;
    if (this.pendingLength === 0) buf = chunk;
    else {
      this.pending.push(chunk);
      this.pendingLength += chunk.length;
      // A large packet arrives in many chunks: join them once it is whole, not at every chunk.
      const first = this.pending[0] as Buffer;
      if (first.length >= 4 && this.pendingLength < 4 + first.readUInt32BE(0)) return [];
      buf = Buffer.concat(this.pending, this.pendingLength);
      this.pending = [];
      this.pendingLength = 0;
    }
    const out: DecodedPacket[] = [];
    let at = 0;
    while (buf.length - at >= 4) {
      const len = buf.readUInt32BE(at);
      if (len === 0) return this.fail(out, 'packet length 0 (every packet has at least a command byte)');
      if (len > this.maxPacket) return this.fail(out, `packet length ${len} is over the limit of ${this.maxPacket} bytes`);
      if (buf.length - at - 4 < len) break;
      // subarray, not a copy: the packet's fields are read before the next chunk arrives, and
      // a header or body Buffer kept by a filter keeps this chunk alive, nothing more.
      out.push({ kind: 'packet', command: buf[at + 4] as number, data: buf.subarray(at + 5, at + 4 + len) });
      at += 4 + len;
    }
    if (at < buf.length) {
      const rest = buf.subarray(at);
      this.pending.push(rest);
      this.pendingLength = rest.length;
    }
    return out;
  }

  private fail(out: DecodedPacket[], reason: string): DecodedPacket[] {
    this.failed = true;
    this.pending = [];
    this.pendingLength = 0;
    out.push({ kind: 'error', reason });
    return out;
  }
}

/** Reads NUL-terminated strings and numbers off one packet's data, remembering the first problem. */
class FieldReader {
  at = 0;
  problem: string | undefined;
  constructor(private readonly data: Buffer, private readonly what: string) {}

  get left(): number {
    return this.data.length - this.at;
  }

  bytes(field: string): Buffer {
    if (this.problem !== undefined) return Buffer.alloc(0);
    const end = this.data.indexOf(0, this.at);
    if (end < 0) {
      this.problem = `${this.what}: ${field} is not NUL-terminated (truncated packet)`;
      return Buffer.alloc(0);
    }
    const b = this.data.subarray(this.at, end);
    this.at = end + 1;
    return b;
  }

  string(field: string): string {
    return this.bytes(field).toString('utf8');
  }

  uint32(field: string): number {
    if (this.problem !== undefined) return 0;
    if (this.left < 4) {
      this.problem = `${this.what}: ${field} needs 4 bytes, ${this.left} left (truncated packet)`;
      return 0;
    }
    const v = this.data.readUInt32BE(this.at);
    this.at += 4;
    return v;
  }

  uint16(field: string): number {
    if (this.problem !== undefined) return 0;
    if (this.left < 2) {
      this.problem = `${this.what}: ${field} needs 2 bytes, ${this.left} left (truncated packet)`;
      return 0;
    }
    const v = this.data.readUInt16BE(this.at);
    this.at += 2;
    return v;
  }

  byte(field: string): number {
    if (this.problem !== undefined) return 0;
    if (this.left < 1) {
      this.problem = `${this.what}: ${field} missing (truncated packet)`;
      return 0;
    }
    return this.data[this.at++] as number;
  }

  /** Every remaining NUL-terminated string. */
  strings(field: string): string[] {
    const out: string[] = [];
    while (this.problem === undefined && this.left > 0) out.push(this.string(field));
    return out;
  }

  rest(): Buffer {
    const b = this.data.subarray(this.at);
    this.at = this.data.length;
    return b;
  }

  /** The record, or the first problem, or bytes left over. */
  done<T>(record: T): T | ProtocolError {
    if (this.problem !== undefined) return { kind: 'error', reason: this.problem };
    if (this.left > 0) return { kind: 'error', reason: `${this.what}: ${this.left} unexpected bytes after the last field` };
    return record;
  }
}

/** One MTA packet as a typed record, or the reason it is not one. */
export function parseCommand(p: { readonly command: number; readonly data: Buffer }): MtaCommand | ProtocolError {
  const kind = CMD_KIND.get(p.command);
  if (kind === undefined) return { kind: 'error', reason: `unknown command ${describeByte(p.command)} from the MTA` };
  const r = new FieldReader(p.data, `SMFIC_${kind.toUpperCase()}`);
  switch (kind) {
    case 'optneg': {
      const version = r.uint32('version');
      const actions = r.uint32('actions');
      const protocol = r.uint32('protocol');
      // Newer MTAs may append fields (libmilter ignores them too).
      r.rest();
      return r.done({ kind, version, actions, protocol });
    }
    case 'macro': {
      const stageByte = r.byte('stage');
      const list = r.strings('macro');
      if (r.problem === undefined && list.length % 2 !== 0) return { kind: 'error', reason: `SMFIC_MACRO: macro "${list.at(-1) ?? ''}" has no value` };
      const macros: [string, string][] = [];
      for (let i = 0; i + 1 < list.length; i += 2) macros.push([list[i] as string, list[i + 1] as string]);
      return r.done({ kind, stage: String.fromCharCode(stageByte), macros });
    }
    case 'connect': {
      const hostname = r.string('hostname');
      const familyByte = r.byte('family');
      const family = FAMILY_OF[String.fromCharCode(familyByte)];
      if (r.problem === undefined && family === undefined) return { kind: 'error', reason: `SMFIC_CONNECT: unknown address family ${describeByte(familyByte)}` };
      // An unknown family carries neither port nor address (libmilter); some MTAs send them anyway.
      if (family === 'unknown' && r.left === 0) return r.done({ kind, hostname, family, port: 0, address: '' });
      const port = r.uint16('port');
      const address = r.string('address');
      return r.done({ kind, hostname, family: family ?? 'unknown', port, address });
    }
    case 'helo':
      return r.done({ kind, name: r.string('HELO name') });
    case 'mail':
    case 'rcpt': {
      const first = r.string(kind === 'mail' ? 'sender' : 'recipient');
      const args = r.strings('ESMTP argument');
      return r.done(kind === 'mail' ? { kind, sender: first, args } : { kind, recipient: first, args });
    }
    case 'header': {
      const name = r.string('header name');
      const value = r.bytes('header value');
      return r.done({ kind, name, value });
    }
    case 'body':
    case 'eob':
      return r.done({ kind, chunk: r.rest() });
    case 'unknown':
      return r.done({ kind, command: r.string('command') });
    default:
      return r.done({ kind });
  }
}

/** One milter packet as a typed record (the MTA side: tests, the benchmark), or the reason it is not one. */
export function parseReply(p: { readonly command: number; readonly data: Buffer }): MilterReply | ProtocolError {
  const kind = RPL_KIND.get(p.command);
  if (kind === undefined) return { kind: 'error', reason: `unknown reply ${describeByte(p.command)} from the milter` };
  const r = new FieldReader(p.data, `SMFIR_${kind.toUpperCase()}`);
  switch (kind) {
    case 'optneg': {
      const version = r.uint32('version');
      const actions = r.uint32('actions');
      const protocol = r.uint32('protocol');
      const macros: [MacroStageName, string][] = [];
      while (r.problem === undefined && r.left > 0) {
        const n = r.uint32('macro stage');
        const list = r.string('macro list');
        const stage = (Object.keys(MACRO_STAGES) as MacroStageName[]).find((s) => MACRO_STAGES[s] === n);
        if (r.problem === undefined && stage === undefined) return { kind: 'error', reason: `SMFIR_OPTNEG: unknown macro stage ${n}` };
        if (stage !== undefined) macros.push([stage, list]);
      }
      return r.done(macros.length > 0 ? { kind, version, actions, protocol, macros } : { kind, version, actions, protocol });
    }
    case 'replycode':
      return r.done({ kind, text: r.string('reply') });
    case 'addheader':
      return r.done({ kind, name: r.string('header name'), value: r.bytes('header value') });
    case 'insheader':
    case 'chgheader': {
      const index = r.uint32('index');
      return r.done({ kind, index, name: r.string('header name'), value: r.bytes('header value') });
    }
    case 'addrcpt':
    case 'delrcpt':
      return r.done({ kind, recipient: r.string('recipient') });
    case 'addrcpt_par':
      return r.done({ kind, recipient: r.string('recipient'), args: r.string('ESMTP arguments') });
    case 'chgfrom': {
      const sender = r.string('sender');
      return r.done(r.left > 0 ? { kind, sender, args: r.string('ESMTP arguments') } : { kind, sender });
    }
    case 'replbody':
      return r.done({ kind, chunk: r.rest() });
    case 'quarantine':
      return r.done({ kind, reason: r.string('reason') });
    default:
      return r.done({ kind });
  }
}

type Field = Buffer | string | { readonly u32: number } | { readonly u16: number } | { readonly byte: number };

function str(s: string | Buffer, field: string): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  if (b.includes(0)) throw new TypeError(`milter ${field} contains a NUL byte`);
  return b;
}

/** A packet from its command byte and fields: strings get their NUL, Buffers go as they are. */
function packet(command: number, ...fields: Field[]): Buffer {
  const parts: Buffer[] = [];
  for (const f of fields) {
    if (typeof f === 'string') parts.push(Buffer.from(f, 'utf8'), ZERO);
    else if (Buffer.isBuffer(f)) parts.push(f);
    else if ('u32' in f) {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(f.u32 >>> 0);
      parts.push(b);
    } else if ('u16' in f) {
      const b = Buffer.alloc(2);
      b.writeUInt16BE(f.u16);
      parts.push(b);
    } else parts.push(Buffer.from([f.byte]));
  }
  const len = parts.reduce((n, b) => n + b.length, 1);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(len);
  head[4] = command;
  return Buffer.concat([head, ...parts], 4 + len);
}
const ZERO = Buffer.from([0]);

/** A string field checked for NUL, with its terminator. */
function z(s: string | Buffer, field: string): Buffer {
  return Buffer.concat([str(s, field), ZERO]);
}

/** The bytes of one MTA command (the MTA side). */
export function encodeCommand(c: MtaCommand): Buffer {
  const code = CMD[c.kind];
  switch (c.kind) {
    case 'optneg':
      return packet(code, { u32: c.version }, { u32: c.actions }, { u32: c.protocol });
    case 'macro': {
      if (c.stage.length !== 1) throw new TypeError(`milter macro stage must be one command character, got "${c.stage}"`);
      return packet(code, { byte: c.stage.charCodeAt(0) }, ...c.macros.flatMap(([n, v]) => [z(n, 'macro name'), z(v, 'macro value')]));
    }
    case 'connect':
      if (c.family === 'unknown') return packet(code, z(c.hostname, 'hostname'), { byte: FAMILY_BYTE.unknown.charCodeAt(0) });
      return packet(code, z(c.hostname, 'hostname'), { byte: FAMILY_BYTE[c.family].charCodeAt(0) }, { u16: c.port }, z(c.address, 'address'));
    case 'helo':
      return packet(code, z(c.name, 'HELO name'));
    case 'mail':
      return packet(code, z(c.sender, 'sender'), ...c.args.map((a) => z(a, 'ESMTP argument')));
    case 'rcpt':
      return packet(code, z(c.recipient, 'recipient'), ...c.args.map((a) => z(a, 'ESMTP argument')));
    case 'header':
      return packet(code, z(c.name, 'header name'), z(c.value, 'header value'));
    case 'body':
    case 'eob':
      return packet(code, c.chunk);
    case 'unknown':
      return packet(code, z(c.command, 'command'));
    default:
      return packet(code);
  }
}

/** The bytes of one milter reply or modification. */
export function encodeReply(r: MilterReply): Buffer {
  const code = RPL[r.kind];
  switch (r.kind) {
    case 'optneg':
      return packet(code, { u32: r.version }, { u32: r.actions }, { u32: r.protocol },
        ...(r.macros ?? []).flatMap(([stage, list]) => [{ u32: MACRO_STAGES[stage] }, z(list, 'macro list')]));
    case 'replycode':
      return packet(code, z(r.text, 'reply'));
    case 'addheader':
      return packet(code, z(r.name, 'header name'), z(r.value, 'header value'));
    case 'insheader':
    case 'chgheader':
      return packet(code, { u32: r.index }, z(r.name, 'header name'), z(r.value, 'header value'));
    case 'addrcpt':
    case 'delrcpt':
      return packet(code, z(r.recipient, 'recipient'));
    case 'addrcpt_par':
      return packet(code, z(r.recipient, 'recipient'), z(r.args, 'ESMTP arguments'));
    case 'chgfrom':
      return r.args !== undefined ? packet(code, z(r.sender, 'sender'), z(r.args, 'ESMTP arguments')) : packet(code, z(r.sender, 'sender'));
    case 'replbody':
      if (r.chunk.length > MAX_CHUNK) throw new TypeError(`milter replacement body chunk of ${r.chunk.length} bytes is over ${MAX_CHUNK}`);
      return packet(code, r.chunk);
    case 'quarantine':
      return packet(code, z(r.reason, 'quarantine reason'));
    default:
      return packet(code);
  }
}

/**
 * SMFIR_REPLYCODE's text: "550 5.7.1 text". Sendmail takes the text as a
 * printf format, so '%' is doubled (Postfix undoes exactly that). The code
 * and enhanced code must agree in class; text must be one line.
 */
export function formatReplyCode(code: string, xcode: string | undefined, text: string): string {
  if (!/^[45]\d\d$/.test(code)) throw new TypeError(`milter reply code ${code}: expected 4xx or 5xx`);
  const x = xcode ?? `${code[0] as string}.7.1`;
  if (!/^[45]\.\d{1,3}\.\d{1,3}$/.test(x) || x[0] !== code[0]) throw new TypeError(`milter enhanced code ${x} does not go with ${code}`);
  if (/[\r\n\0]/.test(text)) throw new TypeError('milter reply text contains CR, LF or NUL');
  return `${code} ${x} ${text.replaceAll('%', '%%')}`.trimEnd();
}

export interface OptionOffer {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
}

/** What the milter needs, from its filters' events. */
export interface OptionNeeds {
  /** Events some filter handles ('connect', 'helo', 'envfrom', 'envrcpt', 'data', 'header', 'eoh', 'body', 'unknown'; others are ignored). */
  readonly events: ReadonlySet<string>;
  /** MAIL and RCPT are wanted even when no filter handles them (the session keeps sender and recipients for later events); asked without replies where the MTA allows. */
  readonly envelope: boolean;
  /** Modifications may be asked for (some filter handles eom). */
  readonly modify: boolean;
  /** Handled events whose replies nobody needs (every filter handling them only observes): NR_* where offered. */
  readonly quiet?: ReadonlySet<string>;
}

/** event → [the "do not send" step, the "no reply" step]. */
const STEPS: readonly (readonly [string, number, number])[] = [
  ['connect', SMFIP.NOCONNECT, SMFIP.NR_CONN],
  ['helo', SMFIP.NOHELO, SMFIP.NR_HELO],
  ['envfrom', SMFIP.NOMAIL, SMFIP.NR_MAIL],
  ['envrcpt', SMFIP.NORCPT, SMFIP.NR_RCPT],
  ['data', SMFIP.NODATA, SMFIP.NR_DATA],
  ['header', SMFIP.NOHDRS, SMFIP.NR_HDR],
  ['eoh', SMFIP.NOEOH, SMFIP.NR_EOH],
  ['body', SMFIP.NOBODY, SMFIP.NR_BODY],
  ['unknown', SMFIP.NOUNKNOWN, SMFIP.NR_UNKN],
];

/** Every modification we may make (never SETSYMLIST: the MTA's default macros are enough). */
const MODIFY_ACTIONS = SMFIF.ADDHDRS | SMFIF.CHGBODY | SMFIF.ADDRCPT | SMFIF.DELRCPT | SMFIF.CHGHDRS | SMFIF.QUARANTINE | SMFIF.CHGFROM | SMFIF.ADDRCPT_PAR;

/**
 * Our OPTNEG answer: the lower of the two versions, and of actions and steps
 * only what the MTA offered and we need. An event no filter handles is
 * switched off (NO*) or, where it is only wanted for its data or the MTA
 * cannot switch it off, sent without our reply (NR_*); SKIP when a filter
 * reads the body; HDR_LEADSPC always, so header bytes come and go exactly.
 * An MTA older than version 2 is an error.
 */
export function negotiate(offer: OptionOffer, needs: OptionNeeds): MilterReply & { kind: 'optneg' } | ProtocolError {
  if (offer.version < 2) return { kind: 'error', reason: `the MTA offers milter protocol version ${offer.version}; 2 to ${MILTER_VERSION} are supported` };
  let protocol = 0;
  for (const [event, no, nr] of STEPS) {
    if (needs.events.has(event)) {
      if (needs.quiet?.has(event) === true) protocol |= offer.protocol & nr;
      continue;
    }
    const wanted = needs.envelope && (event === 'envfrom' || event === 'envrcpt');
    if (!wanted && (offer.protocol & no) !== 0) protocol |= no;
    else if ((offer.protocol & nr) !== 0) protocol |= nr;
  }
  if (needs.events.has('body')) protocol |= offer.protocol & SMFIP.SKIP;
  protocol |= offer.protocol & SMFIP.HDR_LEADSPC;
  const actions = needs.modify ? offer.actions & MODIFY_ACTIONS : 0;
  return { kind: 'optneg', version: Math.min(offer.version, MILTER_VERSION), actions, protocol };
}
