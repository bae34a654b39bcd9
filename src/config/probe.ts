// The `probe` section: mailmond's delivery-delay probes (docs/mailmond.md).
// Embedded by schema.ts as `probe: probeConfigSchema`; its defaults ARE the
// embedded default. mailprocd and mailmond read the same file: mailmond signs
// each probe with `key`, mailprocd records only probes whose signature holds.
// Without a key every probe is ignored (and logged): a probe nobody can
// verify could be forged, and a forged probe must never count as mail that
// arrived.
import { z } from 'zod';
import { duration } from './units.js';

export const probeConfigSchema = z.object({
  /** The HMAC-SHA256 key probes are signed with; keep the config file unreadable to other users. */
  key: z.string().min(16, 'must be at least 16 characters (e.g. openssl rand -hex 32)').optional(),
  /** How long a probe's arrival record is kept for mailmond to read. */
  keep: duration.refine((ms) => ms >= 60_000, { message: 'must be at least 60s' }).default(86_400_000),
}).strict().prefault({});

export type ProbeConfig = z.output<typeof probeConfigSchema>;
