// The Sender Rewriting Scheme for forwards (relay.srs; the scheme itself is
// src/relay/srs.ts): with a secret, a forward's envelope sender becomes
// SRS0=HASH=TT=domain=local@<relay.srs.domain>, so the next hop's SPF check
// sees our domain; a bounce that comes back to such an address is reversed
// here into a forward to the original sender (the bounce's null sender
// kept). A rewritten address whose hash does not match, or that is older
// than relay.srs.max_age, is refused at RCPT (550 5.1.1): nobody can use
// our domain as an open relay by making such addresses up.
//
// Exports: srsSender, srsRecipient.
import type { Config } from '../config/index.js';
import type { RecipientAddress } from '../mail/address.js';
import { status, type Status } from '../mail/status.js';
import { isSrsAddress, srsForward, srsReverse } from '../relay/index.js';
import type { ResolvedRecipient } from './resolve.js';

const DAY_MS = 86_400_000;

const srsDomain = (c: Config): string => (c.relay.srs.domain ?? c.hostname).toLowerCase();

/** The envelope sender a forward carries: rewritten when relay.srs has a secret, else as it came. */
export function srsSender(c: Config, sender: string): string {
  const secret = c.relay.srs.secret;
  return secret === undefined || sender === '' ? sender : srsForward(sender, { secret, domain: srsDomain(c) }, new Date());
}

/**
 * For an SRS address in our SRS domain: a forward to the original sender,
 * or the refusal. undefined: not ours to reverse (SRS off, another domain,
 * not an SRS address) — the tables decide.
 */
export function srsRecipient(c: Config, rcpt: RecipientAddress): ResolvedRecipient | Status | undefined {
  const secret = c.relay.srs.secret;
  if (secret === undefined || rcpt.domain.toLowerCase() !== srsDomain(c) || !isSrsAddress(rcpt.address)) return undefined;
  const r = srsReverse(rcpt.address, { secrets: [secret, ...c.relay.srs.old_secrets], maxAgeDays: Math.max(1, Math.round(c.relay.srs.max_age / DAY_MS)) }, new Date());
  if ('error' in r) return status('5.1.1', `<${rcpt.address}>: Recipient address rejected: ${r.error}`);
  return { rules: [{ destination: { kind: 'forward', address: r.address }, conditions: [], stop: true, origin: 'relay.srs' }] };
}
