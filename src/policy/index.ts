// The policy folder's public surface: the config fragment, the service the
// daemon starts, the list-roster sync `mailproc lists sync` runs, the
// user-policy store the per-user control sockets write (service.userPolicies),
// and the plugin contract. Everything else in src/policy is internal.
//
// Nothing in src/policy imports src/config: src/config/schema.ts imports
// policyConfigSchema from here, and an import back would be a load-order cycle.

export { PLUGIN_NAMES, RATE_KEYS, policyConfigSchema, policyConfigSchemaWith, type PolicyConfig, type PolicyConfigInput, type PluginName } from './config.js';
export { policyDbDir, startPolicyService, type PolicyService, type PolicyServiceOptions } from './service.js';
export type { BoundListener } from './server.js';
export type { Decision } from './chain.js';
export { readListRoster, syncListSubscribers, type ListSource, type ListSyncOptions, type ListSyncOutcome } from './list-sync.js';
export { policyRequest } from './protocol.js';
export { isDecisive, type PolicyAction, type PolicyPlugin, type PolicyRequest } from './types.js';
export { judgeUserPolicy, type UserPolicyEntry, type UserPolicyStore } from './plugins/user-policy.js';
export type { UserPolicyRecord } from './state.js';
