// The one outcome type. Every delivery leaf, the planner and the intake return
// a Status; the SMTP/LMTP layer turns it into a reply in exactly one place
// (src/smtp/replies.ts). Temporary or permanent is read off the first digit of
// the RFC 3463 enhanced code, as Postfix does: 2 = done, 4 = try again later,
// 5 = never. Exceptions are for bugs and bad configuration only.

/** An RFC 3463 enhanced status code: class.subject.detail, e.g. "4.2.2". */
export type EnhancedCode = `${2 | 4 | 5}.${number}.${number}`;

export interface Status {
  /** RFC 3463 enhanced status code; its first digit decides the class. */
  readonly code: EnhancedCode;
  /** Human text for the reply and the log; no CR/LF. */
  readonly text: string;
  /** The SMTP reply number when the default for the class is not right (e.g. 552 for size). */
  readonly reply?: number;
}

const CODE_RE = /^[245]\.\d{1,3}\.\d{1,3}$/;

export function isEnhancedCode(s: string): s is EnhancedCode {
  return CODE_RE.test(s);
}

export function status(code: EnhancedCode, text: string, reply?: number): Status {
  if (!isEnhancedCode(code)) throw new Error(`bug: malformed enhanced status code ${JSON.stringify(code)}`);
  const clean = text.replace(/[\r\n]+/g, ' ');
  return reply === undefined ? { code, text: clean } : { code, text: clean, reply };
}

export const ok = (text = 'Delivered'): Status => status('2.0.0', text);
export const isSuccess = (s: Status): boolean => s.code.startsWith('2');
export const isTemporary = (s: Status): boolean => s.code.startsWith('4');
export const isPermanent = (s: Status): boolean => s.code.startsWith('5');

/** "sent" | "deferred" | "bounced", the words of a Postfix log line. */
export function statusWord(s: Status): 'sent' | 'deferred' | 'bounced' {
  return isSuccess(s) ? 'sent' : isTemporary(s) ? 'deferred' : 'bounced';
}
