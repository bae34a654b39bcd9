// The milter folder's public surface. api.ts is the filter contract (for
// built-in checks and users' filters alike); the server, the filter host and
// the built-in checks are added beside it. Its configuration schema is
// src/config/milter.ts (config/ owns every schema).
export {
  MILTER_EVENTS, eventsOf, verdictOf,
  type ConnectInfo, type EomSession, type MilterEvent, type MilterFilter, type MilterFilterFactory,
  type MilterResult, type MilterSession, type MilterVerdict, type NormalizedVerdict,
} from './api.js';
export {
  FILTER_MEMORY_MB, loadMilterFilters, MilterFilterLoadError,
  type LoadedMilterFilters, type LoadMilterFiltersOptions,
} from './filter-host.js';
