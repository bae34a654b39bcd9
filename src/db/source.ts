// Table sources: the one parser for the text files an administrator edits
// (rules, uid, gid, lists, spam, nodes; the format is in db/README.md). Pure, no I/O:
// text in, typed entries and EVERY error out, each naming file and line, and
// the column where one character is to blame (a regex feature the linear-time
// matcher lacks, a NUL). Never throws on bad input; a caller must not compile
// a table whose parse returned errors (compileTables in tables.ts does not).
// Refused besides bad syntax: keys LMDB cannot store (over 1978 bytes) or that
// hold control characters, values longer than their use allows (LIMITS in
// source-lex.ts), and uid/gid root or 0 unless the key is in
// delivery.allow_root or the value is written "root!" (db/README.md, "Root").
//
// Exports: parseTableSource, formatSourceError, SourceError, ParsedTable,
// ParseOptions, MAX_KEY_BYTES.

import { fitsKey, keyBytes } from '../state/index.js';
import type { ListEntry, ListMode, Rule, SpamSetting, TableName, TableValues } from '../classify/rules.js';
import {
  byteLength, checkLength, columnOf, LIMITS, parseAccount, splitEntries, subToken,
  type AccountContext, type Report, type Token, type Where,
} from './source-lex.js';
import { parseRule } from './source-rule.js';

export interface SourceError {
  readonly file: string;
  /** 1-based; 0 when the problem is the whole file (e.g. it cannot be read). */
  readonly line: number;
  /** 1-based, in characters; only when one character is to blame. */
  readonly column?: number;
  readonly message: string;
}

export interface ParseOptions {
  /** delivery.allow_root: keys whose entries may name root (or 0) without the "root!" marker. */
  readonly allowRoot?: readonly string[];
  /** Where an entry came from, for logs and `rules test` (default "FILE:LINE"); db sync names the central row. */
  readonly originOf?: (line: number) => string;
}

/** lmdb-js's key limit in bytes; a longer key cannot be stored (nor looked up). */
export const MAX_KEY_BYTES = LIMITS.keyBytes;

export interface ParsedTable<T extends TableName> {
  /** Lower-cased key → value. Rules keep every line of a key, in file order. */
  readonly entries: Map<string, TableValues[T]>;
  readonly errors: SourceError[];
}

/** "db/rules:12: unknown destination kind "maildri"…" or "db/rules:12:30: …", the forms editors and compilers use. */
export function formatSourceError(e: SourceError): string {
  if (e.line <= 0) return `${e.file}: ${e.message}`;
  return e.column !== undefined ? `${e.file}:${e.line}:${e.column}: ${e.message}` : `${e.file}:${e.line}: ${e.message}`;
}

export function parseTableSource<T extends TableName>(table: T, text: string, file: string, options: ParseOptions = {}): ParsedTable<T> {
  const errors: SourceError[] = [];
  const report: Report = (line, message, column) => errors.push({ file, line, ...(column !== undefined ? { column } : {}), message });
  const allowRoot = new Set((options.allowRoot ?? []).map((k) => k.toLowerCase()));
  const rules = new Map<string, Rule[]>();
  const values = new Map<string, string | ListEntry | SpamSetting>();
  const firstLine = new Map<string, number>();
  for (const entry of splitEntries(text, report)) {
    const [keyToken, ...rest] = entry.tokens;
    if (entry.broken || keyToken === undefined) continue;
    const key = parseKey(keyToken, report);
    if (key === undefined) continue;
    const where: Where = { line: entry.line, origin: options.originOf?.(entry.line) ?? `${file}:${entry.line}` };
    const accounts: AccountContext = { key, allowRoot };
    if (table === 'rules') {
      const rule = parseRule(rest, where, accounts, report);
      if (rule) rules.set(key, [...(rules.get(key) ?? []), rule]);
      continue;
    }
    // One value per key: a second line for the same key is a mistake, not an override.
    const seen = firstLine.get(key);
    if (seen !== undefined) {
      report(entry.line, `duplicate key "${key}" (first given at line ${seen})`);
      continue;
    }
    firstLine.set(key, entry.line);
    if (table === 'nodes' && !keyToken.text.includes('@')) {
      report(entry.line, `key "${keyToken.text}" names no domain: Postfix's transport_maps cannot route a local part in every domain (write user@domain or @domain)`);
      continue;
    }
    const value = table === 'lists' ? parseList(rest, where, report)
      : table === 'spam' ? parseSpam(rest, where, report)
      : table === 'nodes' ? parseNode(rest, where, report)
      : parseAccountValue(table, rest, where, accounts, report);
    if (value !== undefined) values.set(key, value);
  }
  // The casts are safe: which map was filled follows from `table`, which fixes T.
  const entries = (table === 'rules' ? rules : values) as Map<string, TableValues[T]>;
  // The lexer reports while grouping lines, before entries are parsed; give them back in file order.
  return { entries, errors: errors.sort((a, b) => a.line - b.line || (a.column ?? 0) - (b.column ?? 0)) };
}

// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL_RE = /[\x00-\x1f\x7f]/;

/** user@domain, user+ext@domain, user, user+ext or @domain; lower-cased like the lookup keys. */
function parseKey(t: Token, report: Report): string | undefined {
  const key = t.text.toLowerCase();
  const at = key.indexOf('@');
  const ok = key !== '' && key !== '@' && at === key.lastIndexOf('@') && !key.endsWith('@');
  if (!ok) {
    report(t.line, `bad key "${t.text}" (want user@domain, user+ext@domain, user or @domain)`);
    return undefined;
  }
  const control = CONTROL_RE.exec(t.text);
  if (control) {
    const code = control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    report(t.line, `control character U+${code} in key "${t.text.slice(0, 60)}": no address holds one`, columnOf(t, control.index));
    return undefined;
  }
  // Lower-casing can change the length in bytes (İ is 2 bytes, i̇ 3): measure what is stored.
  if (!fitsKey(key)) {
    report(t.line, `key is ${keyBytes(key)} bytes long, more than the ${LIMITS.keyBytes} LMDB can store`, columnOf(t, 0));
    return undefined;
  }
  return key;
}

function parseAccountValue(table: 'uid' | 'gid', tokens: readonly Token[], where: Where, accounts: AccountContext, report: Report): string | undefined {
  const [name, extra] = tokens;
  if (name === undefined || extra !== undefined) {
    report(extra?.line ?? where.line, `want exactly one ${table === 'uid' ? 'user' : 'group'} name or number after the key`);
    return undefined;
  }
  return parseAccount(table, name, accounts, report);
}

const LIST_MODES: readonly ListMode[] = ['open', 'closed', 'moderated'];
const MANAGER_RE = /^(?:|alias|lmtp:unix:\/\S*|lmtp:inet:(?:\[[0-9A-Fa-f:.]+\]|[^\s:[\]]+):\d{1,5}|pipe:\S.*)$/s;
const SUBSCRIBER_RE = /^[^@\s,]+@[^@\s,]+$/;

function parseList(tokens: readonly Token[], where: Where, report: Report): ListEntry | undefined {
  let ok = true;
  const fail: Report = (line, message, column) => {
    ok = false;
    report(line, message, column);
  };
  const [modeToken, ...rest] = tokens;
  const mode = LIST_MODES.find((m) => m === modeToken?.text);
  if (mode === undefined) {
    const found = modeToken === undefined ? 'none' : `"${modeToken.text}"`;
    fail(modeToken?.line ?? where.line, `list mode must be open, closed or moderated, found ${found}`);
  }
  let manager: string | undefined;
  // A Set while parsing: a list of thousands checked for duplicates with includes() is quadratic.
  const subscribers = new Set<string>();
  for (let i = 0; i < rest.length; i++) {
    const t = rest[i] as Token;
    const eq = t.text.indexOf('=');
    const name = eq < 0 ? t.text : t.text.slice(0, eq);
    const value = t.text.slice(eq + 1);
    if (eq >= 0 && name === 'manager') {
      if (manager !== undefined) fail(t.line, 'manager= given twice');
      if (!checkLength('manager', value, LIMITS.managerBytes, { line: t.line, column: columnOf(t, eq + 1) }, fail)) continue;
      if (!MANAGER_RE.test(value)) fail(t.line, `bad manager "${value}" (want lmtp:unix:/PATH, lmtp:inet:HOST:PORT, pipe:COMMAND, alias or "")`);
      manager = value;
    } else if (eq >= 0 && name === 'subscribers') {
      // A list ending in a comma goes on in the next word, so it can run over continuation lines.
      let word: Token | undefined = value === '' ? undefined : subToken(t, eq + 1);
      while (word !== undefined) {
        const items = word.text.split(',');
        const more = word.text.endsWith(',') && i + 1 < rest.length;
        if (more) items.pop();
        for (const item of items) addSubscriber(subscribers, item, word.line, fail);
        word = more ? rest[++i] : undefined;
      }
    } else {
      fail(t.line, `unknown list option "${t.text}" (want manager=… or subscribers=…)`);
    }
  }
  return ok && mode !== undefined ? { mode, manager: manager ?? '', subscribers: [...subscribers], origin: where.origin } : undefined;
}

function addSubscriber(subscribers: Set<string>, item: string, line: number, fail: Report): void {
  const address = item.toLowerCase();
  if (address === '') fail(line, 'empty subscriber (two commas in a row, or a trailing comma at the end of the entry)');
  else if (byteLength(address) > LIMITS.addressBytes) fail(line, `subscriber "${item.slice(0, 60)}…" is ${byteLength(address)} bytes long, more than the ${LIMITS.addressBytes} an address may have`);
  else if (!SUBSCRIBER_RE.test(address)) fail(line, `bad subscriber "${item}" (want user@domain)`);
  else if (subscribers.has(address)) fail(line, `subscriber "${address}" listed twice`);
  else subscribers.add(address);
}

const NUMBER_RE = /^-?\d{1,6}(?:\.\d{1,3})?$/;

/** `on|off [required=N] [on_error=open|closed]`. */
function parseSpam(tokens: readonly Token[], where: Where, report: Report): SpamSetting | undefined {
  let ok = true;
  const fail: Report = (line, message, column) => {
    ok = false;
    report(line, message, column);
  };
  const [switchToken, ...rest] = tokens;
  const check = switchToken?.text === 'on' ? true : switchToken?.text === 'off' ? false : undefined;
  if (check === undefined) fail(switchToken?.line ?? where.line, `want on or off after the key, found ${switchToken === undefined ? 'nothing' : `"${switchToken.text}"`}`);
  let required: number | undefined;
  let onError: 'open' | 'closed' | undefined;
  for (const t of rest) {
    const eq = t.text.indexOf('=');
    const name = eq < 0 ? t.text : t.text.slice(0, eq);
    const value = t.text.slice(eq + 1);
    if (eq > 0 && name === 'required' && required === undefined) {
      if (NUMBER_RE.test(value)) required = Number(value);
      else fail(t.line, `bad required "${value}" (want a score such as 5, 3.5 or -1)`, columnOf(t, eq + 1));
    } else if (eq > 0 && name === 'on_error' && onError === undefined) {
      if (value === 'open' || value === 'closed') onError = value;
      else fail(t.line, `bad on_error "${value}" (want open or closed)`, columnOf(t, eq + 1));
    } else if (eq > 0 && (name === 'required' || name === 'on_error')) {
      fail(t.line, `${name}= given twice`, columnOf(t, 0));
    } else {
      fail(t.line, `unknown spam option "${t.text}" (want required=N or on_error=open|closed)`, columnOf(t, 0));
    }
  }
  if (!ok || check === undefined) return undefined;
  return { check, ...(required !== undefined ? { required } : {}), ...(onError !== undefined ? { onError } : {}), origin: where.origin };
}

// transport(5) values a mailbox host is reached by: lmtp or smtp, with a next
// hop Postfix's clients understand. Anything else (a typo such as "lmpt:") would
// make Postfix defer every message for that user with "unknown mail transport".
const NODE_RE = /^(?:lmtp:(?:inet:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?|unix:\/\S+|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?|[A-Za-z0-9.-]+(?::\d{1,5})?)|smtp:(?:\[[0-9A-Fa-f:.]+\]|\[[A-Za-z0-9.-]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?)$/;

/** One transport(5) value: `lmtp:inet:HOST:PORT`, `lmtp:unix:/PATH`, `lmtp:[HOST]:PORT` or `smtp:[HOST]:PORT`. */
function parseNode(tokens: readonly Token[], where: Where, report: Report): string | undefined {
  const [hop, extra] = tokens;
  if (hop === undefined || extra !== undefined) {
    report(extra?.line ?? where.line, 'want exactly one next hop after the key (lmtp:inet:HOST:PORT, lmtp:unix:/PATH or smtp:[HOST]:PORT)');
    return undefined;
  }
  const port = /:(\d{1,5})$/.exec(hop.text);
  if (!NODE_RE.test(hop.text) || (port !== null && !hop.text.startsWith('lmtp:unix:') && (Number(port[1]) === 0 || Number(port[1]) > 65535))) {
    report(hop.line, `bad next hop "${hop.text.slice(0, 80)}" (want lmtp:inet:HOST:PORT, lmtp:unix:/PATH, lmtp:[HOST]:PORT or smtp:[HOST]:PORT)`, columnOf(hop, 0));
    return undefined;
  }
  return hop.text;
}
