// greylist: the classic triplet check (client network, sender, recipient) at
// protocol_state=RCPT, state in LMDB (state.ts).
//   first attempt                   → DEFER_IF_PERMIT 4.7.1 <text>, triplet recorded
//   retry before `delay`            → deferred again (the clock is not restarted)
//   retry within `retry_window`     → passes: DUNNO, or with `header`
//                                     "PREPEND X-Greylist: delayed N seconds by mailprocd"
//   retry after `retry_window`      → too late: starts over (deferred, new first attempt)
//   a passed triplet                → DUNNO until unused for `expire`
//   a client network that passed `auto_whitelist` triplets → no longer greylisted
// DEFER_IF_PERMIT, not DEFER: a later REJECT in Postfix's restrictions still wins.
// The client network is the /24 (IPv4) or /64 (IPv6) by default, so a sender
// whose retries leave from a neighbouring address of the same pool still passes.
//
// Concurrency: no read-modify-write transaction (lmdb-js's async transaction
// is not used, see NOTES.md). Two requests racing on one triplet can only make
// one of them write a slightly later first-seen time or lose one count toward
// the auto-whitelist, i.e. delay a pass by one retry; never let mail through early.
//
// Keys: a triplet or client network too long for an LMDB key (a sender of
// thousands of characters) is stored under its digest (keys.ts storageKey),
// so it is greylisted like any other, without an exception.
//
// Exports: createGreylistPlugin, decideTriplet (pure), clientNetwork (pure),
// GreylistSettings. A deferral is answered only once the triplet is committed.
// LMDB failures propagate to the chain, which logs them and answers this
// plugin's onError: fail open (DUNNO). Greylisting only delays strangers;
// deferring every sender while the database is broken would stop all new mail.
import { isIPv4, isIPv6 } from 'node:net';
import type { Database } from 'lmdb';
import { storageKey } from '../../state/index.js';
import type { StateStore, TripletRecord } from '../../state/index.js';
import { FAIL_OPEN, type PolicyAction, type PolicyPlugin, type PolicyRequest } from '../types.js';

export interface GreylistSettings {
  readonly delayMs: number;
  readonly retryWindowMs: number;
  readonly expireMs: number;
  /** Passed triplets before a client network is whitelisted; 0 = never. */
  readonly autoWhitelist: number;
  /** After "DEFER_IF_PERMIT 4.7.1 ". */
  readonly text: string;
  readonly header: boolean;
  readonly ipv4Prefix: number;
  readonly ipv6Prefix: number;
}

/**
 * How stale a passed triplet's or a whitelisted client's last-seen time may
 * get before a request writes a fresh one: a write per hour, not per request,
 * is plenty against an expiry measured in days.
 */
const REFRESH_MS = 3_600_000;

export type TripletVerdict =
  | { readonly kind: 'defer'; readonly write: TripletRecord | undefined }
  /** delayedMs is set on the first pass only (the retry that got through). */
  | { readonly kind: 'pass'; readonly write: TripletRecord | undefined; readonly delayedMs: number | undefined };

/** What to answer and store for a triplet seen `now`; pure. */
export function decideTriplet(rec: TripletRecord | undefined, now: number, s: GreylistSettings): TripletVerdict {
  const fresh: TripletVerdict = { kind: 'defer', write: [now, now, 0] };
  if (rec === undefined) return fresh;
  const [first, last, passedAt] = rec;
  if (passedAt > 0) {
    if (now - last > s.expireMs) return fresh;
    return { kind: 'pass', write: now - last >= REFRESH_MS ? [first, now, passedAt] : undefined, delayedMs: undefined };
  }
  const age = now - first;
  if (age > s.retryWindowMs) return fresh;
  if (age < s.delayMs) return { kind: 'defer', write: undefined };
  return { kind: 'pass', write: [first, now, now], delayedMs: age };
}

/** "192.0.2.0/24", "2001:db8:0:1::/64"; an IPv4-mapped IPv6 address counts as IPv4; anything else is kept as given. */
export function clientNetwork(address: string, ipv4Prefix: number, ipv6Prefix: number): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const v4 = mapped ? (mapped[1] as string) : address;
  if (isIPv4(v4)) {
    const n = v4.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const masked = ipv4Prefix === 0 ? 0 : Math.floor(n / 2 ** (32 - ipv4Prefix)) * 2 ** (32 - ipv4Prefix);
    const octets = [24, 16, 8, 0].map((shift) => Math.floor(masked / 2 ** shift) % 256);
    return `${octets.join('.')}/${ipv4Prefix}`;
  }
  if (isIPv6(address)) {
    const groups = expandIPv6(address);
    const out = groups.map((g, i) => {
      const bits = Math.max(0, Math.min(16, ipv6Prefix - i * 16));
      return bits === 16 ? g : bits === 0 ? 0 : g & (0xffff << (16 - bits)) & 0xffff;
    });
    return `${compressIPv6(out)}/${ipv6Prefix}`;
  }
  return address;
}

function expandIPv6(address: string): number[] {
  let text = address.replace(/%.*$/, '');
  // A trailing dotted quad (::ffff:1.2.3.4 is handled above; 64:ff9b::1.2.3.4 and the like land here).
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((g) => parseInt(g, 16));
}

function compressIPv6(groups: number[]): string {
  // RFC 5952: the longest run of zero groups (two or more) becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

export function createGreylistPlugin(o: { readonly state: StateStore; readonly settings: GreylistSettings; readonly now: () => number }): PolicyPlugin {
  const { state, settings: s } = o;
  const deferral: PolicyAction = `DEFER_IF_PERMIT 4.7.1 ${s.text}`;

  const whitelisted = async (net: string, now: number): Promise<boolean> => {
    if (s.autoWhitelist === 0) return false;
    const c = state.clients.get(net);
    if (c === undefined || c[0] < s.autoWhitelist || now - c[1] > s.expireMs) return false;
    if (now - c[1] >= REFRESH_MS) await state.clients.put(net, [c[0], now]);
    return true;
  };

  const countPass = async (net: string, now: number): Promise<void> => {
    if (s.autoWhitelist === 0) return;
    const c = state.clients.get(net);
    const passes = c !== undefined && now - c[1] <= s.expireMs ? c[0] : 0;
    await state.clients.put(net, [passes + 1, now]);
  };

  const check = async (req: PolicyRequest): Promise<PolicyAction | undefined> => {
    if (req.get('protocol_state') !== 'RCPT') return undefined;
    const now = o.now();
    const net = storageKey(clientNetwork(req.get('client_address'), s.ipv4Prefix, s.ipv6Prefix));
    const key = storageKey(`${net}\0${req.get('sender').toLowerCase()}\0${req.get('recipient').toLowerCase()}`);
    if (await whitelisted(net, now)) return undefined;
    const verdict = decideTriplet(state.greylist.get(key), now, s);
    if (verdict.write !== undefined) await state.greylist.put(key, verdict.write);
    if (verdict.kind === 'defer') return deferral;
    if (verdict.delayedMs === undefined) return undefined;
    await countPass(net, now);
    return s.header ? `PREPEND X-Greylist: delayed ${Math.round(verdict.delayedMs / 1000)} seconds by mailprocd` : undefined;
  };

  const maintain = async (now: number): Promise<void> => {
    await sweep(state.greylist, (r) => (r[2] > 0 ? now - r[1] > s.expireMs : now - r[0] > s.retryWindowMs));
    await sweep(state.clients, (r) => now - r[1] > s.expireMs);
  };

  return { name: 'greylist', onError: FAIL_OPEN, check, maintain };
}

const SWEEP_CHUNK = 1000;

/**
 * Deletes the entries `expired` picks, a chunk at a time with a turn of the
 * event loop in between, so a large database does not stall request handling.
 */
async function sweep<V>(db: Database<V, string>, expired: (v: V) => boolean): Promise<void> {
  let after: string | undefined;
  for (;;) {
    const removals: Promise<boolean>[] = [];
    let seen = 0;
    let last: string | undefined;
    for (const { key, value } of db.getRange({ ...(after !== undefined ? { start: after } : {}), limit: SWEEP_CHUNK + 1 })) {
      if (key === after) continue;
      seen++;
      last = key;
      if (expired(value)) removals.push(db.remove(key));
      if (seen === SWEEP_CHUNK) break;
    }
    await Promise.all(removals);
    if (seen < SWEEP_CHUNK || last === undefined) return;
    after = last;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
