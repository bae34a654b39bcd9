// `mailproc lists sync`: refreshes one list's subscribers from Mailman 3's
// REST API or from a file, into the policy state's roster (state.ts), which
// the lists plugin reads beside the lists table's own `subscribers=`.
//
// Why the roster is not written into the lists table: `mailproc db compile`
// clears and rewrites the whole table from its source, so synced subscribers
// written there would vanish at the next compile, and a sync that rewrote the
// table source would race the administrator's edits. The roster is its own
// sub-database, keyed per subscriber; a sync replaces exactly one list's keys
// in one LMDB write transaction: readers see the old roster or the new one.
//
// Failure contract: everything is read and checked first; any failure (HTTP
// error status, connection refused, timeout, a page of the wrong shape, an
// incomplete roster, an unreadable file) returns { ok: false } and writes
// nothing, so the old subscribers stay. Only LMDB trouble throws.
//
// Exports: syncListSubscribers, readListRoster, ListSource, ListSyncOutcome.
import { readFile } from 'node:fs/promises';
import { openState, rosterKey, rosterMembers, type StateStore, type RosterInfo } from '../state/index.js';
import { parseMailmanPage, parseSubscriberFile } from './roster-formats.js';

export type ListSource =
  | {
      readonly kind: 'mailman3';
      /** REST root, e.g. http://localhost:8001 (Mailman's default); "/3.1/lists/…" is appended. */
      readonly url: string;
      readonly user: string;
      readonly password: string;
      /** Per HTTP request; default 30 s. */
      readonly timeoutMs?: number;
    }
  | { readonly kind: 'file'; readonly path: string };

export interface ListSyncOptions {
  /** The list's key in the lists table, e.g. "dev@example.test" (also its Mailman fqdn_listname). */
  readonly list: string;
  readonly source: ListSource;
  /** The policy state environment (policyDbDir()). */
  readonly dbDir: string;
  readonly now?: () => number;
}

export type ListSyncOutcome =
  | {
      readonly ok: true;
      readonly list: string;
      readonly subscribers: number;
      readonly added: number;
      readonly removed: number;
      /** Entries without a usable address, as found; not synced. */
      readonly skipped: readonly string[];
    }
  | { readonly ok: false; readonly list: string; readonly error: string };

type Fetched = { readonly ok: true; readonly emails: readonly string[]; readonly skipped: readonly string[] } | { readonly ok: false; readonly error: string };

const PAGE_SIZE = 500;

function describe(source: ListSource): string {
  return source.kind === 'file' ? `file ${source.path}` : `mailman3 ${source.url}`;
}

async function fetchMailman(list: string, s: Extract<ListSource, { kind: 'mailman3' }>): Promise<Fetched> {
  const base = `${s.url.replace(/\/+$/, '')}/3.1/lists/${encodeURIComponent(list)}/roster/member`;
  const headers = { authorization: `Basic ${Buffer.from(`${s.user}:${s.password}`).toString('base64')}`, accept: 'application/json' };
  const emails: string[] = [];
  const skipped: string[] = [];
  for (let page = 1; ; page++) {
    const url = `${base}?count=${PAGE_SIZE}&page=${page}`;
    let body: unknown;
    try {
      const res = await fetch(url, { headers, signal: AbortSignal.timeout(s.timeoutMs ?? 30_000) });
      if (res.status !== 200) {
        const why = res.status === 401 || res.status === 403 ? ' (check the REST user and password)' : res.status === 404 ? ' (no such list at Mailman?)' : '';
        await res.body?.cancel();
        return { ok: false, error: `GET ${base}: HTTP ${res.status}${why}` };
      }
      body = await res.json();
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      const why = e.name === 'TimeoutError' ? 'timed out' : (e.cause?.code ?? e.cause?.message ?? e.message);
      return { ok: false, error: `GET ${base}: ${why}` };
    }
    const parsed = parseMailmanPage(body);
    if (!parsed.ok) return { ok: false, error: `GET ${url}: unexpected reply: ${parsed.error}` };
    emails.push(...parsed.emails);
    skipped.push(...parsed.skipped);
    const seen = emails.length + skipped.length;
    if (seen >= parsed.total || parsed.emails.length + parsed.skipped.length === 0) {
      // Fewer than total_size: the roster changed between pages, or paging is broken. Try again later rather than store half.
      if (seen !== parsed.total) return { ok: false, error: `GET ${base}: read ${seen} members but total_size says ${parsed.total}` };
      return { ok: true, emails, skipped };
    }
  }
}

async function readSource(list: string, source: ListSource): Promise<Fetched> {
  if (source.kind === 'mailman3') return fetchMailman(list, source);
  try {
    return { ok: true, ...parseSubscriberFile(await readFile(source.path, 'utf8')) };
  } catch (err) {
    return { ok: false, error: `cannot read ${source.path}: ${(err as Error).message}` };
  }
}

/** Replaces the list's roster in one write transaction; returns how many were added and removed. */
function writeRoster(state: StateStore, list: string, emails: ReadonlySet<string>, info: RosterInfo): { added: number; removed: number } {
  return state.root.transactionSync(() => {
    let removed = 0;
    const kept = new Set<string>();
    // Collected first: deleting under a live cursor in the same transaction is asking for skipped keys.
    for (const { key, member } of rosterMembers(state.roster, list)) {
      if (emails.has(member)) kept.add(member);
      else {
        state.roster.removeSync(key as string);
        removed++;
      }
    }
    let added = 0;
    for (const e of emails) {
      if (kept.has(e)) continue;
      state.roster.putSync(rosterKey(list, e), 1);
      added++;
    }
    state.rosterInfo.putSync(list, info);
    return { added, removed };
  });
}

export async function syncListSubscribers(opts: ListSyncOptions): Promise<ListSyncOutcome> {
  const list = opts.list.trim().toLowerCase();
  const got = await readSource(list, opts.source);
  if (!got.ok) return { ok: false, list, error: got.error };
  const emails = new Set(got.emails);
  const state = openState(opts.dbDir);
  try {
    const info: RosterInfo = { subscribers: emails.size, syncedAt: new Date((opts.now ?? Date.now)()).toISOString(), source: describe(opts.source) };
    const { added, removed } = writeRoster(state, list, emails, info);
    return { ok: true, list, subscribers: emails.size, added, removed, skipped: got.skipped };
  } finally {
    await state.close();
  }
}

/** The synced roster of a list (for `mailproc lists show` and tests); undefined = never synced. */
export async function readListRoster(dbDir: string, list: string): Promise<(RosterInfo & { readonly members: readonly string[] }) | undefined> {
  const key = list.trim().toLowerCase();
  const state = openState(dbDir);
  try {
    const info = state.rosterInfo.get(key);
    if (info === undefined) return undefined;
    const members = rosterMembers(state.roster, key).map((m) => m.member).sort();
    return { ...info, members };
  } finally {
    await state.close();
  }
}
