// The milter folder's public surface. api.ts is the filter contract (for
// built-in checks and users' filters alike); service.ts starts the listeners
// (server.ts, one conversation per connection: session.ts); protocol.ts is
// the wire format, exported for the tools that play the MTA (tests, the
// benchmark). The built-in checks: policy-filter.ts (the policy chain at
// RCPT) and spam-filter.ts (the site spam check at end of message).
// filter-host.ts runs administrators' filters (milter.filters), each module
// in its own worker thread, after the built-in checks.
// Its configuration schema is src/config/milter.ts (config/ owns every schema).
export {
  MILTER_EVENTS, eventsOf, verdictOf,
  type ConnectInfo, type EomSession, type MilterEvent, type MilterFilter, type MilterFilterFactory,
  type MilterResult, type MilterSession, type MilterVerdict, type NormalizedVerdict,
} from './api.js';
export {
  FILTER_MEMORY_MB, loadMilterFilters, MilterFilterLoadError,
  type LoadedMilterFilters, type LoadMilterFiltersOptions,
} from './filter-host.js';
export { startMilterService, type MilterService, type MilterServiceOptions } from './service.js';
export type { BoundListener as MilterListener } from './server.js';
export type { NamedFilter } from './session.js';
export { createPolicyFilter, mapPolicyAction, POLICY_FILTER_OBSERVES, policyAttributes, type MappedAction, type PolicyFacts, type PolicyFilterOptions } from './policy-filter.js';
export { createSpamFilter, rebuildMessage, SPAM_FILTER_OBSERVES, receivedHeader, spamHeaderFields, type HopFacts, type SpamFilterOptions, type SpamFilterSettings } from './spam-filter.js';
export {
  encodeCommand, encodeReply, formatReplyCode, negotiate, PacketDecoder, parseCommand, parseReply,
  MACRO_STAGES, MAX_CHUNK, MILTER_VERSION, SMFIF, SMFIP,
  type DecodedPacket, type MilterReply, type MtaCommand, type ProtocolError,
} from './protocol.js';
