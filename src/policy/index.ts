// The policy folder's public surface: the service the daemon starts, the
// list-roster sync `mailproc lists sync` runs, the user-policy store the
// per-user control sockets write (service.userPolicies), the DNS plugins the
// daemon builds when the chain names them, and the plugin contract.
// Everything else in src/policy is internal. Its configuration schema is
// src/config/policy.ts (config/ owns every schema).
export { startPolicyService, type PolicyService, type PolicyServiceOptions } from './service.js';
export type { BoundListener } from './server.js';
export type { Decision } from './chain.js';
export { readListRoster, syncListSubscribers, type ListSource, type ListSyncOptions, type ListSyncOutcome } from './list-sync.js';
export { policyRequest } from './protocol.js';
export { isDecisive, type PolicyAction, type PolicyPlugin, type PolicyRequest } from './types.js';
export { judgeUserPolicy, type UserPolicyEntry, type UserPolicyStore } from './plugins/user-policy.js';
export type { UserPolicyRecord } from '../state/index.js';
export { createDnsblPlugin } from './plugins/dnsbl.js';
export { createSpfPlugin } from './plugins/spf.js';
