// The rule model: what the rules, uid, gid and lists tables hold once parsed.
// These records are what the table compiler (src/db) writes into LMDB and
// what the planner (src/classify/plan.ts) reads. Plain data only: they are
// stored with LMDB's structured encoding and sent over IPC, so no classes,
// no functions, no RegExp objects (a regex is kept as source + flags).

import type { Pattern } from '../mail/pattern.js';

/** A pattern over a string: a glob (case-insensitive) or a regex; matched by src/mail/pattern.ts alone. */
export type { Pattern };

export type Comparison = '<' | '<=' | '>' | '>=' | '=';

export type Condition =
  /** A header (name case-insensitive) exists and one of its values matches. */
  | { readonly kind: 'header'; readonly name: string; readonly pattern: Pattern; readonly negate: boolean }
  /** The envelope sender matches ("" is the null sender). */
  | { readonly kind: 'sender'; readonly pattern: Pattern; readonly negate: boolean }
  /** The message size in bytes compares to a number. */
  | { readonly kind: 'size'; readonly op: Comparison; readonly bytes: number }
  /** The address extension matches ("" when there is none). */
  | { readonly kind: 'extension'; readonly pattern: Pattern; readonly negate: boolean }
  /** The spam verdict (true = spam). Evaluated once spam checking exists; until then never spam. */
  | { readonly kind: 'spam'; readonly is: boolean }
  /** The spam score compares to a number. */
  | { readonly kind: 'score'; readonly op: Comparison; readonly value: number };

/**
 * Where a copy goes. Paths and argv words may contain ${user}, ${local},
 * ${extension}, ${domain}, ${address}, ${home}; they are expanded by the
 * planner. A relative path is relative to the daemon's working directory.
 */
export type Destination =
  | { readonly kind: 'maildir'; readonly path: string; readonly folder?: string }
  | { readonly kind: 'mbox'; readonly path: string }
  | { readonly kind: 'pipe'; readonly argv: readonly string[] }
  | { readonly kind: 'forward'; readonly address: string }
  | { readonly kind: 'list'; readonly name: string }
  | { readonly kind: 'discard' }
  /**
   * mailmond's probe address: a probe signed with probe.key has its arrival
   * and stage timings recorded (src/local/probe.ts) and nothing is written;
   * anything else sent here is ignored and logged. Admin rules only.
   */
  | { readonly kind: 'probe' }
  /**
   * An automatic reply to the sender (RFC 3834, Sieve vacation RFC 5230), at
   * most once per sender every `days` days. Not a delivery: the planner still
   * gives the default destination when no other rule applied (Sieve's
   * implicit keep). One of `text` (line breaks as written: "\n" in the
   * source) and `textFile` (admin rules only; may use ${variables}) is set.
   * `from`: the reply's From and envelope sender, default the recipient.
   * `until`: YYYY-MM-DD, the last day a reply is sent (server's local date).
   * `addresses`: more addresses of the owner (lower case) that count as
   * explicit addressing in To/Cc.
   */
  | {
    readonly kind: 'vacation'; readonly text?: string; readonly textFile?: string; readonly subject?: string;
    readonly days: number; readonly from?: string; readonly until?: string; readonly addresses?: readonly string[];
  }
  /** code is the enhanced status code (5.x.x or 4.x.x), text the reply text. */
  | { readonly kind: 'reject'; readonly code: string; readonly text: string };

/** A vacation's days= (RFC 5230 :days): the default, and the range a source may give. */
export const VACATION_DAYS = { default: 7, min: 1, max: 365 } as const;

export interface Rule {
  readonly destination: Destination;
  /** All must hold for the rule to apply. Empty = always. */
  readonly conditions: readonly Condition[];
  /** Override of the address's uid/gid (a user name or a number as a string). */
  readonly uid?: string;
  readonly gid?: string;
  /** Largest message this rule accepts, in bytes; larger → 552 5.2.3 for the recipient. */
  readonly maxsize?: number;
  /**
   * Deliveries at once for the user this rule delivers as (overrides
   * delivery.user_concurrency for that user), e.g. for a shared vmail uid.
   */
  readonly concurrency?: number;
  /** Stop evaluating further rules once this one applies. */
  readonly stop: boolean;
  /**
   * An admin rule the address's owner cannot get around: evaluated before
   * the owner's own rules (db/README.md, "Your users' own rules").
   */
  readonly locked?: boolean;
  /**
   * When this rule applies, a Message-ID the owner already had within
   * dedupe.window is not delivered again (src/local/dedupe.ts).
   */
  readonly dedupe?: boolean;
  /** Where the rule came from, "file:line", for `rules test` and log lines. */
  readonly origin: string;
}

export type ListMode = 'open' | 'closed' | 'moderated';

export interface ListEntry {
  readonly mode: ListMode;
  /**
   * How mail to the list reaches its manager: "lmtp:unix:/path", "lmtp:inet:host:port"
   * (Mailman 3) or "pipe:/path/to/mailman wrapper post NAME" (Mailman 2); "" = none yet.
   */
  readonly manager: string;
  /** Subscriber addresses, lower case. */
  readonly subscribers: readonly string[];
  readonly origin: string;
}

/** The spam table: whether and how an address's mail is checked (db/README.md, "spam"). */
export interface SpamSetting {
  /** false ("off"): never checked, no headers added. */
  readonly check: boolean;
  /** The score from which the mail is spam for this address; absent = the owner's SpamAssassin required_score. */
  readonly required?: number;
  /** When the checker fails: deliver unchecked (open) or 451 4.7.1 (closed); absent = spam.on_error. */
  readonly onError?: 'open' | 'closed';
  readonly origin: string;
}

/** The tables and the value each key maps to. */
export interface TableValues {
  rules: readonly Rule[];
  uid: string;
  gid: string;
  lists: ListEntry;
  spam: SpamSetting;
  /**
   * The mailbox host an address lives on, as a Postfix transport(5) value
   * ("lmtp:inet:mb2.example.org:24"): read only by `mailproc db transport-map`,
   * which writes the MX's transport_maps source (docs/scale-out.md).
   */
  nodes: string;
}

export type TableName = keyof TableValues;
export const TABLE_NAMES: readonly TableName[] = ['rules', 'uid', 'gid', 'lists', 'spam', 'nodes'];
