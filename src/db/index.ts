// The db folder's public surface: the table source parser, the LMDB compiler
// and reader, and recipient resolution. Everything else in src/db is internal.

export { formatSourceError, MAX_KEY_BYTES, parseTableSource, type ParsedTable, type ParseOptions, type SourceError } from './source.js';
export {
  compileTables,
  compileTableTexts,
  openTables,
  type CompileOptions,
  type CompileReport,
  type TableHit,
  type TableInfo,
  type TableReader,
  type Tables,
  type TablesInfo,
  type TableText,
} from './tables.js';
export { isKnown, resolveRecipient, type Resolution } from './lookup.js';
export { checkUserRuleSet, MAX_USER_RULE_CHARS, parseUserRule, type UserRulePolicy } from './user-rule.js';
export { splitCommand } from './source-rule.js';
export {
  CENTRAL_CHANNEL, centralRelation, initCentralTables, redactUrl, syncCentralTables, watchCentralTables,
  type CentralWatch, type SyncReport,
} from './sync-postgres.js';
