// Spam checking through SpamAssassin's spamd: the client (client.ts) and the
// wire format it speaks (protocol.ts, internal). Every failure is a SpamdError
// with a kind; whether a failed check delivers unchecked or defers is the
// caller's decision, not this folder's.
//
// Exports: ping, check, symbols, report, reportIfSpam, processMessage,
// headers, tell; SpamdError; the option and result types; spamHeaders and
// uncheckedHeader (headers.ts: the X-Spam-* lines added to an owner's copies).
export { check, headers, ping, processMessage, report, reportIfSpam, symbols, tell, type SpamcOptions, type SpamdTarget } from './client.js';
export {
  SpamdError,
  type SpamdErrorKind,
  type SpamdReplies,
  type SpamResult,
  type TellDatabase,
  type TellRequest,
  type TellResult,
} from './protocol.js';
export { spamHeaders, uncheckedHeader, type HeaderVerdict } from './headers.js';
