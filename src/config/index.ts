// Public surface of the configuration: load once at start, pass the frozen
// Config down. See schema.ts for every key and its default.
export { loadConfig, resolveConfig, parseListen, ConfigError } from './load.js';
export type { Config, Listen } from './load.js';
export type { ConfigInput } from './schema.js';
