// `mailproc state migrate [--config FILE]`: creates or updates the schema of
// the shared policy state engine that state.backend names (PostgreSQL:
// tables and functions, versioned in mailproc_schema; Redis: the schema key).
// Run it once before the first daemon starts on a new engine, and after an
// upgrade that says so: a daemon refuses an engine at another version. Safe
// to run again and from several nodes at once (the PostgreSQL migration
// locks the version table). With backend lmdb there is nothing to do.
// Prints one line; the engine's URL appears without its password.
// Exit 0 done, 1 the engine refused or could not be reached.
import type { Config } from '../../config/index.js';
import { migratePolicyState } from '../../state/index.js';

export async function runStateMigrate(config: Config): Promise<number> {
  try {
    process.stdout.write(`${await migratePolicyState(config.state)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`mailproc: state migrate: ${(err as Error).message}\n`);
    return 1;
  }
}
