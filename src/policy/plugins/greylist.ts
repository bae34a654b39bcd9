// greylist: the classic triplet check (client network, sender, recipient) at
// protocol_state=RCPT, state in the policy state (src/state PolicyState: the
// local LMDB store, or a PostgreSQL / Redis shared by several nodes, where
// the whole decision below is one round trip, atomic on the engine).
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
// Concurrency: on LMDB no read-modify-write transaction (lmdb-js's async
// transaction is not used, see NOTES.md). Two requests racing on one triplet
// can only make one of them write a slightly later first-seen time or lose one
// count toward the auto-whitelist, i.e. delay a pass by one retry; never let
// mail through early. The shared engines run the decision atomically.
//
// Keys: a triplet or client network too long for an LMDB key (a sender of
// thousands of characters) is stored under its digest (keys.ts storageKey),
// so it is greylisted like any other, without an exception.
//
// Exports: createGreylistPlugin, decideTriplet (pure, from src/state),
// clientNetwork (pure), GreylistSettings. A deferral is answered once the
// triplet is written where the next request reads it (on LMDB before its
// commit: see src/state/policy-state.ts). State failures (LMDB trouble, a shared engine
// unreachable or past state.timeout) propagate to the chain, which answers
// this plugin's onError: fail open (DUNNO). Greylisting only delays
// strangers; deferring every sender while the database is broken would stop
// all new mail.
import { isIPv4, isIPv6 } from 'node:net';
import { storageKey } from '../../state/index.js';
import type { GreylistParams, PolicyState } from '../../state/index.js';
import { FAIL_OPEN, type PolicyAction, type PolicyPlugin, type PolicyRequest } from '../types.js';

export { decideTriplet, type TripletVerdict } from '../../state/index.js';

export interface GreylistSettings extends GreylistParams {
  /** After "DEFER_IF_PERMIT 4.7.1 ". */
  readonly text: string;
  readonly header: boolean;
  readonly ipv4Prefix: number;
  readonly ipv6Prefix: number;
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

export function createGreylistPlugin(o: { readonly state: PolicyState; readonly settings: GreylistSettings; readonly now: () => number }): PolicyPlugin {
  const { state, settings: s } = o;
  const deferral: PolicyAction = `DEFER_IF_PERMIT 4.7.1 ${s.text}`;

  const check = async (req: PolicyRequest): Promise<PolicyAction | undefined> => {
    if (req.get('protocol_state') !== 'RCPT') return undefined;
    const net = storageKey(clientNetwork(req.get('client_address'), s.ipv4Prefix, s.ipv6Prefix));
    const key = storageKey(`${net}\0${req.get('sender').toLowerCase()}\0${req.get('recipient').toLowerCase()}`);
    const answer = await state.greylist(net, key, o.now(), s);
    if (answer.kind === 'defer') return deferral;
    if (answer.delayedMs === undefined || !s.header) return undefined;
    return `PREPEND X-Greylist: delayed ${Math.round(answer.delayedMs / 1000)} seconds by mailprocd`;
  };

  return { name: 'greylist', onError: FAIL_OPEN, check, maintain: (now) => state.expire(now, s) };
}
