// The lexical layer of table sources (db/README.md): physical lines into
// entries (a line plus its continuation lines) and entries into words, plus
// the value checks every table shares (account names, sizes). Pure and
// internal to src/db; problems go to the caller's `report` and never throw.

/** A word of a source line with its quotes removed, and the line it stands on. */
export interface Token {
  readonly text: string;
  readonly line: number;
}

/** Where an entry starts: its first line, and "file:line" for `origin` fields. */
export interface Where {
  readonly line: number;
  readonly origin: string;
}

export type Report = (line: number, message: string) => void;

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
    const tokens = tokenize(body, line, report);
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
    let text = '';
    while (i < body.length && !isSpace(body.charAt(i))) {
      const c = body.charAt(i);
      if (c !== '"') {
        text += c;
        i++;
        continue;
      }
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
        report(line, 'unterminated double quote');
        return undefined;
      }
    }
    tokens.push({ text, line });
  }
  return tokens;
}

function isSpace(c: string): boolean {
  return c === ' ' || c === '\t';
}

// A user or group: a POSIX-style name (Samba's trailing "$" allowed) or a number.
const ACCOUNT_RE = /^(?:\d+|[A-Za-z_][A-Za-z0-9_.-]*\$?)$/;
const MAX_ID = 4294967294; // (uid_t)-1 means "no change" to chown(2), so it is not an id

export function checkAccount(what: 'uid' | 'gid', text: string, line: number, report: Report): boolean {
  const ok = ACCOUNT_RE.test(text) && !(/^\d+$/.test(text) && Number(text) > MAX_ID);
  if (!ok) report(line, `bad ${what} "${text}" (want a ${what === 'uid' ? 'user' : 'group'} name or a number up to ${MAX_ID})`);
  return ok;
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
