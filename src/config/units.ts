// Units an administrator writes in the config file: sizes (10M, 512k, bytes)
// and durations (500ms, 30s, 5m, 2h, 1d, 1w, or a number of seconds). zod
// types that parse them; this module imports nothing of ours, so every config
// fragment (the daemon's schema, the policy section, plugin options) can use
// it without an import cycle.
import { z } from 'zod';

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([kmg]?)b?$/i;
const DURATION_RE = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$/i;

/** Bytes; accepts a number or "10M", "512k", "1G". */
export const size = z.union([z.number().int().nonnegative(), z.string()]).transform(function parseSize(v, ctx) {
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
export const duration = z.union([z.number().nonnegative(), z.string()]).transform(function parseDuration(v, ctx) {
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

/** 10485760 → "10M", 1536 → "1536" (whole units only, so that it reads back the same). */
export function formatSize(bytes: number): string | number {
  for (const [unit, m] of [['G', 1024 ** 3], ['M', 1024 ** 2], ['k', 1024]] as const) if (bytes >= m && bytes % m === 0) return `${bytes / m}${unit}`;
  return bytes;
}

/** 300000 → "5m", 1500 → "1500ms" (the largest whole unit, so that it reads back the same). */
export function formatDuration(ms: number): string {
  for (const [unit, m] of [['w', 604_800_000], ['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= m && ms % m === 0) return `${ms / m}${unit}`;
  }
  return `${ms}ms`;
}

/** Which unit a schema reads ("size", "duration"), looking through default, optional and refine; for printing a config back. */
export function unitOf(schema: z.ZodType): 'size' | 'duration' | undefined {
  const out = (schema._zod.def as { out?: z.ZodType }).out;
  const fn = (out?._zod.def as { transform?: unknown } | undefined)?.transform;
  const want = (s: z.ZodType): unknown => ((s._zod.def as { out?: z.ZodType }).out?._zod.def as { transform?: unknown }).transform;
  if (fn !== undefined && fn === want(size)) return 'size';
  if (fn !== undefined && fn === want(duration)) return 'duration';
  return undefined;
}
