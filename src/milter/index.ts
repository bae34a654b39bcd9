// The milter folder's public surface. api.ts is the filter contract (for
// built-in checks and users' filters alike); service.ts starts the listeners
// (server.ts, one conversation per connection: session.ts); protocol.ts is
// the wire format, exported for the tools that play the MTA (tests, the
// benchmark). The filter host and the built-in checks are added beside it.
// Its configuration schema is src/config/milter.ts (config/ owns every schema).
export {
  MILTER_EVENTS, eventsOf, verdictOf,
  type ConnectInfo, type EomSession, type MilterEvent, type MilterFilter, type MilterFilterFactory,
  type MilterResult, type MilterSession, type MilterVerdict, type NormalizedVerdict,
} from './api.js';
export { startMilterService, type MilterService, type MilterServiceOptions } from './service.js';
export type { BoundListener as MilterListener } from './server.js';
export type { NamedFilter } from './session.js';
export {
  encodeCommand, encodeReply, formatReplyCode, negotiate, PacketDecoder, parseCommand, parseReply,
  MACRO_STAGES, MAX_CHUNK, MILTER_VERSION, SMFIF, SMFIP,
  type DecodedPacket, type MilterReply, type MtaCommand, type ProtocolError,
} from './protocol.js';
