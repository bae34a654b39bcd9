// Everything that speaks SMTP or LMTP outward: the per-peer connection pools
// and the one mapping of a peer's reply to a Status. The queue hands bounces
// here; forwards, vacation replies and list managers will too.
//
// Exports: Relays (one pooled SmtpRelay per peer, made on first use),
// SmtpRelay, parseRelayTarget, statusFromReply, statusFromSendError, types.
import { parseRelayTarget, SmtpRelay, type RelayOptions } from './smtp-relay.js';

export { parseRelayTarget, SmtpRelay, type OutboundMessage, type RelayOptions, type RelayTarget } from './smtp-relay.js';
export { statusFromReply, statusFromSendError } from './smtp-reply.js';

/** One pooled relay per "HOST:PORT", so connections are reused across messages and callers. */
export class Relays {
  private readonly bySpec = new Map<string, SmtpRelay>();

  constructor(private readonly options: () => RelayOptions) {}

  /** The relay for "HOST:PORT" (throws on a malformed spec: config validation should have caught it). */
  get(spec: string): SmtpRelay {
    let r = this.bySpec.get(spec);
    if (r === undefined) {
      r = new SmtpRelay(parseRelayTarget(spec), this.options());
      this.bySpec.set(spec, r);
    }
    return r;
  }

  /** Closes every pool (daemon stop); a later get() opens a new one. */
  close(): void {
    for (const r of this.bySpec.values()) r.close();
    this.bySpec.clear();
  }
}
