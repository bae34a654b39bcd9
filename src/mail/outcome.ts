// What became of one recipient of one message: the record the recipient
// layer (src/local) makes, the queue keeps, the reply and the delivery log
// line are made from. Timings travel as numbers and are formatted only where
// the log line is written (src/local/delivery-log.ts).
//
// What a sender may read of it: a failure's own words (a leaf's, the
// spool's, the identity lookup's) name files, directories and users
// ("cannot create /var/mail/x/…", "mailbox /…/mbox is locked"). Those go to
// the log; the client's reply and the sender's DSN get the standard text of
// the enhanced code (RFC 3463's names), with the code unchanged so the MTA
// retries or bounces exactly as it would. Texts written for the sender — a
// rule's own reject text, 5.1.1 unknown user, 5.2.3 too large, 5.4.6 loop —
// carry no `detail` and are sent as they are.
//
// Exports: RecipientOutcome, DeliveryTiming, Decision, DecisionCopy, publicStatus, codeName.
import { isSuccess, isTemporary, status, type Status } from './status.js';

/**
 * Where a recipient's time went, ms — Postfix's delays=a/b/c/d: a = from
 * arrival (end of DATA, or the queue's pick-up) to dispatch (table lookups,
 * spam check, planning), b = waiting for a worker slot, c = master↔worker
 * transfer (a worker start included), d = the delivery itself.
 */
export interface DeliveryTiming {
  readonly beforeMs: number;
  readonly slotMs: number;
  readonly transferMs: number;
  readonly workMs: number;
}

/** Where one copy went and which rule sent it there (`mailproc rules log`). */
export interface DecisionCopy {
  /** "yours:2" (the owner's own rule 2), "db/rules:12" or "default". */
  readonly origin: string;
  /** The rule's text, for the owner's own rules (an admin rule is named by its origin). */
  readonly rule?: string;
  /** The destination as table text, templates expanded. */
  readonly destination: string;
  /** Who it was written as. */
  readonly user: string;
}

/** What the rules decided for one recipient of one message: the decision log's record of it. */
export interface Decision {
  /** The address the log is kept under: the recipient without extension, lower case. */
  readonly address: string;
  readonly sender: string;
  /** Decoded; "" when there is none. */
  readonly subject: string;
  readonly copies: readonly DecisionCopy[];
}

export interface RecipientOutcome {
  /** The one status for the recipient; a success says only "Saved" — no paths or user names go back to the sender. */
  readonly status: Status;
  /** For the log only: what the leaves said (the file written, a path refused, …), when it differs from status.text. */
  readonly detail?: string;
  /** Destination kinds, for the log's relay= field ("maildir", "maildir+pipe", "rules", "none"). */
  readonly relay: string;
  /** Absent when nothing reached a worker. */
  readonly timing?: DeliveryTiming;
  /** Present when the rules were evaluated (not for a loop, an unknown user, a deferred spam check). */
  readonly decision?: Decision;
}

/** RFC 3463 §3 names of the detail codes a local delivery reports, "class.subject.detail" with the class left out. */
const TEXT_BY_DETAIL: Record<string, string> = {
  '1.1': 'Bad destination mailbox address',
  '2.0': 'Mailbox unavailable',
  '2.1': 'Mailbox disabled, not accepting messages',
  '2.2': 'Mailbox full',
  '2.3': 'Message length exceeds administrative limit',
  '2.4': 'Mailing list expansion problem',
  '3.0': 'Mail system error',
  '3.1': 'Mail system full',
  '3.2': 'System not accepting network messages',
  '3.3': 'System not capable of selected features',
  '3.4': 'Message too big for system',
  '3.5': 'System incorrectly configured',
  '4.6': 'Routing loop detected',
  '4.7': 'Delivery time expired',
  '5.0': 'Delivery protocol error',
  '6.0': 'Message content error',
  '7.0': 'Delivery not authorized',
};

/** RFC 3463 §3 names of the subjects, for a detail not in the table above. */
const TEXT_BY_SUBJECT: Record<string, string> = {
  '0': 'Delivery failed',
  '1': 'Addressing status',
  '2': 'Mailbox status',
  '3': 'Mail system status',
  '4': 'Network and routing status',
  '5': 'Mail delivery protocol status',
  '6': 'Message content or media status',
  '7': 'Security or policy status',
};

/** RFC 3463's name for an enhanced code, e.g. "Mailbox full" for 4.2.2. */
export function codeName(code: string): string {
  const [, subject = '0', detail = '0'] = code.split('.');
  return TEXT_BY_DETAIL[`${subject}.${detail}`] ?? TEXT_BY_SUBJECT[subject] ?? 'Delivery failed';
}

/**
 * The status a sender may read: a failure with `detail` gets its code's name
 * (and, when temporary, the promise that it is), the code and reply number
 * unchanged; anything else is returned as it is.
 */
export function publicStatus(o: { readonly status: Status; readonly detail?: string | undefined }): Status {
  const s = o.status;
  if (o.detail === undefined || isSuccess(s)) return s;
  const name = codeName(s.code);
  return status(s.code, isTemporary(s) ? `${name}, try again later` : name, s.reply);
}
