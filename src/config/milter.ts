// The `milter:` section: the milter endpoint Postfix's smtpd_milters (and
// Sendmail's INPUT_MAIL_FILTER) talks to (src/milter), embedded by schema.ts
// as `milter: milterConfigSchema`. Its defaults ARE the embedded default:
// listen on unix:./var/run/milter.sock and 127.0.0.1:10042, the policy chain
// at RCPT, the site spam check at end of message when SpamAssassin is
// installed, no user filters.
//
// Exports: milterConfigSchema, MilterConfig, MilterConfigInput. Pure;
// validation problems are zod issues whose path names the key.
import { z } from 'zod';
import { listenAddress, socketOptions } from './listen.js';
import { duration, size } from './units.js';

const positiveDuration = duration.refine((ms) => ms > 0, { message: 'must be more than 0' });

export const milterConfigSchema = z.object({
  /** Where the MTA connects; [] = no milter listener. */
  listen: z.array(listenAddress).default(['unix:./var/run/milter.sock', '127.0.0.1:10042']),
  /** Unix socket permissions (0660): set group postfix so Postfix's smtpd can connect. */
  socket: socketOptions.prefault({}),
  limits: z.object({
    /** Connections served at once; past it new ones are closed at once (Postfix applies milter_default_action). */
    connections: z.number().int().min(1).default(500),
    /** One milter packet larger than this closes the connection (the protocol's own limit is 64 KiB of body per chunk). */
    packet_size: size.default(1024 * 1024),
    /** Body bytes kept per message for the spam check; past it the check is skipped (X-Spam-Status says so). */
    message_size: size.default(500 * 1024),
    /** Nothing from the MTA for this long → the connection is closed. Postfix's milter_*_timeout are 30 s / 300 s. */
    idle_timeout: positiveDuration.default(600_000),
  }).strict().prefault({}),
  /** Ask the policy chain (policy.chain: lists, userpolicy, greylist, …) at RCPT, as check_policy_service would. */
  policy: z.boolean().default(true),
  spam: z.object({
    /** auto: when SpamAssassin is installed (and spam.enabled is not false); true: always (missing = on_error); false: never. */
    enabled: z.union([z.boolean(), z.literal('auto')]).default('auto'),
    /** The service user whose checker (preferences, Bayes) judges pre-queue mail; never root. */
    user: z.string().min(1).default('nobody'),
    /** At or above this score the message is refused with 550 5.7.1; below it, X-Spam-* headers are added. */
    reject_score: z.number().default(10),
    /** Checker down or slow: continue = accept with "X-Spam-Status: unchecked"; tempfail = 451 4.7.1. */
    on_error: z.enum(['continue', 'tempfail']).default('continue'),
  }).strict().prefault({}),
  /** User filters: paths to ES modules whose default export is a MilterFilterFactory (src/milter/api.ts); relative to the working directory. */
  filters: z.array(z.string().min(1)).default([]),
  /** One filter call longer than this is a failure (a filter stuck in a loop is stopped and restarted). */
  filter_timeout: positiveDuration.default(10_000),
  /** A filter that throws, times out or crashes: tempfail (451 4.7.1, the MTA retries) or continue (as if it had no opinion). */
  on_filter_error: z.enum(['tempfail', 'continue']).default('tempfail'),
}).strict().prefault({});

export type MilterConfig = z.output<typeof milterConfigSchema>;
export type MilterConfigInput = z.input<typeof milterConfigSchema>;
