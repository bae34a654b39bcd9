// Public surface of the configuration: load once at start, pass the frozen
// Config down. config/ owns every schema: schema.ts (the file), policy.ts
// (the policy section and its plugins' options), listen.ts (listen addresses
// and sockets, one reading for every listener), units.ts (sizes, durations),
// tls.ts (the STARTTLS certificate and key, read and checked as a pair).
export { loadConfig, resolveConfig, ConfigError } from './load.js';
export type { Config } from './load.js';
export { parseListen, type Listen } from './listen.js';
export { readTlsPair, type TlsPair } from './tls.js';
export type { ConfigInput } from './schema.js';
export {
  PLUGIN_NAMES, RATE_KEYS, accessActionSchema, dnsblOptionsSchema, policyConfigSchema, spfOptionsSchema,
  type DnsblOptions, type PluginName, type PolicyConfig, type PolicyConfigInput, type RateRuleConfig, type SpfOptions,
} from './policy.js';
export { redactUrl, stateConfigSchema, type StateBackend, type StateConfig, type StateConfigInput } from './state.js';
export { milterConfigSchema, type MilterConfig, type MilterConfigInput } from './milter.js';
export { spamConfigSchema, type SpamConfig, type SpamConfigInput } from './spam.js';
export { rulesConfigSchema, type RulesConfig } from './rules.js';
export { DEFAULT_METRICS_LISTEN, isLoopbackListen, metricsConfigSchema, type MetricsConfig } from './metrics.js';
export { probeConfigSchema, type ProbeConfig } from './probe.js';
export { discoverConfig, loadConfigFrom, loadDiscoveredConfig, packageRoot, packageVersion, SYSTEM_CONFIG, type ConfigSource } from './discover.js';
