// Vacation replies (RFC 3834 "Recommendations for Automatic Responses to
// Electronic Mail", RFC 5230 Sieve vacation): whether a message may be
// answered, the reply itself, and the key under which a reply is remembered
// (src/state/store.ts claimVacation gives "once per sender per period").
//
// vacationRefusal says why NOT to reply (for the log line), or undefined.
// It refuses, in this order (RFC 3834 §2, RFC 5230 §4.5 and §4.6):
//   - the vacation is over (until= is a day before today, local time);
//   - the null sender, and senders that are programs or lists: MAILER-DAEMON,
//     LISTSERV, majordomo, a local part (or its part before "+") starting
//     "owner-" or ending "-owner" / "-request", and no-reply and bounce
//     addresses: a component (between "-", "_", ".", "+", "=" or an end) that
//     is noreply, no-reply, no_reply, no.reply, donotreply, do-not-reply,
//     do_not_reply, bounce or bounces ("github-noreply", "bounces+x=y",
//     "list-bounces"; not "bouncer" or "noreplyable");
//   - list mail: List-Id (RFC 2919), any RFC 2369 List-* field (Help,
//     Subscribe, Unsubscribe, Post, Owner, Archive), Mailing-List (ezmlm),
//     X-Mailing-List, or Precedence bulk, list or junk;
//   - automatic mail: Auto-Submitted other than "no" (RFC 3834 §5),
//     X-Auto-Response-Suppress naming OOF or All (Microsoft), a report
//     (Content-Type multipart/report: DSNs and MDNs), our own replies
//     (REPLY_MARK_HEADER, added by buildVacationReply, in case a relay drops
//     Auto-Submitted), and what the spam check called spam;
//   - mail that does not name one of ownerAddresses in To, Cc, Resent-To or
//     Resent-Cc (explicit addressing: Bcc, lists and aliases get no reply).
//     Address lists are parsed as RFC 5322 says (display names, quoted
//     strings, comments, groups, routes); addresses compare without regard
//     to case, and a quoted local part compares by its content. The header
//     values are the decoded ones src/mail/message.ts gives: an encoded
//     display name that decodes to "<x@y>" reads as that address, which can
//     only make us answer a sender who wrote our owner's address themselves.
//
// buildVacationReply writes the whole reply, CRLF line endings. Nothing the
// sender controls can add a header line: their Subject is stripped of control
// characters (an encoded word may decode to CR LF) and re-encoded, their
// Message-ID and References are reduced to well-formed <id> tokens. The
// reply carries Auto-Submitted: auto-replied (RFC 3834 §5) and also
// Precedence: bulk: RFC 3834 says not to rely on Precedence, and we do not
// (our loop guards are Auto-Submitted and REPLY_MARK_HEADER), but many
// older responders (vacation(1), procmail recipes, some groupware) read only
// Precedence, so it costs one line to keep them from answering our answer.
// X-Auto-Response-Suppress: All does the same for Exchange.
//
// Exports: vacationRefusal, buildVacationReply, vacationKey, vacationAddresses,
// parseAddressList, REPLY_MARK_HEADER, VacationCheck, VacationReply.
// Pure; never throws.
import type { RecipientAddress } from '../mail/address.js';
import type { Destination } from './rules.js';

/** The header our replies carry, so that we never answer one of our own (lower case, as message.ts keys them). */
export const REPLY_MARK_HEADER = 'x-mailprocd-vacation';

type Headers = ReadonlyMap<string, readonly string[]>;

export interface VacationCheck {
  /** The envelope sender ("" = the null sender). */
  readonly sender: string;
  /** Lower-case names, decoded values, as src/mail/message.ts gives them. */
  readonly headers: Headers;
  /** The addresses that count as the recipient's (vacationAddresses). */
  readonly ownerAddresses: readonly string[];
  readonly now: Date;
  /** The vacation's until= (YYYY-MM-DD): replies up to and including that day. */
  readonly until?: string;
  /** The owner's spam verdict, when a check ran. */
  readonly isSpam?: boolean;
}

const LIST_HEADERS = ['list-id', 'list-help', 'list-subscribe', 'list-unsubscribe', 'list-post', 'list-owner', 'list-archive', 'mailing-list', 'x-mailing-list'];
const BULK_PRECEDENCE = new Set(['bulk', 'list', 'junk']);
const ADDRESSING_HEADERS = ['to', 'cc', 'resent-to', 'resent-cc'];

/** Whole local parts of programs and list servers. */
const PROGRAM_LOCALS = new Set(['mailer-daemon', 'listserv', 'majordomo']);
/** A component of a local part (between separators or ends) that marks an address nobody reads. */
const NO_REPLY_RE = /(?:^|[-_.+=])(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?)(?:$|[-_.+=])/;

function localDate(d: Date): string {
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** Why this sender gets no reply, or undefined. */
function senderRefusal(sender: string): string | undefined {
  if (sender === '') return 'null sender (a bounce or notification)';
  const at = sender.lastIndexOf('@');
  let local = (at < 0 ? sender : sender.slice(0, at)).toLowerCase();
  if (local.length >= 2 && local.startsWith('"') && local.endsWith('"')) local = local.slice(1, -1).replace(/\\(.)/g, '$1');
  const plus = local.indexOf('+');
  for (const part of plus > 0 ? [local, local.slice(0, plus)] : [local]) {
    if (PROGRAM_LOCALS.has(part)) return `sender ${sender} is a mail program`;
    if (part.startsWith('owner-') || part.endsWith('-owner') || part.endsWith('-request')) return `sender ${sender} is a list's administrative address`;
  }
  if (NO_REPLY_RE.test(local)) return `sender ${sender} is a no-reply or bounce address`;
  return undefined;
}

/** Why these headers say the message is list, bulk or automatic mail, or undefined. */
function headerRefusal(headers: Headers): string | undefined {
  const first = (name: string): readonly string[] => headers.get(name) ?? [];
  if (headers.has(REPLY_MARK_HEADER)) return `our own automatic reply (${REPLY_MARK_HEADER} field)`;
  for (const v of first('auto-submitted')) {
    const keyword = (v.split(/[;(\s]/)[0] ?? '').toLowerCase();
    if (keyword !== '' && keyword !== 'no') return `Auto-Submitted: ${keyword}`;
  }
  for (const name of LIST_HEADERS) if (headers.has(name)) return `list mail (${name} field)`;
  for (const v of first('precedence')) {
    const p = v.trim().toLowerCase();
    if (BULK_PRECEDENCE.has(p)) return `Precedence: ${p}`;
  }
  for (const v of first('x-auto-response-suppress')) {
    const words = v.toLowerCase().split(/[\s,]+/);
    if (words.includes('all') || words.includes('oof')) return `X-Auto-Response-Suppress: ${v.trim()}`;
  }
  for (const v of first('content-type')) {
    if (/^\s*multipart\/report\b/i.test(v)) return 'a delivery or read report (multipart/report)';
  }
  return undefined;
}

/** Why not to reply to this message (for the log line), or undefined when a reply may go. */
export function vacationRefusal(input: VacationCheck): string | undefined {
  if (input.until !== undefined && localDate(input.now) > input.until) return `the vacation ended on ${input.until}`;
  const bySender = senderRefusal(input.sender);
  if (bySender !== undefined) return bySender;
  const byHeader = headerRefusal(input.headers);
  if (byHeader !== undefined) return byHeader;
  if (input.isSpam === true) return 'the message is spam';
  const owners = new Set(input.ownerAddresses.map(normaliseAddress));
  for (const name of ADDRESSING_HEADERS) {
    for (const value of input.headers.get(name) ?? []) {
      if (parseAddressList(value).some((a) => owners.has(normaliseAddress(a)))) return undefined;
    }
  }
  return `not addressed to ${input.ownerAddresses[0] ?? 'the recipient'} in To or Cc`;
}

/**
 * The addresses that make a message explicitly the recipient's: the address
 * as given, without its extension, and the vacation's addresses=.
 */
export function vacationAddresses(r: RecipientAddress, d: Extract<Destination, { kind: 'vacation' }>): string[] {
  const all = [r.address, `${r.user}@${r.domain}`, ...(d.addresses ?? [])].map((a) => a.toLowerCase());
  return [...new Set(all)];
}

/**
 * The key a reply from `owner` to `sender` is remembered under (both compared
 * without regard to case). The separator is U+001F, which no address holds
 * (SMTP refuses control characters); not NUL, which lmdb-js would turn a
 * long key into an array key with.
 */
export function vacationKey(owner: string, sender: string): string {
  return `${owner.toLowerCase()}\x1f${sender.toLowerCase()}`;
}

/** local@domain with a quoted local part unquoted, lower case: how addresses are compared here. */
function normaliseAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address.toLowerCase();
  let local = address.slice(0, at);
  if (local.length >= 2 && local.startsWith('"') && local.endsWith('"')) local = local.slice(1, -1).replace(/\\(.)/g, '$1');
  return `${local}@${address.slice(at + 1)}`.toLowerCase();
}

// ---- RFC 5322 address lists ----

type AddressToken = { kind: 'special'; text: string } | { kind: 'word'; text: string };

/** Words (atoms, quoted strings with their quotes, domain literals) and specials; comments and white space dropped. */
function tokenizeAddresses(value: string): AddressToken[] {
  const tokens: AddressToken[] = [];
  let i = 0;
  while (i < value.length) {
    const c = value.charAt(i);
    if (c === ' ' || c === '\t' || c === '\r' || c === '\n') {
      i++;
    } else if (c === '(') {
      let depth = 0;
      for (; i < value.length; i++) {
        const d = value.charAt(i);
        if (d === '\\') i++;
        else if (d === '(') depth++;
        else if (d === ')' && --depth === 0) break;
      }
      i++;
    } else if (c === '"' || c === '[') {
      const close = c === '"' ? '"' : ']';
      let text = c;
      let closed = false;
      for (i++; i < value.length && !closed; i++) {
        const d = value.charAt(i);
        if (d === '\\' && i + 1 < value.length) {
          text += d + value.charAt(++i);
        } else {
          text += d;
          closed = d === close;
        }
      }
      // An unterminated quote swallows the rest of the value: it names nobody.
      if (closed) tokens.push({ kind: 'word', text });
    } else if ('<>,:;@.'.includes(c)) {
      tokens.push({ kind: 'special', text: c });
      i++;
    } else {
      let text = '';
      while (i < value.length && !' \t\r\n()"[<>,:;@.'.includes(value.charAt(i))) text += value.charAt(i++);
      tokens.push({ kind: 'word', text });
    }
  }
  return tokens;
}

/**
 * The addr-specs (local@domain, as written) of an address-list field value:
 * `"Doe, J." <j@x> (work), Team: a@x, b@x;, <@relay:c@x>` → j@x, a@x, b@x, c@x.
 * Anything that is not an address (a lone display name, an empty group) gives nothing.
 */
export function parseAddressList(value: string): string[] {
  const out: string[] = [];
  let outside: AddressToken[] = [];
  let angle: AddressToken[] | undefined;
  let inAngle = false;
  const addrSpec = (tokens: readonly AddressToken[]): string | undefined => {
    // A route (@a,@b:) before the address is obsolete syntax: keep what follows its colon.
    const colon = tokens.map((t) => t.text).lastIndexOf(':');
    const text = tokens.slice(colon + 1).map((t) => t.text).join('');
    const at = text.lastIndexOf('@');
    return at > 0 && at < text.length - 1 ? text : undefined;
  };
  const finish = (): void => {
    const address = angle !== undefined ? addrSpec(angle) : addrSpec(outside);
    if (address !== undefined) out.push(address);
    outside = [];
    angle = undefined;
  };
  for (const t of tokenizeAddresses(value)) {
    if (inAngle) {
      if (t.kind === 'special' && t.text === '>') inAngle = false;
      else angle?.push(t);
      continue;
    }
    if (t.kind === 'special') {
      if (t.text === '<') {
        inAngle = true;
        angle = [];
        continue;
      }
      if (t.text === ',' || t.text === ';') {
        finish();
        continue;
      }
      if (t.text === ':' && angle === undefined) {
        // A group's display name: the mailboxes follow.
        outside = [];
        continue;
      }
      if (t.text === '>') continue;
    }
    outside.push(t);
  }
  finish();
  return out;
}

// ---- the reply ----

export interface VacationReply {
  /** The original envelope sender: the reply goes to them (RFC 3834 §4). */
  readonly to: string;
  /** The reply's From: the vacation's from=, else the recipient. */
  readonly from: string;
  /** The original message's headers (lower-case names, decoded values). */
  readonly headers: Headers;
  /** The vacation's subject=; without it "Auto: " and the original subject (RFC 3834 §3.1.5). */
  readonly subject?: string;
  readonly text: string;
  /** For the Message-ID's right part. */
  readonly hostname: string;
  readonly date: Date;
  /** Unique per reply (e.g. the queue id and a counter): the Message-ID is <messageId@hostname>; one holding "@" is used whole. */
  readonly messageId: string;
}

const CRLF = '\r\n';
/** A msg-id as RFC 5322 §3.6.4 writes it (printable ASCII, no angle brackets inside), of a length that fits a folded line. */
const MSG_ID_RE = /<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>/g;
/** How many References ids a reply keeps: the first (the thread's root) and the most recent. */
const MAX_REFERENCES = 20;

/** One line of text with every control character (CR, LF, tab, NUL, C1) and run of spaces made one space. */
function oneLine(text: string): string {
  return text.replace(/[\p{Cc} ]+/gu, ' ').trim();
}

/** An address for From/To: no control characters, no angle brackets, in angle brackets. */
function angleAddress(address: string): string {
  return `<${address.replace(/[\p{Cc}<>\s]/gu, '')}>`;
}

function messageIds(value: string | undefined): string[] {
  return value === undefined ? [] : [...value.matchAll(MSG_ID_RE)].map((m) => m[0]);
}

/** RFC 5322 date-time in UTC: "Tue, 30 Jun 2026 12:00:00 +0000". */
function rfc5322Date(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} `
    + `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`;
}

/** A header field with an unstructured value (one line of text), folded and RFC 2047-encoded as needed. */
function unstructuredField(name: string, value: string): string {
  const text = oneLine(value);
  // Printable ASCII that no reader would take for an encoded word, and no word too long to fold.
  if (/^[\x20-\x7e]*$/.test(text) && !text.includes('=?') && text.split(' ').every((w) => w.length <= 900)) {
    let line = `${name}:`;
    const lines: string[] = [];
    for (const w of text === '' ? [] : text.split(' ')) {
      if (line.length + 1 + w.length > 78 && line.length > name.length + 1) {
        lines.push(line);
        line = '';
      }
      line += ` ${w}`;
    }
    lines.push(line);
    return lines.join(CRLF);
  }
  // RFC 2047 B encoding of UTF-8, whole characters per encoded word, one word a line: each line stays under 78.
  const words: string[] = [];
  let chunk = '';
  for (const ch of text) {
    if (Buffer.byteLength(chunk + ch, 'utf8') > 39) {
      words.push(chunk);
      chunk = '';
    }
    chunk += ch;
  }
  if (chunk !== '') words.push(chunk);
  return `${name}: ${words.map((w) => `=?UTF-8?B?${Buffer.from(w, 'utf8').toString('base64')}?=`).join(`${CRLF} `)}`;
}

/** Quoted-printable (RFC 2045 §6.7) of UTF-8 text, CRLF line breaks, lines of at most 76 characters. */
function quotedPrintable(text: string): string {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
  return lines.map((line) => {
    const bytes = Buffer.from(line, 'utf8');
    const units: string[] = [];
    bytes.forEach((b, i) => {
      const last = i === bytes.length - 1;
      const literal = (b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last);
      units.push(literal ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`);
    });
    const out: string[] = [];
    let current = '';
    for (const u of units) {
      if (current.length + u.length > 75) {
        out.push(`${current}=`);
        current = '';
      }
      current += u;
    }
    out.push(current);
    return out.join(CRLF);
  }).join(CRLF) + CRLF;
}

/** The whole reply message, CRLF line endings, ready for the relay. */
export function buildVacationReply(input: VacationReply): Buffer {
  const original = (name: string): string | undefined => input.headers.get(name)?.[0];
  const subject = input.subject !== undefined ? input.subject : `Auto: ${oneLine(original('subject') ?? '') || '(no subject)'}`;
  const idPart = (s: string): string => s.replace(/[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]/g, '');
  const ownId = input.messageId.includes('@') ? `<${idPart(input.messageId)}>` : `<${idPart(input.messageId)}@${idPart(input.hostname) || 'localhost'}>`;

  const inReplyTo = messageIds(original('message-id'))[0];
  let references = messageIds(original('references'));
  if (references.length === 0) {
    const parent = messageIds(original('in-reply-to'));
    if (parent.length === 1) references = parent;
  }
  if (inReplyTo !== undefined) references.push(inReplyTo);
  if (references.length > MAX_REFERENCES) references = [references[0] as string, ...references.slice(-(MAX_REFERENCES - 1))];

  const fields = [
    `From: ${angleAddress(input.from)}`,
    `To: ${angleAddress(input.to)}`,
    unstructuredField('Subject', subject),
    `Date: ${rfc5322Date(input.date)}`,
    `Message-ID: ${ownId}`,
    ...(inReplyTo !== undefined ? [`In-Reply-To: ${inReplyTo}`] : []),
    ...(references.length > 0 ? [`References: ${references.join(`${CRLF} `)}`] : []),
    'Auto-Submitted: auto-replied',
    'Precedence: bulk',
    'X-Auto-Response-Suppress: All',
    'X-Mailprocd-Vacation: auto-replied',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
  ];
  return Buffer.from(`${fields.join(CRLF)}${CRLF}${CRLF}${quotedPrintable(input.text)}`, 'utf8');
}
