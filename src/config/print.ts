// The effective configuration as YAML, in the units an administrator writes
// (durations like 5m, sizes like 10M, socket modes like "0660"), for
// `mailprocd --check-config`: what the daemon would run with, every default
// filled in and every path resolved. Reading the output back as a config
// file gives the same configuration, except the secrets, printed as "***"
// (too short to be taken for one if the output is used as a config): a
// password in state.backend's URL, relay.srs.secret and old_secrets,
// probe.key. The output is pasted into tickets and mailing lists. Pure.
//
// Exports: formatConfigYaml. The units come from the schema (units.ts unitOf),
// so a new duration or size key is printed right with no change here.
import { stringify } from 'yaml';
import type { z } from 'zod';
import { octalMode } from './listen.js';
import type { Config } from './load.js';
import { configSchema } from './schema.js';
import { redactUrl } from './state.js';
import { formatDuration, formatSize, unitOf } from './units.js';

const transformOf = (s: z.ZodType): unknown => ((s._zod.def as { out?: z.ZodType }).out?._zod.def as { transform?: unknown } | undefined)?.transform;

/** value as the schema would read it back. */
function back(schema: z.ZodType | undefined, value: unknown): unknown {
  if (schema === undefined || value === undefined || value === null) return value;
  const def = schema._zod.def as { type: string; innerType?: z.ZodType; in?: z.ZodType; element?: z.ZodType; shape?: Record<string, z.ZodType>; options?: z.ZodType[] };
  switch (def.type) {
    case 'default': case 'optional': case 'nullable': case 'readonly': case 'nonoptional': case 'prefault':
      return back(def.innerType, value);
    case 'pipe': {
      const unit = unitOf(schema);
      if (unit === 'size' && typeof value === 'number') return formatSize(value);
      if (unit === 'duration' && typeof value === 'number') return formatDuration(value);
      if (transformOf(schema) === transformOf(octalMode) && typeof value === 'number') return `0${value.toString(8)}`;
      return back(def.in, value);
    }
    case 'array':
      return Array.isArray(value) ? value.map((v) => back(def.element, v)) : value;
    case 'object': {
      if (typeof value !== 'object') return value;
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = back(def.shape?.[k], v);
      return out;
    }
    case 'union': {
      // An object value goes through the first object option: config unions are of a scalar and one object at most.
      const obj = def.options?.find((o) => (o._zod.def as { type: string }).type === 'object');
      return typeof value === 'object' && !Array.isArray(value) && obj !== undefined ? back(obj, value) : value;
    }
    default:
      return value;
  }
}

const MASK = '***';
const masked = (secret: string | undefined): string | undefined => (secret === undefined ? undefined : MASK);

/** The config file that would give `config`, as YAML. */
export function formatConfigYaml(config: Config): string {
  const file: Record<string, unknown> = {};
  for (const key of Object.keys(configSchema.shape)) {
    const value = (config as unknown as Record<string, unknown>)[key];
    if (value !== undefined) file[key] = value;
  }
  // The listeners as written, with unix paths resolved.
  for (const section of ['lmtp', 'smtp'] as const) {
    file[section] = { ...config[section], listen: config[section].listen.map((l) => (l.kind === 'unix' ? `unix:${l.path}` : l.spec)) };
  }
  // The engine's URL as written, less its password: --check-config output is pasted into tickets.
  const b = config.state.backend;
  file.state = { ...config.state, backend: b.kind === 'lmdb' ? 'lmdb' : redactUrl(b.url) };
  const srs = config.relay.srs;
  file.relay = { ...config.relay, srs: { ...srs, secret: masked(srs.secret), old_secrets: srs.old_secrets.map(() => MASK) } };
  file.probe = { ...config.probe, key: masked(config.probe.key) };
  return stringify(back(configSchema, file), { lineWidth: 0 });
}
