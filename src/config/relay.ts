// The `relay` and `dedupe` sections. `relay`: the one way out for mail we
// send on — forwards, vacation replies and bounces (src/relay/outbound.ts);
// list managers have their own address in the lists table. `dedupe`: how
// long a delivered Message-ID is remembered per owner (src/local/dedupe.ts).
// Embedded by schema.ts; their defaults ARE the embedded default.
import { z } from 'zod';
import { duration } from './units.js';

const hostPort = /^(\[[0-9a-fA-F:.]+\]|[^:\s/[\]]+):\d{1,5}$/;

export const relayConfigSchema = z.object({
  /**
   * "HOST:PORT" (an MTA's SMTP; nodemailer's pool keeps connections open
   * across messages) or "sendmail" (`relay.sendmail -i -f SENDER -- RCPT…`
   * per message).
   */
  smtp: z.string().refine((s) => s === 'sendmail' || (hostPort.test(s) && Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535 && Number(s.slice(s.lastIndexOf(':') + 1)) > 0), {
    message: 'expected "HOST:PORT" (e.g. "127.0.0.1:25") or "sendmail"',
  }).default('127.0.0.1:25'),
  /** The sendmail program for smtp: sendmail (Postfix's, or any that takes -i -f). */
  sendmail: z.string().refine((p) => p.startsWith('/'), 'must be an absolute path').default('/usr/sbin/sendmail'),
  /** Connections open to the relay at once (Postfix's per-destination concurrency). */
  max_connections: z.number().int().min(1).max(100).default(5),
  /** Connect, greeting and per-reply timeout. */
  timeout: duration.refine((ms) => ms > 0, 'must be more than 0').default(60_000),
  /**
   * STARTTLS to the relay: optional = when it offers it (the certificate is
   * not verified, as Postfix's "may"); required = refuse to send in clear
   * (4.7.x, retried); off = never.
   */
  tls: z.enum(['off', 'optional', 'required']).default('optional'),
  /**
   * Sender Rewriting Scheme for forwards: with a secret, a forward's envelope
   * sender becomes SRS0=…@domain so SPF at the next hop passes, and bounces to
   * it are reversed. Off without a secret.
   */
  srs: z.object({
    secret: z.string().min(16, 'must be at least 16 characters').optional(),
    /** Earlier secrets still accepted when reversing, so a change does not break bounces in flight. */
    old_secrets: z.array(z.string().min(1)).default([]),
    /** The domain of rewritten senders; default the hostname. Mail to it must reach us. */
    domain: z.string().min(1).optional(),
    /** A rewritten address older than this is not reversed (its bounce is refused). */
    max_age: duration.default(21 * 86_400_000),
  }).strict().prefault({}),
}).strict().prefault({});

export const dedupeConfigSchema = z.object({
  /** The same Message-ID to the same owner within this long is delivered once (rule option dedupe; always for lists). */
  window: duration.refine((ms) => ms > 0, 'must be more than 0').default(86_400_000),
}).strict().prefault({});

export type RelayConfig = z.output<typeof relayConfigSchema>;
