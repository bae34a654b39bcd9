// Folding a recipient's copies into the one status the client (or the queue)
// acts on, as Postfix local(8) does for a recipient with several
// destinations:
//   every copy delivered → 2.0.0 ("Saved", or "Saved N copies");
//   else the first temporary failure — the MTA or our queue retries the
//     recipient; copies already written may then be written again (the
//     duplicate Postfix also admits: never a loss);
//   else the first permanent failure.
// The leaves' own words (paths, owners) go to `detail`, for the log only.
//
// Exports: foldCopies(statuses). Pure.
import { isSuccess, isTemporary, ok, type Status } from '../mail/status.js';

export interface Folded {
  readonly status: Status;
  /** Every copy's text, for the log line. */
  readonly detail: string;
}

/** `statuses` must not be empty (a recipient with no copy was discarded or refused before). */
export function foldCopies(statuses: readonly Status[]): Folded {
  if (statuses.length === 0) throw new Error('bug: folding no copies');
  const detail = statuses.map((s) => s.text).join('; ');
  if (statuses.every(isSuccess)) return { status: ok(statuses.length === 1 ? 'Saved' : `Saved ${statuses.length} copies`), detail };
  const failed = statuses.find(isTemporary) ?? (statuses.find((s) => !isSuccess(s)) as Status);
  return { status: failed, detail: failed.text };
}
