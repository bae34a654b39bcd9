// Delivery status notifications for mail we own (SMTP intake): when the queue
// gives a recipient up (a permanent failure, or a temporary one past the queue
// lifetime) the envelope sender is told, in an RFC 3464 report, so that no
// message is ever dropped silently.
//
// Exports:
//   buildBounce(input) → { from, to, raw }  pure: no I/O, no clock unless `now`
//       is left out, no randomness — the same input gives the same bytes, so a
//       DSN rebuilt for a retry keeps its Message-ID. Throws only on a bug of
//       the caller (no recipients, the null sender as addressee).
//   shouldBounce(sender) → boolean  whether a failure of this sender's message
//       may be reported at all (never to <>, never to a mailer daemon).
//   Sending is the relay's (src/relay): the queue hands the DSN over with the
//   null envelope sender (a bounce is never bounced).
//
// The report (RFC 6522 multipart/report; report-type=delivery-status):
//   1. text/plain          what happened, in words, like Postfix's bounce(8)
//   2. message/delivery-status   RFC 3464 per-message and per-recipient fields
//   3. text/rfc822-headers the original header block (RFC 6522 §4) — or, when
//      asked, message/rfc822 with the whole original message.
// Every line ends in CRLF and is at most 998 octets (RFC 5322 §2.1.1): our own
// fields are folded at white space; a diagnostic is capped at DIAGNOSTIC_MAX
// characters; a foreign line (the original's) that is too long is broken the
// way Postfix's smtp_line_length_limit does, by inserting CRLF SPACE.
import { headerEnd, normaliseLineEndings } from '../mail/message.js';
import { isEnhancedCode, isPermanent, isSuccess, type Status } from '../mail/status.js';
import { rfc5322Date } from '../mail/trace.js';

export interface BounceRecipient {
  readonly address: string;
  /** The final (or, for a delay warning, the latest) outcome for this recipient. */
  readonly status: Status;
  /** The host that answered, for a forward or relay; absent for a local delivery. */
  readonly remoteMta?: string;
  /** When delivery was last tried; `now` when absent. */
  readonly lastAttempt?: Date;
}

export interface BounceInput {
  /** Our host name: Reporting-MTA, the MAILER-DAEMON domain, the Message-ID domain. */
  readonly reportingMta: string;
  readonly queueId: string;
  /** The envelope sender of the original message: the DSN's addressee. */
  readonly sender: string;
  readonly arrival: Date;
  /** 5.x.x → Action: failed; 4.x.x → delayed (a warning); 2.x.x → delivered. */
  readonly recipients: readonly BounceRecipient[];
  /** The message as received, LF or CRLF. */
  readonly original: Buffer;
  /** Attach the whole message (message/rfc822) instead of its headers. Default false. */
  readonly returnFullMessage?: boolean;
  /** Whom the text tells the sender to write to; default "postmaster". */
  readonly postmaster?: string;
  readonly now?: Date;
}

export interface Bounce {
  /** MAILER-DAEMON@reportingMta (the From: header; the envelope sender is <>). */
  readonly from: string;
  /** The envelope recipient: the original envelope sender. */
  readonly to: string;
  /** The whole DSN message, CRLF line endings. */
  readonly raw: Buffer;
}

/** Longest diagnostic text we report; a remote reply can be arbitrarily long. */
export const DIAGNOSTIC_MAX = 2000;
const LINE_MAX = 998;
const FOLD_AT = 78;
const CRLF = '\r\n';

// ---- shouldBounce ----

/**
 * Local parts that mean "this message is itself a notification": a report
 * about it must not be sent, or two mail systems answer each other's bounces
 * for ever. MAILER-DAEMON is what bounces come from (ours included, in the
 * From: header), double-bounce is the sender Postfix uses for notices to the
 * postmaster. postmaster itself is NOT here: it is a person's mailbox that RFC
 * 5321 §4.5.1 requires to work, and its mail is ordinary mail that deserves a
 * bounce like any other; Postfix and Exim bounce to it too.
 */
const DAEMON_LOCAL_PARTS: ReadonlySet<string> = new Set(['mailer-daemon', 'double-bounce']);

/**
 * False for the null sender (the message is a DSN itself: RFC 5321 §4.5.5 and
 * RFC 3464 §2 forbid reporting on it) and for mailer-daemon senders (see
 * DAEMON_LOCAL_PARTS); true for everybody else. Accepts the address with or
 * without angle brackets.
 */
export function shouldBounce(sender: string): boolean {
  const address = sender.trim().replace(/^<(.*)>$/s, '$1').trim();
  if (address === '') return false;
  const at = address.lastIndexOf('@');
  let local = at < 0 ? address : address.slice(0, at);
  if (local.length >= 2 && local.startsWith('"') && local.endsWith('"')) local = local.slice(1, -1);
  return !DAEMON_LOCAL_PARTS.has(local.toLowerCase());
}

// ---- buildBounce ----

// Control characters must never reach a header line or a DSN field, where
// they could end the field early and inject another.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]+/g;
const clean = (s: string): string => s.replace(CONTROL, ' ').trim();
// eslint-disable-next-line no-control-regex
const NON_ASCII = /[^\x00-\x7f]/;
const isAscii = (s: string): boolean => !NON_ASCII.test(s);

/**
 * An address as a DSN field value: "rfc822; addr" for an ASCII address,
 * "utf-8; addr" with RFC 6533 §3 utf-8-addr-xtext (\x{HEX} for non-ASCII and
 * for "+", "=", "\") otherwise — message/delivery-status stays 7-bit.
 */
function addressField(address: string): string {
  const a = clean(address);
  if (isAscii(a)) return `rfc822; ${a}`;
  let out = '';
  for (const ch of a) {
    const cp = ch.codePointAt(0) as number;
    out += cp > 0x7e || cp < 0x21 || ch === '+' || ch === '=' || ch === '\\' ? `\\x{${cp.toString(16).toUpperCase()}}` : ch;
  }
  return `utf-8; ${out}`;
}

/** A diagnostic as one line of bounded length (the DSN part replaces non-ASCII later). */
function diagnosticText(text: string): string {
  let t = clean(text).replace(/\s+/g, ' ');
  if (t.length > DIAGNOSTIC_MAX) t = `${t.slice(0, DIAGNOSTIC_MAX)} [truncated]`;
  return t;
}

/**
 * "Name: value" folded at white space so lines stay near FOLD_AT columns; a
 * word too long for any line is cut into pieces (each on its own continuation
 * line) so that no line exceeds LINE_MAX. Returns CRLF-terminated text.
 */
export function foldField(name: string, value: string): string {
  const words: string[] = [];
  const piece = LINE_MAX - 10;
  for (const w of value.split(/\s+/)) {
    if (w === '') continue;
    for (let i = 0; i < w.length; i += piece) words.push(w.slice(i, i + piece));
  }
  const lines: string[] = [];
  let line = `${name}:`;
  let bare = true; // nothing but the field name (or the fold's indent) yet
  for (const w of words) {
    if (!bare && line.length + 1 + w.length > FOLD_AT) {
      lines.push(line);
      line = ` ${w}`;
    } else {
      line += ` ${w}`;
    }
    bare = false;
  }
  lines.push(line);
  return lines.join(CRLF) + CRLF;
}

/** Word-wraps prose at FOLD_AT columns; continuation lines get `indent`. */
function wrap(text: string, indent = ''): string[] {
  const lines: string[] = [];
  let line = '';
  for (const raw of text.split(' ')) {
    if (raw === '') continue;
    for (let i = 0; i < raw.length; i += LINE_MAX - 10 - indent.length) {
      const w = raw.slice(i, i + LINE_MAX - 10 - indent.length);
      if (line !== '' && line.length + 1 + w.length > FOLD_AT) {
        lines.push(line);
        line = indent + w;
      } else {
        line = line === '' ? w : `${line} ${w}`;
      }
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

/**
 * Foreign bytes (the original message) as CRLF lines of at most LINE_MAX
 * octets. Input may be LF or CRLF; a bare CR, which SMTP forbids outside a
 * line ending (RFC 5321 §2.3.8), becomes a space. A longer line is broken
 * with CRLF SPACE before LINE_MAX, never inside a UTF-8 sequence — what
 * Postfix's smtp_line_length_limit does; in a header block that is a fold.
 */
export function toCrlfLines(bytes: Buffer): Buffer {
  const lf = normaliseLineEndings(bytes);
  const out: Buffer[] = [];
  let start = 0;
  while (start < lf.length) {
    let end = lf.indexOf(0x0a, start);
    if (end < 0) end = lf.length;
    const line = Buffer.from(lf.subarray(start, end));
    for (let i = 0; i < line.length; i++) if (line[i] === 0x0d) line[i] = 0x20;
    let pos = 0;
    let first = true;
    while (line.length - pos + (first ? 0 : 1) > LINE_MAX) {
      let cut = pos + LINE_MAX - (first ? 0 : 1);
      while (cut > pos + 1 && ((line[cut] as number) & 0xc0) === 0x80) cut--; // not inside a UTF-8 sequence
      if (!first) out.push(Buffer.from(' '));
      out.push(line.subarray(pos, cut), Buffer.from(CRLF));
      pos = cut;
      first = false;
    }
    if (!first) out.push(Buffer.from(' '));
    out.push(line.subarray(pos), Buffer.from(CRLF));
    start = end + 1;
  }
  return Buffer.concat(out);
}

const has8bit = (b: Buffer): boolean => b.some((c) => c >= 0x80);

type Action = 'failed' | 'delayed' | 'delivered';
const actionOf = (s: Status): Action => (isPermanent(s) ? 'failed' : isSuccess(s) ? 'delivered' : 'delayed');

/** An SMTP reply as a status text carries it: "550 5.1.1 …" or "550-…". */
const REPLY_TEXT = /^[245]\d\d[ -]/;

/**
 * The RFC 3464 Diagnostic-Code value (§2.3.6): "smtp; <reply>" only when the
 * text is a reply some SMTP/LMTP server gave; everything else — our own
 * verdicts, a refused connection, an expiry — is "X-mailprocd; <text>", as
 * Postfix writes "X-Postfix;" rather than invent a reply nobody sent.
 */
function diagnosticCode(r: BounceRecipient): string {
  const text = diagnosticText(r.status.text);
  return REPLY_TEXT.test(text) ? `smtp; ${text}` : `X-mailprocd; ${text}`;
}

function humanPart(input: BounceInput, host: string, failed: boolean, delayed: boolean): string[] {
  const postmaster = clean(input.postmaster ?? '') || 'postmaster';
  const attached = input.returnFullMessage ? 'The message is attached below.' : 'Its headers are attached below.';
  const out = [`This is the mail system at host ${host}.`, ''];
  if (failed) {
    out.push(
      ...wrap(`I'm sorry to have to inform you that your message could not be delivered to one or more recipients. ${attached}`),
      '',
      ...wrap(`For further assistance, please send mail to ${postmaster}.`),
      '',
      ...wrap('If you do so, please include this problem report. You can delete your own text from the attached returned message.'),
    );
  } else if (delayed) {
    out.push(
      '####################################################################',
      '# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #',
      '####################################################################',
      '',
      ...wrap('Your message could not be delivered to one or more recipients yet. The mail system will keep trying; you will be told again if it gives up.'),
      '',
      ...wrap(`For further assistance, please send mail to ${postmaster}.`),
    );
  } else {
    out.push(...wrap(`Your message was successfully delivered to the destination(s) listed below. ${attached}`));
  }
  out.push('', '                   The mail system', '');
  for (const r of input.recipients) {
    const text = diagnosticText(r.status.text);
    const where = r.remoteMta !== undefined && REPLY_TEXT.test(text) ? `host ${clean(r.remoteMta)} said: ` : '';
    out.push(...wrap(`<${clean(r.address)}>: ${where}${text} (${r.status.code})`, '    '), '');
  }
  out.pop(); // the blank line after the last recipient
  return out;
}

/** Base64 in lines of 76 (RFC 2045 §6.8). */
function base64Lines(b: Buffer): string {
  return (b.toString('base64').match(/.{1,76}/g) ?? []).join(CRLF) + CRLF;
}

/** YYYYMMDDhhmmssmmm: with the queue id, one DSN per message and millisecond. */
function messageIdStamp(d: Date): string {
  return d.toISOString().replace(/\D/g, '').slice(0, 17);
}

export function buildBounce(input: BounceInput): Bounce {
  if (input.recipients.length === 0) throw new Error('bug: buildBounce without recipients');
  const to = clean(input.sender).replace(/^<(.*)>$/, '$1');
  if (to === '') throw new Error('bug: buildBounce to the null sender (check shouldBounce first)');
  for (const r of input.recipients) {
    if (!isEnhancedCode(r.status.code)) throw new Error(`bug: malformed enhanced status code ${JSON.stringify(r.status.code)}`);
  }
  const now = input.now ?? new Date();
  const host = clean(input.reportingMta).replace(/\s+/g, '') || 'localhost';
  const queueId = clean(input.queueId).replace(/\s+/g, '');
  const from = `MAILER-DAEMON@${host}`;
  const actions = input.recipients.map((r) => actionOf(r.status));
  const failed = actions.includes('failed');
  const delayed = actions.includes('delayed');
  const subject = failed
    ? 'Undelivered Mail Returned to Sender'
    : delayed ? 'Delayed Mail (still being retried)' : 'Successful Mail Delivery Report';

  const lf = normaliseLineEndings(input.original);
  const returned = toCrlfLines(input.returnFullMessage ? lf : lf.subarray(0, headerEnd(lf)));
  const returned8bit = has8bit(returned);

  const human = humanPart(input, host, failed, delayed).join(CRLF) + CRLF;
  const humanAscii = isAscii(human);

  let status822 = '';
  status822 += `Reporting-MTA: dns; ${host}${CRLF}`;
  status822 += `X-Mailprocd-Queue-ID: ${queueId}${CRLF}`;
  status822 += foldField('X-Mailprocd-Sender', addressField(to));
  status822 += `Arrival-Date: ${rfc5322Date(input.arrival)}${CRLF}`;
  for (const [i, r] of input.recipients.entries()) {
    status822 += CRLF;
    status822 += foldField('Final-Recipient', addressField(r.address));
    status822 += `Action: ${actions[i] as Action}${CRLF}`;
    status822 += `Status: ${r.status.code}${CRLF}`;
    if (r.remoteMta !== undefined && clean(r.remoteMta) !== '') status822 += foldField('Remote-MTA', `dns; ${clean(r.remoteMta).replace(/[^\x21-\x7e]/g, '?')}`);
    // eslint-disable-next-line no-control-regex
    status822 += foldField('Diagnostic-Code', diagnosticCode(r).replace(/[^\x00-\x7f]/g, '?'));
    status822 += `Last-Attempt-Date: ${rfc5322Date(r.lastAttempt ?? now)}${CRLF}`;
  }

  // Postfix's boundary shape (queue id, time, host); deterministic, and made
  // longer until it does not occur in any part.
  const token = host.replace(/[^A-Za-z0-9.-]/g, '').slice(0, 40);
  let boundary = `${queueId.replace(/[^A-Za-z0-9]/g, '').slice(0, 16)}.${Math.floor(now.getTime() / 1000)}/${token}`;
  for (let n = 1; returned.includes(`--${boundary}`) || human.includes(`--${boundary}`) || status822.includes(`--${boundary}`); n++) boundary = `${boundary.replace(/=\d+$/, '')}=${n}`;

  const head =
    `From: Mail Delivery System <${from}>${CRLF}` +
    foldField('To', `<${to}>`) +
    `Subject: ${subject}${CRLF}` +
    `Date: ${rfc5322Date(now)}${CRLF}` +
    `Message-ID: <${messageIdStamp(now)}.${queueId}@${host}>${CRLF}` +
    `Auto-Submitted: auto-replied${CRLF}` +
    `MIME-Version: 1.0${CRLF}` +
    `Content-Type: multipart/report; report-type=delivery-status;${CRLF}` +
    `\tboundary="${boundary}"${CRLF}` +
    `Content-Transfer-Encoding: ${returned8bit ? '8bit' : '7bit'}${CRLF}` +
    CRLF +
    `This is a MIME-encapsulated message.${CRLF}` +
    CRLF;

  const part1 =
    `--${boundary}${CRLF}` +
    `Content-Description: Notification${CRLF}` +
    (humanAscii
      ? `Content-Type: text/plain; charset=us-ascii${CRLF}${CRLF}${human}`
      : `Content-Type: text/plain; charset=utf-8${CRLF}Content-Transfer-Encoding: base64${CRLF}${CRLF}${base64Lines(Buffer.from(human, 'utf8'))}`) +
    CRLF;
  const part2 =
    `--${boundary}${CRLF}` +
    `Content-Description: Delivery report${CRLF}` +
    `Content-Type: message/delivery-status${CRLF}` +
    CRLF +
    status822 +
    CRLF;
  const part3Head =
    `--${boundary}${CRLF}` +
    (input.returnFullMessage
      ? `Content-Description: Undelivered Message${CRLF}Content-Type: message/rfc822${CRLF}`
      : `Content-Description: Undelivered Message Headers${CRLF}Content-Type: text/rfc822-headers${CRLF}`) +
    (returned8bit ? `Content-Transfer-Encoding: 8bit${CRLF}` : '') +
    CRLF;
  const raw = Buffer.concat([
    Buffer.from(head + part1 + part2 + part3Head, 'utf8'),
    returned,
    Buffer.from(`${CRLF}--${boundary}--${CRLF}`, 'utf8'),
  ]);
  return { from, to, raw };
}
