// DNS for the policy plugins (dnsbl, spf): a resolver pointed where the
// configuration says, lookups with a hard deadline, a small answer cache, and
// the address arithmetic DNSBLs need (reversed-octet IPv4 and nibble IPv6
// query names, address comparison across spellings).
//
// Exports: DnsResolver (the part of node:dns's Resolver we use, so tests and
// the daemon can inject one), createDnsResolver, createDnsLookup (cached,
// deduplicated, deadline-bounded A/AAAA/MX; LookupResult), withDeadline and
// DnsDeadlineError, normalizeIp, reverseIpQuery,
// parseHeloLiteral.
//
// Failure contract: a lookup never throws. NXDOMAIN and NODATA are answers
// (no records) and are cached; a timeout, SERVFAIL, REFUSED or any other
// resolver error is { ok: false } and is not cached, so the next request asks
// again. Our own deadline bounds every lookup even if the resolver's timeout
// and retries would take longer.
import { Resolver } from 'node:dns/promises';
import type { MxRecord } from 'node:dns';
import { isIP, isIPv4, isIPv6 } from 'node:net';

/** What the plugins call on a resolver; node:dns/promises Resolver satisfies it. */
export interface DnsResolver {
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  resolveMx(name: string): Promise<MxRecord[]>;
  /** Generic form, for mailauth's SPF evaluator (TXT, A, AAAA, MX, PTR). */
  resolve(name: string, rrtype: string): Promise<unknown>;
  /** Aborts outstanding queries; called on close for resolvers we created. */
  cancel?(): void;
}

/** "1.2.3.4", "1.2.3.4:5353", "::1", "[::1]:5353" — what Resolver#setServers accepts. */

/**
 * A resolver for the given servers (empty = the system's, /etc/resolv.conf)
 * that tries twice within timeoutMs: c-ares gets half of it for the first
 * try (it backs off on the second), and withDeadline cuts the total at
 * timeoutMs. A DNSBL setup wants a local caching resolver here: the big
 * lists refuse queries that come through public resolvers.
 */
export function createDnsResolver(opts: { servers: readonly string[]; timeoutMs: number }): Resolver {
  const r = new Resolver({ timeout: Math.max(1, Math.round(opts.timeoutMs / 2)), tries: 2 });
  if (opts.servers.length > 0) r.setServers([...opts.servers]);
  return r;
}

/** An Error with code ETIMEOUT, the code c-ares uses, so callers (and mailauth) read it as a DNS timeout. */
export class DnsDeadlineError extends Error {
  readonly code = 'ETIMEOUT';
  constructor(what: string, ms: number) {
    super(`${what}: no answer within ${ms} ms`);
  }
}

/** Settles like p, or rejects with DnsDeadlineError after ms; the timer never outlives the race. */
export function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  if (ms <= 0) return Promise.reject(new DnsDeadlineError(what, 0));
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DnsDeadlineError(what, ms)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

export interface RecordTypes {
  A: string;
  AAAA: string;
  MX: MxRecord;
}
export type RecordType = keyof RecordTypes;

/** records = [] for NXDOMAIN/NODATA: an answer. ok false: no answer (timeout, SERVFAIL, …). */
export type LookupResult<T> = { ok: true; records: T[] } | { ok: false; error: string };

export interface DnsLookup {
  /** Never rejects. deadlineAt is an absolute Date.now() time. */
  lookup<K extends RecordType>(type: K, name: string, deadlineAt: number): Promise<LookupResult<RecordTypes[K]>>;
  /** Drops expired cache entries. */
  purge(now: number): void;
  readonly cacheSize: number;
}

interface CacheEntry {
  expires: number;
  records: unknown[];
}

/**
 * Cached, deduplicated lookups: answers (including "no such name") are kept
 * for ttlMs (now() is the clock, for tests); identical lookups in flight
 * share one query. At maxEntries the oldest entries are dropped first.
 */
export function createDnsLookup(opts: {
  resolver: DnsResolver;
  ttlMs: number;
  maxEntries: number;
  now: () => number;
}): DnsLookup {
  const cache = new Map<string, CacheEntry>();
  const inFlight = new Map<string, Promise<LookupResult<unknown>>>();

  const query = (type: RecordType, name: string): Promise<unknown[]> => {
    switch (type) {
      case 'A':
        return opts.resolver.resolve4(name);
      case 'AAAA':
        return opts.resolver.resolve6(name);
      case 'MX':
        return opts.resolver.resolveMx(name);
    }
  };

  const lookupUncached = async (key: string, type: RecordType, name: string, ms: number): Promise<LookupResult<unknown>> => {
    try {
      const records = await withDeadline(query(type, name), ms, `${type} ${name}`);
      remember(key, records);
      return { ok: true, records };
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA') {
        remember(key, []);
        return { ok: true, records: [] };
      }
      return { ok: false, error: typeof code === 'string' ? code : (err as Error).message };
    }
  };

  const remember = (key: string, records: unknown[]): void => {
    if (opts.ttlMs <= 0 || opts.maxEntries <= 0) return;
    cache.delete(key); // re-insert at the end: Map order is our age order
    cache.set(key, { expires: opts.now() + opts.ttlMs, records });
    while (cache.size > opts.maxEntries) {
      const oldest = cache.keys().next().value;
      if (oldest === undefined) break;
      cache.delete(oldest);
    }
  };

  return {
    async lookup<K extends RecordType>(type: K, name: string, deadlineAt: number): Promise<LookupResult<RecordTypes[K]>> {
      const key = `${type} ${name.toLowerCase()}`;
      const hit = cache.get(key);
      if (hit !== undefined) {
        if (hit.expires > opts.now()) return { ok: true, records: hit.records as RecordTypes[K][] };
        cache.delete(key);
      }
      const remaining = deadlineAt - Date.now();
      let shared = inFlight.get(key);
      if (shared === undefined) {
        shared = lookupUncached(key, type, name, remaining).finally(() => inFlight.delete(key));
        inFlight.set(key, shared);
      }
      // A shared query may have been started with a later deadline than ours.
      try {
        return (await withDeadline(shared, remaining, `${type} ${name}`)) as LookupResult<RecordTypes[K]>;
      } catch (err) {
        return { ok: false, error: (err as Error & { code?: string }).code ?? (err as Error).message };
      }
    },
    purge(now: number): void {
      for (const [key, entry] of cache) if (entry.expires <= now) cache.delete(key);
    },
    get cacheSize(): number {
      return cache.size;
    },
  };
}

/**
 * One spelling per address, for comparisons: IPv4 dotted quad as is, IPv4
 * mapped into IPv6 (::ffff:a.b.c.d) as IPv4, other IPv6 as eight 4-digit
 * lower-case hex groups. undefined if s is not an address.
 */
export function normalizeIp(s: string): string | undefined {
  const v = s.trim();
  if (isIPv4(v)) return v.split('.').map((o) => String(Number(o))).join('.');
  if (!isIPv6(v)) return undefined;
  let text = v.toLowerCase();
  // A dotted-quad tail becomes two hex groups.
  const tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (tail) {
    const [a, b, c, d] = tail.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, tail.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', rest] = text.split('::');
  const groups = (p: string | undefined): string[] => (p === undefined || p === '' ? [] : p.split(':'));
  const h = groups(head);
  const t = groups(rest);
  const all = (rest === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t])
    .map((g) => g.padStart(4, '0'));
  if (all.length !== 8) return undefined;
  const full = all.join(':');
  if (full.startsWith('0000:0000:0000:0000:0000:ffff:')) {
    const hi = parseInt(all[6] ?? '0', 16);
    const lo = parseInt(all[7] ?? '0', 16);
    return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
  }
  return full;
}

/**
 * The DNSBL query name for an address under zone: 192.0.2.1 →
 * 1.2.0.192.zone; IPv6 → 32 reversed nibbles (RFC 5782 §2.4). undefined if
 * addr is not an address.
 */
export function reverseIpQuery(addr: string, zone: string): string | undefined {
  const ip = normalizeIp(addr);
  if (ip === undefined) return undefined;
  const labels = ip.includes(':') ? ip.replace(/:/g, '').split('').reverse() : ip.split('.').reverse();
  return `${labels.join('.')}.${zone}`;
}

/**
 * The address in a HELO that is an address literal: "[192.0.2.1]",
 * "[IPv6:2001:db8::1]", or (not RFC 5321, but common) a bare address.
 * undefined if helo is a name.
 */
export function parseHeloLiteral(helo: string): string | undefined {
  const m = /^\[(?:ipv6:)?([^\]]+)\]$/i.exec(helo.trim());
  const inner = m ? (m[1] ?? '') : helo.trim();
  return isIP(inner) !== 0 ? inner : undefined;
}
