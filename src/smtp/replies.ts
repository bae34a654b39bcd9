// The one mapping from Status to an SMTP/LMTP reply, and the one place where
// smtp-server is taught to carry OUR enhanced status code.
//
// smtp-server derives the enhanced code from the reply number (550 → 5.1.1,
// 552 → 5.2.2 …), so it cannot say 5.2.3 or 4.2.0, and text that already holds
// a code comes out doubled ("550 5.1.1 5.7.1 …"). We patch
// SMTPConnection.prototype.send once: a reply whose text starts with an
// enhanced code of the same class as the reply number is sent as is. Every
// other reply (the library's own 503, 501, 421 …) keeps the library's code.
// Every error we hand to smtp-server carries responseCode, so the library
// never picks 550/450 by default.
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import type { Status } from '../mail/status.js';

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

const CODED = /^([245])\.\d{1,3}\.\d{1,3} /;
let patched = false;

/** Idempotent; called once by the listeners before they start. */
export function installReplyCodes(): void {
  if (patched) return;
  patched = true;
  type Send = (this: unknown, code: number, data?: unknown, context?: unknown) => void;
  const proto = SMTPConnection.prototype as unknown as { send: Send };
  const original = proto.send;
  if (typeof original !== 'function') throw new Error('bug: smtp-server SMTPConnection.send not found (version changed?)');
  proto.send = function send(code, data, context) {
    if (typeof data === 'string') {
      const m = CODED.exec(data);
      if (m && m[1] === String(code)[0]) return original.call(this, code, data, false);
    }
    return original.call(this, code, data, context);
  };
}
