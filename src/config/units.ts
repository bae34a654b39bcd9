// Units an administrator writes in the config file: sizes (10M, 512k, bytes)
// and durations (500ms, 30s, 5m, 2h, 1d, 1w, or a number of seconds). zod
// types that parse them; this module imports nothing of ours, so every config
// fragment (the daemon's schema, the policy section, plugin options) can use
// it without an import cycle.
import { z } from 'zod';

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmg]?)b?$/i;
const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$/i;

/** Bytes; accepts a number or "10M", "512k", "1G". */
export const size = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const m = SIZE_RE.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `expected a size like 10M, 512k or a number of bytes, got "${v}"` });
    return z.NEVER;
  }
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').toLowerCase()] ?? 1;
  return Math.round(Number(m[1]) * mult);
});

/** Milliseconds; accepts a number of seconds or "500ms", "30s", "5m", "2h", "1d". */
export const duration = z.union([z.number().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return Math.round(v * 1000);
  const m = DURATION_RE.exec(v.trim());
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `expected a duration like 30s, 5m, 2h or a number of seconds, got "${v}"` });
    return z.NEVER;
  }
  const unit = (m[2] ?? 's').toLowerCase();
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[unit] ?? 1000;
  return Math.round(Number(m[1]) * mult);
});
