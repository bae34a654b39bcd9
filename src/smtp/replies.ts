// The one mapping from Status to an SMTP/LMTP reply. Every error we hand to
// smtp-server carries responseCode, so the library never picks 550/450 by
// default; the text starts with our enhanced code, which library-patches.ts
// lets through unchanged.
//
// What a client may read: a failure the leaves (or the identity lookup, or
// the spool) report names files, directories and users ("cannot create
// /var/mail/x/…", "mailbox /…/mbox is locked"). Those texts go to the log;
// the client gets the standard text of the enhanced code (clientStatus,
// RFC 3463's names), with the code and reply number unchanged so the MTA
// retries or bounces exactly as before. Texts we write for the client — a
// rule's own reject text, 5.1.1 unknown user, 5.2.3 too large, 5.4.6 loop —
// are sent as they are. outcomeReply decides which is which for a delivery
// outcome (src/workers/dispatch.ts RecipientOutcome: a failure that carries
// `detail` came from a leaf).
import { isSuccess, isTemporary, status, type Status } from '../mail/status.js';

/** Reply numbers for enhanced codes whose default (250/451/550) is not right. */
const REPLY_BY_CODE: Record<string, number> = {
  '4.2.2': 452, // mailbox full, temporary
  '4.3.1': 452, // mail system full
  '4.5.3': 452, // too many recipients
  '5.2.2': 552, // mailbox full
  '5.2.3': 552, // message length exceeds administrative limit
  '5.3.4': 552, // message too big for system
  '5.4.6': 554, // routing loop
};

export function replyNumber(s: Status): number {
  if (s.reply !== undefined) return s.reply;
  const byCode = REPLY_BY_CODE[s.code];
  if (byCode !== undefined) return byCode;
  switch (s.code[0]) {
    case '2': return 250;
    case '4': return 451;
    default: return 550;
  }
}

/** Reply text as sent after the number: "5.1.1 <bob@x>: text". */
export function replyText(s: Status): string {
  return `${s.code} ${s.text}`;
}

export interface SmtpError extends Error {
  responseCode: number;
}

/** An Error smtp-server turns into exactly our reply. */
export function replyError(s: Status): SmtpError {
  return Object.assign(new Error(replyText(s)), { responseCode: replyNumber(s) });
}

/** What an LMTP per-recipient result (or the SMTP DATA result) is in smtp-server's terms. */
export function dataResult(s: Status): string | SmtpError {
  return s.code.startsWith('2') ? replyText(s) : replyError(s);
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

/**
 * The same code and reply number with a text that names nothing on this
 * host: the RFC 3463 name of the code, and for a temporary failure the
 * promise that it is one.
 */
export function clientStatus(s: Status): Status {
  if (isSuccess(s)) return s;
  const [, subject = '0', detail = '0'] = s.code.split('.');
  const name = TEXT_BY_DETAIL[`${subject}.${detail}`] ?? TEXT_BY_SUBJECT[subject] ?? 'Delivery failed';
  return status(s.code, isTemporary(s) ? `${name}, try again later` : name, replyNumber(s));
}

/**
 * The reply status for a recipient's delivery outcome: a failure with
 * `detail` (a leaf's words, which name paths and users) gets clientStatus;
 * anything else is sent as it is.
 */
export function outcomeReply(o: { readonly status: Status; readonly detail?: string | undefined }): Status {
  return o.detail !== undefined && !isSuccess(o.status) ? clientStatus(o.status) : o.status;
}
