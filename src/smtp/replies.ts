// The one mapping from Status to an SMTP/LMTP reply. Every error we hand to
// smtp-server carries responseCode, so the library never picks 550/450 by
// default; the text starts with our enhanced code, which library-patches.ts
// lets through unchanged.
//
// What a client may read is decided by mail/outcome.ts publicStatus (a
// failure that carries `detail` — a leaf's words — gets its code's standard
// name); clientStatus and outcomeReply apply it with our reply numbers.
import { publicStatus } from '../mail/outcome.js';
import { status, type Status } from '../mail/status.js';

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

/** A status whose text names nothing on this host, the reply number made explicit (see mail/outcome.ts). */
export function clientStatus(s: Status): Status {
  const p = publicStatus({ status: s, detail: s.text });
  if (p === s) return s;
  return status(p.code, p.text, replyNumber(s));
}

/** The reply status for a recipient's delivery outcome (mail/outcome.ts publicStatus, with our reply number). */
export function outcomeReply(o: { readonly status: Status; readonly detail?: string | undefined }): Status {
  const p = publicStatus(o);
  return p === o.status ? p : status(p.code, p.text, replyNumber(o.status));
}
