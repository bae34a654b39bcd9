// Loads, validates and freezes the configuration. No file = the embedded
// default (every default in schema.ts). Relative paths are resolved against
// the working directory once, here, so the rest of the code sees absolute
// paths only. Fails with ConfigError listing EVERY problem, each naming its
// key ("limits.message_size: expected a size like 10M…") or, for YAML syntax,
// the file and line.
import { readFileSync } from 'node:fs';
import { hostname as osHostname, userInfo } from 'node:os';
import { resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { parseListen, type Listen } from './listen.js';
import { configSchema, type ParsedConfig } from './schema.js';
import { readTlsPair } from './tls.js';

export class ConfigError extends Error {
  constructor(readonly file: string, readonly problems: readonly string[]) {
    super(`${file}: invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

export interface Config extends Omit<ParsedConfig, 'paths' | 'lmtp' | 'smtp' | 'hostname'> {
  readonly file: string | undefined;
  readonly hostname: string;
  readonly paths: { readonly state: string; readonly sources: string; readonly db: string; readonly state_db: string; readonly spool: string; readonly run: string; readonly mail: string };
  readonly lmtp: { readonly listen: readonly Listen[]; readonly socket: ParsedConfig['lmtp']['socket']; readonly window: number; readonly on_timeout: 'queue' | 'defer' };
  readonly smtp: {
    readonly listen: readonly Listen[];
    readonly socket: ParsedConfig['smtp']['socket'];
    readonly tls: ParsedConfig['smtp']['tls'];
    /** Absolute; set (and checked readable, a matching pair) whenever tls is not off. */
    readonly tls_cert: string | undefined;
    readonly tls_key: string | undefined;
  };
  /** User deliveries run as when the tables name none. */
  readonly deliveryUser: string;
  readonly deliveryGroup: string | undefined;
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

function describeIssue(i: z.core.$ZodIssue, prefix: readonly (string | number)[]): string {
  const path = [...prefix, ...i.path.map(String)];
  if (i.code === 'unrecognized_keys') return i.keys.map((k) => `${[...path, k].join('.')}: unknown key`).join('\n  ');
  return `${path.join('.')}: ${i.message}`;
}

/** Validates an already-parsed object (from YAML or a test) and resolves it. */
export function resolveConfig(raw: unknown, file: string | undefined, cwd = process.cwd()): Config {
  const where = file ?? '(embedded default)';
  const problems: string[] = [];
  const input = raw ?? {};
  if (typeof input !== 'object' || Array.isArray(input)) throw new ConfigError(where, ['(top level): expected a mapping of keys']);
  // Each section is validated on its own so that one bad section does not hide
  // another's problems, nor the cross-key checks below.
  const shape = configSchema.shape;
  for (const k of Object.keys(input)) if (!(k in shape)) problems.push(`${k}: unknown key`);
  const sections: Record<string, unknown> = {};
  for (const [k, schema] of Object.entries(shape)) {
    const r = (schema as z.ZodType).safeParse((input as Record<string, unknown>)[k]);
    if (r.success) sections[k] = r.data;
    else problems.push(...r.error.issues.map((i) => describeIssue(i, [k])));
  }
  const c = sections as ParsedConfig;
  const listens = (section: 'lmtp' | 'smtp'): Listen[] =>
    (sections[section] === undefined ? [] : c[section].listen).map((spec) => parseListen(spec, cwd));
  const lmtp = { listen: listens('lmtp'), socket: c.lmtp?.socket };
  const smtp = { listen: listens('smtp'), socket: c.smtp?.socket };
  if (sections.lmtp !== undefined && sections.smtp !== undefined && lmtp.listen.length === 0 && smtp.listen.length === 0) {
    problems.push('lmtp.listen: no LMTP or SMTP listener configured');
  }
  if (sections.delivery !== undefined && !c.delivery.default.includes(':') && c.delivery.default !== 'discard') {
    problems.push(`delivery.default: expected "maildir:PATH" or "mbox:PATH", got "${c.delivery.default}"`);
  }
  if (sections.smtp !== undefined && c.smtp.tls !== 'off') {
    const { tls, tls_cert: cert, tls_key: key } = c.smtp;
    if (cert === undefined) problems.push(`smtp.tls_cert: required when smtp.tls is ${tls} (a PEM certificate file)`);
    if (key === undefined) problems.push(`smtp.tls_key: required when smtp.tls is ${tls} (a PEM private key file)`);
    if (cert !== undefined && key !== undefined) {
      const pair = readTlsPair(resolve(cwd, cert), resolve(cwd, key));
      if ('problems' in pair) problems.push(...pair.problems);
    }
  }
  if (sections.queue !== undefined && c.queue.retry_max < c.queue.retry_min) problems.push('queue.retry_max: must not be below queue.retry_min');
  if (problems.length > 0) throw new ConfigError(where, problems);
  const state = resolve(cwd, c.paths.state);
  const paths = {
    state,
    sources: resolve(cwd, c.paths.sources),
    db: c.paths.db !== undefined ? resolve(cwd, c.paths.db) : resolve(state, 'db'),
    state_db: c.paths.state_db !== undefined ? resolve(cwd, c.paths.state_db) : resolve(state, 'state-db'),
    spool: c.paths.spool !== undefined ? resolve(cwd, c.paths.spool) : resolve(state, 'spool'),
    run: c.paths.run !== undefined ? resolve(cwd, c.paths.run) : resolve(state, 'run'),
    mail: c.paths.mail !== undefined ? resolve(cwd, c.paths.mail) : resolve(state, 'mail'),
  };

  const root = process.getuid?.() === 0;
  const config: Config = {
    ...c,
    file,
    hostname: c.hostname ?? osHostname(),
    paths,
    lmtp: { listen: lmtp.listen, socket: c.lmtp.socket, window: c.lmtp.window, on_timeout: c.lmtp.on_timeout },
    smtp: {
      listen: smtp.listen, socket: c.smtp.socket, tls: c.smtp.tls,
      tls_cert: c.smtp.tls_cert !== undefined ? resolve(cwd, c.smtp.tls_cert) : undefined,
      tls_key: c.smtp.tls_key !== undefined ? resolve(cwd, c.smtp.tls_key) : undefined,
    },
    // Like Postfix's default_privs: never deliver as root by default.
    deliveryUser: c.delivery.user ?? (root ? 'nobody' : userInfo().username),
    deliveryGroup: c.delivery.group,
  };
  return deepFreeze(config);
}

/** Reads FILE (YAML) or, with no file, returns the embedded default. */
export function loadConfig(file?: string, cwd = process.cwd()): Config {
  if (file === undefined) return resolveConfig({}, undefined, cwd);
  const path = resolve(cwd, file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [`cannot read: ${(err as Error).message}`]);
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(path, doc.errors.map((e) => `line ${e.linePos?.[0]?.line ?? '?'}: ${(e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '')}`));
  }
  return resolveConfig(doc.toJS(), path, cwd);
}
