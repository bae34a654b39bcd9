// `mailproc lists sync LIST (--mailman URL [--user U] [--password-file F] |
// --file PATH)`: refresh a list's subscribers from a Mailman 3 REST roster or
// a file of addresses, into the policy state the daemon reads. A sync that
// fails keeps the old subscribers. The Mailman password comes from
// --password-file or $MAILMAN_PASSWORD. Exit 0 synced, 1 the sync failed,
// 64 usage.
import { readFileSync } from 'node:fs';
import { loadDiscoveredConfig } from '../../config/index.js';
import { syncListSubscribers, type ListSource } from '../../policy/index.js';
import { USAGE } from './usage.js';

export interface ListsSyncOptions {
  readonly config?: string | undefined;
  readonly mailman?: string | undefined;
  readonly user?: string | undefined;
  readonly 'password-file'?: string | undefined;
  readonly file?: string | undefined;
}

/** `lists sync LIST`: the dispatcher checked the words; the options are checked here. */
export async function runListsSync(list: string, v: ListsSyncOptions): Promise<number> {
  if ((v.mailman === undefined) === (v.file === undefined)) {
    process.stderr.write(`mailproc: lists sync needs exactly one of --mailman URL or --file PATH\n${USAGE}`);
    return 64;
  }
  const config = loadDiscoveredConfig(v.config);
  const source: ListSource = v.file !== undefined
    ? { kind: 'file', path: v.file }
    : {
        kind: 'mailman3', url: v.mailman as string, user: v.user ?? 'restadmin',
        password: v['password-file'] !== undefined ? readFileSync(v['password-file'], 'utf8').trim() : process.env.MAILMAN_PASSWORD ?? '',
      };
  const r = await syncListSubscribers({ list, source, dbDir: config.paths.state_db });
  if (!r.ok) {
    process.stderr.write(`mailproc: ${r.list}: sync failed, the old subscribers stay: ${r.error}\n`);
    return 1;
  }
  process.stdout.write(`${r.list}: ${r.subscribers} subscriber(s), ${r.added} added, ${r.removed} removed${r.skipped.length > 0 ? `, ${r.skipped.length} skipped` : ''}\n`);
  return 0;
}
