// A loopback UDP DNS server for tests: answers A, AAAA, MX and TXT from a
// table the test gives, NXDOMAIN for names it does not know, NODATA (NOERROR,
// no answers) for known names without the asked type, SERVFAIL for names in a
// "servfail zone" and nothing at all for names in a "timeout zone". Every
// query is recorded so a test can count what reached DNS.
//
// Exports startDnsServer() → TestDnsServer { port, server, queries, count,
// set, resolver, close }. Binds 127.0.0.1 only, on an ephemeral port: nothing
// here can send a packet off the machine. The wire format is written by hand
// (RFC 1035 §4): one question per query, answers name the question by a
// compression pointer, no EDNS, no TCP. That subset is all Node's c-ares
// resolver needs, and it keeps a test-only dependency out of the lockfile.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { isIPv4, isIPv6 } from 'node:net';

export interface DnsRecords {
  A?: string[];
  AAAA?: string[];
  MX?: { priority: number; exchange: string }[];
  /** One entry per TXT record; an array is one record made of several strings. */
  TXT?: (string | string[])[];
}

export interface DnsServerOptions {
  /** Records by owner name (case-insensitive, no trailing dot). */
  records?: Record<string, DnsRecords>;
  /** Queries for these names or anything under them are never answered. */
  timeoutZones?: string[];
  /** Queries for these names or anything under them get SERVFAIL at once. */
  servfailZones?: string[];
}

export interface DnsQuery {
  /** Lower case, no trailing dot. */
  name: string;
  /** "A", "AAAA", "MX", "TXT", … or "TYPE<n>". */
  type: string;
}

export interface TestDnsServer {
  readonly port: number;
  /** "127.0.0.1:PORT", for Resolver#setServers and plugin options. */
  readonly server: string;
  /** Every query received, in order. */
  readonly queries: DnsQuery[];
  /** Queries received for this name (and type, if given); all queries without arguments. */
  count(name?: string, type?: string): number;
  /** Adds or replaces the records of one name. */
  set(name: string, records: DnsRecords): void;
  /** A Node resolver pointed at this server only. */
  resolver(opts?: { timeout?: number; tries?: number }): Resolver;
  close(): Promise<void>;
}

const TYPE_CODES: Record<string, number> = { A: 1, MX: 15, TXT: 16, AAAA: 28 };
const TYPE_NAMES = new Map(Object.entries(TYPE_CODES).map(([k, v]) => [v, k]));
const RCODE = { noError: 0, servFail: 2, nxDomain: 3 } as const;

const normalize = (name: string): string => name.toLowerCase().replace(/\.$/, '');
const inZone = (name: string, zones: readonly string[]): boolean =>
  zones.some((z) => name === normalize(z) || name.endsWith(`.${normalize(z)}`));

export async function startDnsServer(opts: DnsServerOptions = {}): Promise<TestDnsServer> {
  const records = new Map<string, DnsRecords>();
  for (const [name, rr] of Object.entries(opts.records ?? {})) records.set(normalize(name), rr);
  const timeoutZones = opts.timeoutZones ?? [];
  const servfailZones = opts.servfailZones ?? [];
  const queries: DnsQuery[] = [];
  const socket: Socket = createSocket('udp4');

  socket.on('message', (msg: Buffer, from: RemoteInfo) => {
    const q = parseQuery(msg);
    if (q === undefined) return; // not a query we understand: drop it, as a real server might
    queries.push({ name: q.name, type: TYPE_NAMES.get(q.qtype) ?? `TYPE${q.qtype}` });
    if (inZone(q.name, timeoutZones)) return;
    let reply: Buffer;
    if (inZone(q.name, servfailZones)) {
      reply = encodeReply(msg, q.questionEnd, RCODE.servFail, []);
    } else {
      const rr = records.get(q.name);
      reply = rr === undefined
        ? encodeReply(msg, q.questionEnd, RCODE.nxDomain, [])
        : encodeReply(msg, q.questionEnd, RCODE.noError, encodeAnswers(rr, q.qtype));
    }
    socket.send(reply, from.port, from.address);
  });

  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  const port = socket.address().port;
  const server = `127.0.0.1:${port}`;

  return {
    port,
    server,
    queries,
    count(name?: string, type?: string): number {
      return queries.filter((q) => (name === undefined || q.name === normalize(name)) && (type === undefined || q.type === type)).length;
    },
    set(name: string, rr: DnsRecords): void {
      records.set(normalize(name), rr);
    },
    resolver(ropts: { timeout?: number; tries?: number } = {}): Resolver {
      const r = new Resolver({ timeout: ropts.timeout ?? 1000, tries: ropts.tries ?? 1 });
      r.setServers([server]);
      return r;
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

interface ParsedQuery {
  name: string;
  qtype: number;
  /** Offset just past QTYPE and QCLASS of the first question. */
  questionEnd: number;
}

function parseQuery(msg: Buffer): ParsedQuery | undefined {
  if (msg.length < 12) return undefined;
  const flags = msg.readUInt16BE(2);
  if ((flags & 0x8000) !== 0 || msg.readUInt16BE(4) < 1) return undefined; // a response, or no question
  const labels: string[] = [];
  let p = 12;
  for (;;) {
    const len = msg[p];
    if (len === undefined || (len & 0xc0) !== 0) return undefined; // truncated, or compressed (never in a query)
    p++;
    if (len === 0) break;
    if (p + len > msg.length) return undefined;
    labels.push(msg.toString('latin1', p, p + len));
    p += len;
  }
  if (p + 4 > msg.length) return undefined;
  return { name: normalize(labels.join('.')), qtype: msg.readUInt16BE(p), questionEnd: p + 4 };
}

/** Header with the query's id, opcode and RD; QR, AA and RA set; the question copied verbatim. */
function encodeReply(query: Buffer, questionEnd: number, rcode: number, answers: Buffer[]): Buffer {
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2); // id
  header[2] = 0x80 | 0x04 | ((query[2] ?? 0) & 0x79); // QR, AA, opcode and RD from the query
  header[3] = 0x80 | rcode; // RA
  header.writeUInt16BE(1, 4); // QDCOUNT
  header.writeUInt16BE(answers.length, 6); // ANCOUNT
  return Buffer.concat([header, query.subarray(12, questionEnd), ...answers]);
}

function encodeAnswers(rr: DnsRecords, qtype: number): Buffer[] {
  const out: Buffer[] = [];
  const add = (type: number, rdata: Buffer): void => {
    const fixed = Buffer.alloc(12);
    fixed.writeUInt16BE(0xc00c, 0); // owner = the question's name (offset 12)
    fixed.writeUInt16BE(type, 2);
    fixed.writeUInt16BE(1, 4); // class IN
    fixed.writeUInt32BE(60, 6); // TTL
    fixed.writeUInt16BE(rdata.length, 10);
    out.push(Buffer.concat([fixed, rdata]));
  };
  if (qtype === TYPE_CODES.A) for (const a of rr.A ?? []) add(qtype, encodeIPv4(a));
  if (qtype === TYPE_CODES.AAAA) for (const a of rr.AAAA ?? []) add(qtype, encodeIPv6(a));
  if (qtype === TYPE_CODES.MX) {
    for (const mx of rr.MX ?? []) {
      const pref = Buffer.alloc(2);
      pref.writeUInt16BE(mx.priority);
      add(qtype, Buffer.concat([pref, encodeName(mx.exchange)]));
    }
  }
  if (qtype === TYPE_CODES.TXT) {
    for (const txt of rr.TXT ?? []) {
      const chunks = (Array.isArray(txt) ? txt : splitTxt(txt)).map((s) => {
        const b = Buffer.from(s, 'latin1');
        return Buffer.concat([Buffer.from([b.length]), b]);
      });
      add(qtype, Buffer.concat(chunks));
    }
  }
  return out;
}

/** A TXT string holds at most 255 bytes; longer texts become several strings (RFC 7208 §3.3). */
function splitTxt(s: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.length; i += 255) out.push(s.slice(i, i + 255));
  return out.length === 0 ? [''] : out;
}

function encodeName(name: string): Buffer {
  const parts = normalize(name).split('.').filter((l) => l !== '');
  return Buffer.concat([...parts.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')])), Buffer.from([0])]);
}

function encodeIPv4(addr: string): Buffer {
  if (!isIPv4(addr)) throw new Error(`dns-server: not an IPv4 address: ${addr}`);
  return Buffer.from(addr.split('.').map(Number));
}

function encodeIPv6(addr: string): Buffer {
  // Hex groups only: the tests have no use for the dotted-quad tail form.
  if (!isIPv6(addr) || addr.includes('.')) throw new Error(`dns-server: not a hex IPv6 address: ${addr}`);
  const [head = '', tail] = addr.split('::');
  const groups = (s: string | undefined): string[] => (s === undefined || s === '' ? [] : s.split(':'));
  const h = groups(head);
  const t = groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  all.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}
