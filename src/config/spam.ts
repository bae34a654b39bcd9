// The `spam` section: SpamAssassin run as each recipient's owner, in
// persistent per-user checkers (src/workers/spam-checkers.ts), verdicts in
// rules (src/local/spam.ts). Embedded by schema.ts as `spam: spamConfigSchema`;
// its defaults ARE the embedded default. Per-address settings (on/off,
// threshold, fail open/closed) live in the `spam` table (db/README.md).
import { z } from 'zod';
import { duration, size } from './units.js';

export const spamConfigSchema = z.object({
  /**
   * auto: check when SpamAssassin (Debian: spamassassin spamd) is installed,
   * otherwise log one line at start and deliver unchecked. true: it must be
   * installed (missing = every check fails as on_error says). false: never.
   * The spam table turns checking off (or on) per address.
   */
  enabled: z.union([z.boolean(), z.literal('auto')]).default('auto'),
  /** A user's checker with nothing to do exits after this long. */
  idle: duration.default(600_000),
  /** Checkers running at once; past it the least recently used one is stopped. */
  max_checkers: z.number().int().min(1).default(50),
  /** One check (connect to the answer) longer than this counts as a checker failure. */
  timeout: duration.refine((ms) => ms > 0, 'must be more than 0').default(60_000),
  /** A checker that does not listen within this long after its start counts as a failure. */
  start_timeout: duration.refine((ms) => ms > 0, 'must be more than 0').default(60_000),
  /** Messages larger than this are not checked (like spamc's 500k); the header says so. */
  max_size: size.default(500 * 1024),
  /** Checker down, slow or crashing: open = deliver with "X-Spam-Status: unchecked (reason)"; closed = 451 4.7.1 for that recipient. */
  on_error: z.enum(['open', 'closed']).default('open'),
  /** Add X-Spam-Flag, X-Spam-Level and X-Spam-Status to the owner's copies. */
  headers: z.boolean().default(true),
  /** SpamAssassin's network tests (DNSBLs, Razor, …); off = spamd -L. */
  network_tests: z.boolean().default(false),
  /** Each checker merges its Bayes journal into the database this often … */
  bayes_sync: duration.default(300_000),
  /** … or after this many checks, whichever comes first. */
  bayes_sync_messages: z.number().int().min(0).default(1000),
  /** The Perl interpreter that runs libexec/spam-checker.pl. */
  perl: z.string().min(1).default('perl'),
}).strict().prefault({});

export type SpamConfig = z.output<typeof spamConfigSchema>;
export type SpamConfigInput = z.input<typeof spamConfigSchema>;
