// The lexical layer of table sources (db/README.md): physical lines into
// entries (a line plus its continuation lines) and entries into words, plus
// the value checks every table shares (account names, sizes, lengths). Pure
// and internal to src/db; problems go to the caller's `report` and never throw.
import { MAX_KEY_BYTES } from '../state/index.js';

/** A word of a source line with its quotes removed, and where it stands. */
export interface Token {
  readonly text: string;
  readonly line: number;
  /** 1-based column where the written word starts (at a quote, if it starts with one). */
  readonly column: number;
  /** The word as written, quotes and escapes included: columnOf maps back through it. */
  readonly raw: string;
  /** For a part of a word (an option's value, see subToken): where `text` starts in the whole word's text. */
  readonly offset?: number;
}

/** The part of a word from `from` on (e.g. the value after "uid="), keeping its columns. */
export function subToken(t: Token, from: number): Token {
  return { ...t, text: t.text.slice(from), offset: (t.offset ?? 0) + from };
}

/**
 * How long a value may be, in UTF-8 bytes. Keys: what LMDB can store
 * (src/state/keys.ts, the one statement of that limit; a compile with a
 * longer one would fail half-way). Values: what the system or the protocol takes, so
 * a mistake (a pasted file, a missing quote) is caught here rather than at
 * delivery.
 */
export const LIMITS = {
  keyBytes: MAX_KEY_BYTES,
  /** A user or group name: LOGIN_NAME_MAX (256) less its NUL. */
  accountBytes: 255,
  /** A maildir or mbox path, before variables are filled in: PATH_MAX (4096) less its NUL. */
  pathBytes: 4095,
  /** A Maildir++ folder becomes the directory ".NAME": NAME_MAX (255) less the dot. */
  folderBytes: 254,
  /** A pipe command line, all words. */
  commandBytes: 4096,
  /** A forward, list or subscriber address: RFC 5321's 256-byte path less the angle brackets. */
  addressBytes: 254,
  /** A reject text: the reply line "550 5.7.1 TEXT" must stay under SMTP's 512 bytes. */
  replyTextBytes: 400,
  /** A header name in a condition. */
  headerNameBytes: 255,
  /** A glob or a regex (source and flags). */
  patternBytes: 4096,
  /** A list's manager= value. */
  managerBytes: 4096,
} as const;

export const byteLength = (s: string): number => Buffer.byteLength(s, 'utf8');

/** True when `text` is at most `limit` UTF-8 bytes; otherwise reports "WHAT is N bytes long…" and returns false. */
export function checkLength(what: string, text: string, limit: number, at: { line: number; column?: number }, report: Report): boolean {
  const bytes = byteLength(text);
  if (bytes <= limit) return true;
  report(at.line, `${what} is ${bytes} bytes long, more than the ${limit} allowed`, at.column);
  return false;
}

/** The column of `t.text[index]` in its line, looking through quotes and escapes. */
export function columnOf(t: Token, index: number): number {
  const want = index + (t.offset ?? 0);
  let textAt = 0;
  let inQuotes = false;
  for (let i = 0; i < t.raw.length; i++) {
    const c = t.raw.charAt(i);
    if (c === '"') {
      inQuotes = !inQuotes;
      continue;
    }
    const at = i;
    if (inQuotes && c === '\\' && (t.raw.charAt(i + 1) === '"' || t.raw.charAt(i + 1) === '\\')) i++; // \" and \\ are one character
    if (textAt === want) return t.column + at;
    textAt++;
  }
  return t.column + t.raw.length;
}

/** Where an entry starts: its first line, and "file:line" for `origin` fields. */
export interface Where {
  readonly line: number;
  readonly origin: string;
}

/** One problem: its line, what is wrong, and the column when one character is to blame. */
export type Report = (line: number, message: string, column?: number) => void;

/** A key line and its continuation lines, as words. */
export interface Entry {
  readonly line: number;
  readonly tokens: Token[];
  /** A word could not be read; the entry is skipped so one typo gives one error. */
  broken: boolean;
}

/**
 * Groups lines into entries. Blank lines and lines whose first non-blank
 * character is "#" are skipped anywhere, as in Postfix tables, so a comment
 * may sit between an entry and its continuation lines.
 */
export function splitEntries(text: string, report: Report): Entry[] {
  const entries: Entry[] = [];
  let current: Entry | undefined;
  text.split('\n').forEach((raw, index) => {
    const line = index + 1;
    const body = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = body.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    // A NUL ends a C string: in a key or a path it would name something else than what was written.
    const nul = body.indexOf('\0');
    const tokens = nul >= 0 ? undefined : tokenize(body, line, report);
    if (nul >= 0) report(line, 'NUL character (byte 0): a table source is text', nul + 1);
    if (/^\s/.test(body)) {
      if (current === undefined) {
        report(line, 'continuation line (it starts with white space) but no entry before it');
      } else if (tokens === undefined) {
        current.broken = true;
      } else {
        current.tokens.push(...tokens);
      }
      return;
    }
    current = { line, tokens: tokens ?? [], broken: tokens === undefined };
    entries.push(current);
  });
  return entries;
}

/**
 * Splits at white space. A double-quoted stretch may hold spaces and may sit
 * inside a word (`pipe:"/usr/bin/filter -v"`); inside it only \" and \\ are
 * escapes, so regex backslashes pass through untouched.
 */
function tokenize(body: string, line: number, report: Report): Token[] | undefined {
  const tokens: Token[] = [];
  let i = 0;
  while (i < body.length) {
    while (i < body.length && isSpace(body.charAt(i))) i++;
    if (i >= body.length) break;
    const start = i;
    let text = '';
    while (i < body.length && !isSpace(body.charAt(i))) {
      const c = body.charAt(i);
      if (c !== '"') {
        text += c;
        i++;
        continue;
      }
      const quote = i;
      i++;
      let closed = false;
      while (i < body.length) {
        const q = body.charAt(i);
        const next = body.charAt(i + 1);
        if (q === '\\' && (next === '"' || next === '\\')) {
          text += next;
          i += 2;
        } else if (q === '"') {
          closed = true;
          i++;
          break;
        } else {
          text += q;
          i++;
        }
      }
      if (!closed) {
        report(line, 'unterminated double quote', quote + 1);
        return undefined;
      }
    }
    tokens.push({ text, line, column: start + 1, raw: body.slice(start, i) });
  }
  return tokens;
}

function isSpace(c: string): boolean {
  return c === ' ' || c === '\t';
}

// A user or group: a POSIX-style name (Samba's trailing "$" allowed) or a number.
const ACCOUNT_RE = /^(?:\d+|[A-Za-z_][A-Za-z0-9_.-]*\$?)$/;
const MAX_ID = 4294967294; // (uid_t)-1 means "no change" to chown(2), so it is not an id
/** After a root account, "!" says the entry means root (db/README.md, "Root"). */
const ROOT_MARK = '!';

/** What the compiler needs to judge a uid or gid value: the entry's key and the keys allowed root. */
export interface AccountContext {
  readonly key: string;
  /** delivery.allow_root, lower case. */
  readonly allowRoot: ReadonlySet<string>;
}

/**
 * A uid or gid value: a name or a number, returned without a root marker.
 * root (or 0) is refused unless it is marked "root!" or the key is in
 * delivery.allow_root, so a slip cannot make a delivery run as the superuser
 * (the pool refuses such a delivery too, but only when mail arrives).
 */
export function parseAccount(what: 'uid' | 'gid', t: Token, ctx: AccountContext, report: Report): string | undefined {
  const marked = t.text.endsWith(ROOT_MARK);
  const name = marked ? t.text.slice(0, -ROOT_MARK.length) : t.text;
  if (!checkLength(`${what} name`, name, LIMITS.accountBytes, { line: t.line, column: columnOf(t, 0) }, report)) return undefined;
  if (!ACCOUNT_RE.test(name) || (/^\d+$/.test(name) && Number(name) > MAX_ID)) {
    report(t.line, `bad ${what} "${t.text}" (want a ${what === 'uid' ? 'user' : 'group'} name or a number up to ${MAX_ID})`);
    return undefined;
  }
  const root = name === 'root' || (/^\d+$/.test(name) && Number(name) === 0);
  if (marked && !root) {
    report(t.line, `${what} "${t.text}": "${ROOT_MARK}" marks root (or 0) only`, columnOf(t, t.text.length - 1));
    return undefined;
  }
  if (root && !marked && !ctx.allowRoot.has(ctx.key)) {
    const whose = what === 'uid' ? 'the superuser' : "root's group";
    report(t.line, `${what} "${name}" is ${whose}: deliveries as root need "${ctx.key}" in delivery.allow_root; write "${name}${ROOT_MARK}" if this entry means it (db/README.md, "Root")`, columnOf(t, 0));
    return undefined;
  }
  return name;
}

const SIZE_RE = /^(\d+)([kmg]?)$/i;
const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** "512k", "10M", "1G" (binary multiples) or plain bytes. */
export function parseSize(text: string, line: number, report: Report): number | undefined {
  const m = SIZE_RE.exec(text);
  const bytes = m ? Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] ?? 1) : NaN;
  if (!Number.isSafeInteger(bytes)) {
    report(line, `bad size "${text}" (want bytes or a number with k, M or G, e.g. 512k, 10M)`);
    return undefined;
  }
  return bytes;
}
