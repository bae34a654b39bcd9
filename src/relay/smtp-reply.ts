// What an SMTP or LMTP peer's answer means for one recipient, as a Status:
// the one mapping of a remote reply (or of a failure to get one) to an RFC
// 3463 code. Used wherever we speak SMTP/LMTP outward: bounces today,
// forwards, vacation replies and list managers next.
//
// Exports: statusFromReply(reply, response), statusFromSendError(err, where).
// Pure; never throws.
//
// Rules (Postfix smtp(8) behaves the same way):
// - A 4xx/5xx reply keeps its own enhanced code when it carries one of the
//   reply's class ("451 4.7.1 greylisted" → 4.7.1); otherwise x.0.0 of the class.
// - No reply at all (refused, reset, timeout, DNS): temporary, 4.4.x — the
//   network, not the peer's opinion. Unknown errors are temporary too
//   (../shared/STYLE.md habit 2), bounded by the queue lifetime of whoever retries.
import { isEnhancedCode, status, type EnhancedCode, type Status } from '../mail/status.js';

/** "451 4.7.1 text" (last line of a multi-line reply) → its Status. */
export function statusFromReply(reply: number, response: string): Status {
  const line = response.split(/\r?\n/).filter((l) => l.trim() !== '').pop() ?? response;
  const m = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(line.trim());
  const klass = String(reply)[0] === '5' ? '5' : '4';
  const code: EnhancedCode = m?.[1] !== undefined && m[1][0] === klass && isEnhancedCode(m[1])
    ? m[1]
    : klass === '5' ? '5.0.0' : '4.0.0';
  return status(code, response.trim(), reply >= 400 && reply < 600 ? reply : undefined);
}

/** The fields nodemailer puts on its errors. */
interface SendError {
  readonly message?: string;
  readonly code?: string;
  readonly response?: string;
  readonly responseCode?: number;
}

/**
 * A failed send as a Status: the peer's own reply when there was one, else
 * what the network said. `where` names the peer ("127.0.0.1:25") for the text.
 */
export function statusFromSendError(err: unknown, where: string): Status {
  const e = (typeof err === 'object' && err !== null ? err : { message: String(err) }) as SendError;
  if (typeof e.responseCode === 'number' && e.responseCode >= 400 && e.responseCode < 600 && typeof e.response === 'string') {
    const s = statusFromReply(e.responseCode, e.response);
    return status(s.code, `${where} said: ${s.text}`, s.reply);
  }
  const what = `${where}: ${e.message ?? 'unknown error'}`;
  switch (e.code) {
    case 'ETIMEDOUT':
      return status('4.4.2', `timeout talking to ${what}`);
    case 'ESOCKET':
    case 'ECONNECTION':
      // Nobody listening or no route: "no answer from host" (4.4.1); reset
      // or closed in the middle: "bad connection" (4.4.2). Both mean "later".
      return status(/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL|ENOENT/.test(e.message ?? '') ? '4.4.1' : '4.4.2', `cannot deliver to ${what}`);
    case 'EDNS':
      return status('4.4.3', `cannot resolve ${what}`);
    case 'EMESSAGE':
      return status('5.3.4', `message refused by ${what}`);
    default:
      return status('4.4.1', `cannot deliver to ${what}`);
  }
}
