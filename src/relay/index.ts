// Everything that speaks SMTP or LMTP outward: the per-peer connection pools,
// the sendmail program, and the one mapping of a peer's reply to a Status.
// The outbound relay (relay.smtp) carries bounces, forwards and vacation
// replies; list managers (Mailman 3's LMTP runner) get a pool each.
//
// Exports: Relays (one pooled relay per peer and settings, made on first
// use), Relay, SmtpRelay, SendmailRelay, parseRelayTarget,
// parseManagerTarget, probeRelay, statusFromReply, statusFromSendError, the
// SRS scheme (srs.ts), types.
import type { RelayConfig } from '../config/relay.js';
import { SendmailRelay } from './sendmail-relay.js';
import { parseRelayTarget, SmtpRelay, type Relay, type RelayOptions, type RelayTarget } from './smtp-relay.js';

export { probeRelay } from './probe.js';
export { isSrsAddress, srsForward, srsReverse, type SrsForwardOptions, type SrsReverse, type SrsReverseOptions } from './srs.js';
export { SendmailRelay } from './sendmail-relay.js';
export { parseRelayTarget, SmtpRelay, type OutboundMessage, type Relay, type RelayOptions, type RelayTarget } from './smtp-relay.js';
export { statusFromReply, statusFromSendError } from './smtp-reply.js';

/** What the relays need from the configuration, read again for each new pool (SIGHUP). */
export interface RelaySettings {
  /** Our name in EHLO/LHLO. */
  readonly name: string;
  readonly relay: RelayConfig;
}

/**
 * A list manager's LMTP address, as the lists table writes it:
 * "lmtp:inet:HOST:PORT" or "lmtp:unix:/PATH" (Postfix's notation). Throws on
 * anything else, with the reason.
 */
export function parseManagerTarget(spec: string): RelayTarget {
  if (spec.startsWith('lmtp:unix:')) {
    const path = spec.slice('lmtp:unix:'.length);
    if (!path.startsWith('/')) throw new Error(`bad list manager ${JSON.stringify(spec)}: the unix socket path must be absolute`);
    return { path };
  }
  if (spec.startsWith('lmtp:inet:')) return parseRelayTarget(spec.slice('lmtp:inet:'.length));
  throw new Error(`bad list manager ${JSON.stringify(spec)}: expected lmtp:inet:HOST:PORT or lmtp:unix:PATH`);
}

/** One pooled relay per peer and settings, so connections are reused across messages and callers. */
export class Relays {
  private readonly byKey = new Map<string, Relay>();

  constructor(private readonly settings: () => RelaySettings) {}

  /** The outbound relay (relay.smtp): bounces, forwards, vacation replies. */
  outbound(): Relay {
    const s = this.settings();
    const r = s.relay;
    if (r.smtp === 'sendmail') return this.cached(`sendmail ${r.sendmail} ${r.timeout}`, () => new SendmailRelay(r.sendmail, r.timeout));
    return this.smtp(r.smtp, { name: s.name, maxConnections: r.max_connections, timeoutMs: r.timeout, tls: r.tls });
  }

  /** A list manager's LMTP runner ("lmtp:inet:HOST:PORT" or "lmtp:unix:PATH"); throws on a malformed spec. */
  lmtp(manager: string): Relay {
    const s = this.settings();
    const target = parseManagerTarget(manager);
    const options: RelayOptions = { name: s.name, lmtp: true, maxConnections: s.relay.max_connections, timeoutMs: s.relay.timeout, tls: 'off' };
    return this.cached(`${manager} ${JSON.stringify(options)}`, () => new SmtpRelay(target, options));
  }

  /** The relay for "HOST:PORT" with these options (throws on a malformed spec: config validation should have caught it). */
  smtp(spec: string, options: RelayOptions): Relay {
    return this.cached(`smtp ${spec} ${JSON.stringify(options)}`, () => new SmtpRelay(parseRelayTarget(spec), options));
  }

  /** Closes every pool (daemon stop); a later call opens a new one. */
  close(): void {
    for (const r of this.byKey.values()) r.close();
    this.byKey.clear();
  }

  private cached(key: string, make: () => Relay): Relay {
    let r = this.byKey.get(key);
    if (r === undefined) {
      r = make();
      this.byKey.set(key, r);
    }
    return r;
  }
}
