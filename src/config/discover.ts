// Where the configuration comes from, the same for mailprocd and every
// mailproc command: --config FILE, else $MAILPROCD_CONFIG, else
// /etc/mailprocd/mailprocd.yaml when it exists, else the embedded default,
// whose relative paths (./var, ./db) are resolved against the package root
// (the checkout, or /usr/lib/mailprocd), found from this module's own path,
// never against the caller's working directory. A named file's relative
// paths still resolve against the working directory, as they always did.
//
// Exports: discoverConfig (pure: the decision, with its inputs injectable),
// loadDiscoveredConfig (discover, then load), packageRoot, packageVersion,
// SYSTEM_CONFIG. $MAILPROCD_SYSTEM_CONFIG replaces the /etc path: it is for
// tests only, so that they never need to write into the real /etc.
// Fails as loadConfig does (ConfigError) for a file that is named but bad.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, type Config } from './load.js';

export const SYSTEM_CONFIG = '/etc/mailprocd/mailprocd.yaml';

/** The config decision: a file to read (and how it was found), or the embedded default with its base directory. */
export type ConfigSource =
  | { readonly kind: 'file'; readonly file: string; readonly from: 'option' | 'environment' | 'system' }
  | { readonly kind: 'default'; readonly base: string };

export interface DiscoverInputs {
  /** --config, when given. */
  readonly option?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
  readonly exists?: (path: string) => boolean;
  readonly root?: string;
}

let root: string | undefined;

/** The directory holding mailprocd's package.json: from dist/src/config/ (or src/config/) upwards. */
export function packageRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'mailprocd') return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find mailprocd's package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The version in package.json. */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** Which configuration applies; pure apart from `exists` (default: the file system). */
export function discoverConfig(inputs: DiscoverInputs = {}): ConfigSource {
  const env = inputs.env ?? process.env;
  const exists = inputs.exists ?? existsSync;
  if (inputs.option !== undefined && inputs.option !== '') return { kind: 'file', file: inputs.option, from: 'option' };
  const fromEnv = env.MAILPROCD_CONFIG;
  if (fromEnv !== undefined && fromEnv !== '') return { kind: 'file', file: fromEnv, from: 'environment' };
  const system = env.MAILPROCD_SYSTEM_CONFIG !== undefined && env.MAILPROCD_SYSTEM_CONFIG !== '' ? env.MAILPROCD_SYSTEM_CONFIG : SYSTEM_CONFIG;
  if (exists(system)) return { kind: 'file', file: system, from: 'system' };
  return { kind: 'default', base: inputs.root ?? packageRoot() };
}

/** Loads what discoverConfig finds. */
export function loadConfigFrom(source: ConfigSource): Config {
  return source.kind === 'file' ? loadConfig(source.file) : loadConfig(undefined, source.base);
}

/** discoverConfig, then loadConfig: what every command calls with its --config (or undefined). */
export function loadDiscoveredConfig(option?: string): Config {
  return loadConfigFrom(discoverConfig({ option }));
}
