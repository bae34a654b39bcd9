// The `rules` section: what mailbox owners may do with their own rules
// (`mailproc rules`, src/control/user-rules.ts) and how long the decision
// log keeps what happened to their mail. Embedded by schema.ts as
// `rules: rulesConfigSchema`; its defaults ARE the embedded default. The
// language and the precedence are in db/README.md ("Your users' own rules").
import { z } from 'zod';
import { duration } from './units.js';

const absolutePath = z.string().min(1).refine((p) => p.startsWith('/'), 'must be an absolute path');

export const rulesConfigSchema = z.object({
  /**
   * Directories (besides the owner's home and the address's own mail
   * directory) a user's maildir:/mbox: destination may be in. ${user} is the
   * owner's user name, ${home} their home.
   */
  user_roots: z.array(absolutePath).default([]),
  /** May users write pipe: rules? false (default), true, or the programs (absolute paths, argv[0]) they may run. */
  user_pipes: z.union([z.boolean(), z.array(absolutePath)]).default(false),
  /** Rules one address may have. */
  user_max_rules: z.number().int().min(1).max(10_000).default(100),
  /** forward: destinations among one address's rules. */
  user_max_forwards: z.number().int().min(0).default(5),
  /** Decisions kept per address for `mailproc rules log` … */
  log_entries: z.number().int().min(0).default(1000),
  /** … and for at most this long. */
  log_max_age: duration.default(30 * 86_400_000),
}).strict().prefault({});

export type RulesConfig = z.output<typeof rulesConfigSchema>;
