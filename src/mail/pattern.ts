// Patterns that administrators and mailbox owners write — the tables' header,
// sender and extension conditions, users' policy sender lists — become
// matchers here and nowhere else, so that none of them ever meets a
// backtracking engine. A `*a*a*a*a*a*a*a*a*b` glob or a `(a+)+$` regex on
// V8's RegExp takes seconds to minutes on a few dozen characters, and the
// master matches in its only event loop (LMTP, the queue, the policy service).
//
// - A glob (`*` any run, `?` one character, everything else literal, the
//   whole value, case ignored as a JavaScript /i regex does) is matched by a
//   hand-written matcher: the literal runs between stars are found leftmost
//   in order (what a star-only glob needs, no backtracking), so a match costs
//   at most value length × pattern length character comparisons.
// - A regex (JavaScript syntax, flags i m s u) is translated to RE2 syntax
//   and run by re2js, a pure-JavaScript RE2 (linear time, no WebAssembly,
//   which the workers' lite mode lacks). What RE2 cannot do in linear time —
//   backreferences, lookahead, lookbehind — is refused when the pattern is
//   compiled, with the offset of the offending character; so are the few
//   JavaScript escapes RE2 would read differently (`\z`, `\Q`, `\pL` without u).
//   A few JavaScript meanings are kept by translation: `.` stops at \r,
//   U+2028 and U+2029 as well as \n, `\s` includes Unicode spaces, `\uXXXX`,
//   `\cX`, `[^]`, `[]`, `[\b]`. Differences left: the engine works on code
//   points (as JavaScript does with the u flag), `i` uses Unicode simple case
//   folding, and with `m` only \n ends a line (header values are unfolded).
//
// Exports: Pattern, PatternProblem, Matcher, compilePattern, checkPattern,
// matchPattern, PatternError, REGEX_FLAGS. Compiled matchers are cached
// (bounded, oldest dropped first): tables are read per message and policies
// per request. compilePattern and checkPattern return a problem, never throw;
// matchPattern throws PatternError for a pattern that does not compile — a
// caller holding patterns from storage checks them first (see planDelivery).

import { RE2JS, RE2JSException, RE2JSSyntaxException } from 're2js';

/** A pattern over a string: a glob (case-insensitive, whole value) or a regex (source without slashes, flags). */
export type Pattern =
  | { readonly kind: 'glob'; readonly glob: string }
  | { readonly kind: 'regex'; readonly source: string; readonly flags: string };

/**
 * Why a pattern cannot be used. `offset` counts characters from the start of
 * the glob, or of the regex source as written `SOURCE/FLAGS` (so a bad flag
 * points past the closing slash): add it to where the pattern starts to get a
 * column.
 */
export interface PatternProblem {
  readonly offset: number;
  readonly message: string;
}

export interface Matcher {
  /** Glob: the whole value matches. Regex: it matches somewhere in the value (unless anchored). */
  test(value: string): boolean;
}

/** g and y only make sense for searching on (lastIndex); a condition is a yes/no match. */
export const REGEX_FLAGS = 'imsu';

export class PatternError extends Error {
  constructor(readonly pattern: Pattern, readonly problem: PatternProblem) {
    super(`${describe(pattern)}: ${problem.message} (at character ${problem.offset + 1})`);
  }
}

function describe(p: Pattern): string {
  return p.kind === 'glob' ? `glob ${JSON.stringify(p.glob)}` : `regex /${p.source}/${p.flags}`;
}

// ---- the cache ----

const CACHE_LIMIT = 10_000;
type Compiled = Matcher | PatternProblem;
const globs = new Map<string, Compiled>();
/** flags → source → compiled; nested so a lookup builds no key string. */
const regexes = new Map<string, Map<string, Compiled>>();

function remember(cache: Map<string, Compiled>, key: string, value: Compiled): Compiled {
  // Drop the oldest entry, not all: a site with many users' patterns keeps most of them.
  if (cache.size >= CACHE_LIMIT) cache.delete(cache.keys().next().value as string);
  cache.set(key, value);
  return value;
}

const isProblem = (c: Compiled): c is PatternProblem => typeof (c as PatternProblem).message === 'string';

export function compilePattern(p: Pattern): Matcher | PatternProblem {
  if (p.kind === 'glob') return globs.get(p.glob) ?? remember(globs, p.glob, compileGlob(p.glob));
  let bySource = regexes.get(p.flags);
  if (bySource === undefined) {
    if (regexes.size >= 64) regexes.clear(); // flags are a few letters: only nonsense gets here
    bySource = new Map();
    regexes.set(p.flags, bySource);
  }
  return bySource.get(p.source) ?? remember(bySource, p.source, compileRegex(p.source, p.flags));
}

/** The problem with a pattern, or undefined when it can be used. */
export function checkPattern(p: Pattern): PatternProblem | undefined {
  const c = compilePattern(p);
  return isProblem(c) ? c : undefined;
}

export function matchPattern(p: Pattern, value: string): boolean {
  const c = compilePattern(p);
  if (isProblem(c)) throw new PatternError(p, c);
  return c.test(value);
}

// ---- globs ----

/**
 * Case folding as a JavaScript /i regex without u does it (ECMA-262
 * Canonicalize): the upper case of one UTF-16 unit, unless that is not one
 * unit or would turn a non-ASCII character into an ASCII one. Folding both
 * sides unit by unit keeps positions, so `?` still counts units as before.
 */
const foldTable = new Uint16Array(0x10000);

function foldUnit(c: number): number {
  if (c < 0x80) return c >= 0x61 && c <= 0x7a ? c - 0x20 : c;
  let f = foldTable[c] as number;
  if (f === 0) {
    const ch = String.fromCharCode(c);
    const upper = ch.toUpperCase();
    f = upper.length === 1 && upper.charCodeAt(0) >= 0x80 ? upper.charCodeAt(0) : c;
    foldTable[c] = f;
  }
  return f;
}

// eslint-disable-next-line no-control-regex -- the whole ASCII range, NUL included, is the point
const ASCII_RE = /^[\x00-\x7f]*$/;
let lastValue = '';
let lastFolded = '';

/** The folded value; remembered once, since a policy matches one sender against many globs in a row. */
function fold(s: string): string {
  if (s === lastValue) return lastFolded;
  let out: string;
  if (ASCII_RE.test(s)) {
    out = s.toUpperCase();
  } else {
    const units = new Array<number>(s.length);
    for (let i = 0; i < s.length; i++) units[i] = foldUnit(s.charCodeAt(i));
    out = '';
    for (let i = 0; i < units.length; i += 8192) out += String.fromCharCode(...units.slice(i, i + 8192));
  }
  lastValue = s;
  lastFolded = out;
  return out;
}

const QUESTION = 0x3f;

/** A literal run of a glob; `?` in it stands for any one unit. */
class Segment {
  readonly wild: boolean;
  constructor(readonly text: string) {
    this.wild = text.includes('?');
  }

  at(v: string, pos: number): boolean {
    if (!this.wild) return v.startsWith(this.text, pos);
    const t = this.text;
    for (let j = 0; j < t.length; j++) {
      const c = t.charCodeAt(j);
      if (c !== QUESTION && c !== v.charCodeAt(pos + j)) return false;
    }
    return true;
  }

  /** The leftmost place in [from, to] where the run matches, or -1. */
  find(v: string, from: number, to: number): number {
    if (!this.wild) {
      const i = v.indexOf(this.text, from);
      return i >= 0 && i <= to ? i : -1;
    }
    for (let i = from; i <= to; i++) if (this.at(v, i)) return i;
    return -1;
  }
}

/**
 * GLOB = first * middle… * last. A value matches when it starts with the
 * first run, ends with the last, and holds the middle runs in order between
 * them; taking each middle run at its leftmost place leaves the most room for
 * the rest, so the first choice is never wrong and nothing is retried.
 */
class GlobMatcher implements Matcher {
  private readonly first: Segment;
  private readonly middle: readonly Segment[];
  private readonly last: Segment | undefined;
  private readonly minLength: number;

  constructor(glob: string) {
    const runs = fold(glob).split('*');
    this.first = new Segment(runs[0] as string);
    this.last = runs.length > 1 ? new Segment(runs[runs.length - 1] as string) : undefined;
    this.middle = runs.slice(1, -1).filter((r) => r !== '').map((r) => new Segment(r));
    this.minLength = runs.reduce((n, r) => n + r.length, 0);
  }

  test(value: string): boolean {
    const v = fold(value);
    if (this.last === undefined) return v.length === this.minLength && this.first.at(v, 0);
    if (v.length < this.minLength || !this.first.at(v, 0)) return false;
    const end = v.length - this.last.text.length;
    if (!this.last.at(v, end)) return false;
    let pos = this.first.text.length;
    for (const run of this.middle) {
      const i = run.find(v, pos, end - run.text.length);
      if (i < 0) return false;
      pos = i + run.text.length;
    }
    return true;
  }
}

/** Every string is a glob; compiling one cannot fail. */
function compileGlob(glob: string): Compiled {
  return new GlobMatcher(glob);
}

// ---- regexes ----

const FLAG_BITS: Readonly<Record<string, number>> = { i: RE2JS.CASE_INSENSITIVE, m: RE2JS.MULTILINE, s: RE2JS.DOTALL, u: 0 };

function compileRegex(source: string, flags: string): Compiled {
  for (let i = 0; i < flags.length; i++) {
    const f = flags.charAt(i);
    const offset = source.length + 1 + i;
    if (!REGEX_FLAGS.includes(f)) return { offset, message: `regex flag "${f}" not allowed (use ${[...REGEX_FLAGS].join(', ')})` };
    if (flags.indexOf(f) !== i) return { offset, message: `regex flag "${f}" given twice` };
  }
  const t = translateRegex(source, flags.includes('u'), flags.includes('s'));
  if (!('re2' in t)) return t;
  let re: RE2JS;
  try {
    re = RE2JS.compile(t.re2, [...flags].reduce((bits, f) => bits | (FLAG_BITS[f] ?? 0), 0));
  } catch (e) {
    if (!(e instanceof RE2JSException)) throw e;
    return re2Problem(e, t);
  }
  // RE2 takes some things JavaScript does not (and our translation could be
  // wrong): the pattern must also be one V8 accepts. Compiling is safe; only
  // matching backtracks, and V8 never matches here.
  try {
    new RegExp(source, flags);
  } catch (e) {
    return { offset: 0, message: (e as Error).message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, '') };
  }
  return { test: (value: string) => re.test(value) };
}

/** RE2 names the failing piece of the pattern, not where it is; the first place it occurs is the best guess. */
function re2Problem(e: RE2JSException, t: Translation): PatternProblem {
  if (e instanceof RE2JSSyntaxException) {
    const piece = e.input ?? '';
    const at = piece === '' ? -1 : t.re2.indexOf(piece);
    return { offset: at < 0 ? 0 : (t.origin[at] ?? 0), message: piece === '' ? e.error : `${e.error}: ${piece}` };
  }
  return { offset: 0, message: e.message.replace(/^error parsing regexp: /, '') };
}

interface Translation {
  readonly re2: string;
  /** origin[i] = the source offset that output character i came from. */
  readonly origin: readonly number[];
}

// JavaScript's \s (WhiteSpace and LineTerminator) as code point ranges, and
// its complement; RE2's \s is ASCII only. A test checks these against V8.
const SPACE_RANGES: readonly (readonly [number, number])[] = [
  [0x09, 0x0d], [0x20, 0x20], [0xa0, 0xa0], [0x1680, 0x1680], [0x2000, 0x200a],
  [0x2028, 0x2029], [0x202f, 0x202f], [0x205f, 0x205f], [0x3000, 0x3000], [0xfeff, 0xfeff],
];

function complement(ranges: readonly (readonly [number, number])[]): [number, number][] {
  const out: [number, number][] = [];
  let next = 0;
  for (const [lo, hi] of ranges) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= 0x10ffff) out.push([next, 0x10ffff]);
  return out;
}

const hex = (cp: number): string => `\\x{${cp.toString(16)}}`;
const classBody = (ranges: readonly (readonly [number, number])[]): string =>
  ranges.map(([lo, hi]) => (lo === hi ? hex(lo) : `${hex(lo)}-${hex(hi)}`)).join('');
const SPACE = classBody(SPACE_RANGES);
const NOT_SPACE = classBody(complement(SPACE_RANGES));
/** JavaScript's `.` without s: anything but a line terminator. */
const DOT = '[^\\n\\r\\x{2028}\\x{2029}]';

const isHex = (c: string): boolean => /^[0-9A-Fa-f]$/.test(c);
const isDigit = (c: string): boolean => c >= '0' && c <= '9';
const isAsciiLetter = (c: string): boolean => /^[A-Za-z]$/.test(c);
/** Escapes whose meaning is the same in JavaScript and RE2. */
const SAME_ESCAPES = 'dDwWfnrtv';

/**
 * One pass over a JavaScript regex source: refuses what RE2 cannot do or would
 * read differently, rewrites what it spells differently. Character classes are
 * tracked so `(?=` inside `[...]` is three literal characters, as in JavaScript.
 */
function translateRegex(source: string, unicode: boolean, dotAll: boolean): Translation | PatternProblem {
  let re2 = '';
  const origin: number[] = [];
  const emit = (text: string, from: number): void => {
    re2 += text;
    for (let k = 0; k < text.length; k++) origin.push(from);
  };
  let inClass = false;
  let classStart = 0;
  let classOpen = 0;
  /** Where each group still open began, so an unbalanced one can be pointed at. */
  const open: number[] = [];
  let i = 0;
  while (i < source.length) {
    const c = source.charAt(i);
    if (c === '\\') {
      const r = translateEscape(source, i, { inClass, classStart, unicode });
      if ('message' in r) return r;
      emit(r.text, i);
      i += r.length;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      // A "[" in a class is a literal in JavaScript; RE2 would look for [:alpha:].
      const ch = c === '[' ? '\\[' : String.fromCodePoint(source.codePointAt(i) as number);
      emit(ch, i);
      i += c === '[' ? 1 : ch.length;
      continue;
    }
    switch (c) {
      case '[':
        // In JavaScript "[]" matches nothing and "[^]" anything; in RE2 a "]"
        // right after "[" or "[^" is a literal.
        if (source.startsWith('[]', i)) {
          emit('[^\\x{0}-\\x{10ffff}]', i);
          i += 2;
        } else if (source.startsWith('[^]', i)) {
          emit('[\\x{0}-\\x{10ffff}]', i);
          i += 3;
        } else {
          inClass = true;
          classOpen = i;
          const negated = source.charAt(i + 1) === '^';
          classStart = i + (negated ? 2 : 1);
          emit(negated ? '[^' : '[', i);
          i = classStart;
        }
        continue;
      case '(':
        if (source.charAt(i + 1) === '?') {
          const next = source.charAt(i + 2);
          const lookbehind = next === '<' && (source.charAt(i + 3) === '=' || source.charAt(i + 3) === '!');
          if (next === '=' || next === '!' || lookbehind) {
            const what = lookbehind ? 'lookbehind' : 'lookahead';
            return { offset: i, message: `${what} ${source.slice(i, i + (lookbehind ? 4 : 3))}…) is not supported (patterns run on a linear-time engine, which has no lookaround)` };
          }
          if (next !== ':' && next !== '<') {
            return { offset: i, message: `"(?${next}" is not JavaScript regex syntax (flags go after the closing slash)` };
          }
        }
        open.push(i);
        emit('(', i);
        i++;
        continue;
      case ')':
        if (open.pop() === undefined) return { offset: i, message: 'unmatched ")"' };
        emit(')', i);
        i++;
        continue;
      case '.':
        emit(dotAll ? '.' : DOT, i);
        i++;
        continue;
      default: {
        // Whole code points, so an astral character stays one piece.
        const cp = source.codePointAt(i) as number;
        const ch = String.fromCodePoint(cp);
        emit(ch, i);
        i += ch.length;
      }
    }
  }
  if (inClass) return { offset: classOpen, message: 'missing closing "]"' };
  const unclosed = open.pop();
  if (unclosed !== undefined) return { offset: unclosed, message: 'missing closing ")"' };
  return { re2, origin };
}

interface EscapeContext {
  readonly inClass: boolean;
  /** Offset of the first character inside the current class. */
  readonly classStart: number;
  readonly unicode: boolean;
}

/** The escape at source[i] === "\\": its RE2 spelling and how many source characters it takes. */
function translateEscape(source: string, i: number, x: EscapeContext): { text: string; length: number } | PatternProblem {
  const n = source.charAt(i + 1);
  if (n === '') return { offset: i, message: '"\\" at the end of the pattern' };
  const unsupported = (message: string): PatternProblem => ({ offset: i, message });
  if (n >= '1' && n <= '9') {
    return unsupported(x.inClass
      ? `octal escape \\${n} is not supported (write \\x0${n} or the character)`
      : `backreference \\${n} is not supported (patterns run on a linear-time engine, which cannot match what a group captured)`);
  }
  if (n === '0') {
    if (isDigit(source.charAt(i + 2))) return unsupported(`octal escape \\0${source.charAt(i + 2)} is not supported (write \\xHH)`);
    return { text: '\\x{0}', length: 2 };
  }
  if (SAME_ESCAPES.includes(n)) return { text: `\\${n}`, length: 2 };
  switch (n) {
    case 'k':
      return unsupported('named backreference \\k is not supported (patterns run on a linear-time engine, which cannot match what a group captured)');
    case 'b':
      return { text: x.inClass ? '\\x{8}' : '\\b', length: 2 };
    case 'B':
      return x.inClass ? unsupported('\\B is not an escape inside [...]') : { text: '\\B', length: 2 };
    case 's':
    case 'S': {
      if (!x.inClass) return { text: n === 's' ? `[${SPACE}]` : `[^${SPACE}]`, length: 2 };
      // Expanded into ranges, \s next to a "-" would make a range of its own.
      const before = i - 1 > x.classStart && source.charAt(i - 1) === '-' && source.charAt(i - 2) !== '\\';
      const after = source.charAt(i + 2) === '-' && source.charAt(i + 3) !== ']';
      if (before || after) return unsupported(`a range cannot start or end at \\${n}; put "-" first or last in the class`);
      return { text: n === 's' ? SPACE : NOT_SPACE, length: 2 };
    }
    case 'c': {
      const letter = source.charAt(i + 2);
      if (!isAsciiLetter(letter)) return unsupported('\\c must be followed by a letter A-Z');
      return { text: hex(letter.charCodeAt(0) % 32), length: 3 };
    }
    case 'x':
      if (!isHex(source.charAt(i + 2)) || !isHex(source.charAt(i + 3))) return unsupported('\\x must be followed by two hex digits');
      return { text: source.slice(i, i + 4), length: 4 };
    case 'u':
      return translateUnicodeEscape(source, i, x.unicode);
    case 'p':
    case 'P': {
      const end = source.indexOf('}', i);
      if (!x.unicode || source.charAt(i + 2) !== '{' || end < 0) return unsupported(`\\${n}{…} needs the u flag (and braces)`);
      return { text: source.slice(i, end + 1), length: end + 1 - i };
    }
  }
  if (isAsciiLetter(n) || isDigit(n)) return unsupported(`\\${n} is not an escape (write ${n} alone for the letter)`);
  if (n.charCodeAt(0) < 0x80) return { text: `\\${n}`, length: 2 }; // escaped punctuation, space or control: the character itself
  // \é: an identity escape of a non-ASCII character is that character; RE2 escapes only ASCII.
  const ch = String.fromCodePoint(source.codePointAt(i + 1) as number);
  return { text: ch, length: 1 + ch.length };
}

function translateUnicodeEscape(source: string, i: number, unicode: boolean): { text: string; length: number } | PatternProblem {
  if (unicode && source.charAt(i + 2) === '{') {
    const end = source.indexOf('}', i);
    const digits = end < 0 ? '' : source.slice(i + 3, end);
    const cp = /^[0-9A-Fa-f]{1,6}$/.test(digits) ? parseInt(digits, 16) : NaN;
    if (!(cp <= 0x10ffff)) return { offset: i, message: '\\u{…} must hold a code point, at most 10FFFF' };
    return { text: hex(cp), length: end + 1 - i };
  }
  const four = (at: number): number => {
    const d = source.slice(at, at + 4);
    return /^[0-9A-Fa-f]{4}$/.test(d) ? parseInt(d, 16) : NaN;
  };
  const cp = four(i + 2);
  if (Number.isNaN(cp)) return { offset: i, message: `\\u must be followed by four hex digits${unicode ? ' or {HEX}' : ''}` };
  if (cp >= 0xd800 && cp <= 0xdbff && source.startsWith('\\u', i + 6)) {
    const low = four(i + 8);
    if (low >= 0xdc00 && low <= 0xdfff) return { text: hex(0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00)), length: 12 };
  }
  if (cp >= 0xd800 && cp <= 0xdfff) return { offset: i, message: `a lone surrogate \\u${source.slice(i + 2, i + 6)} cannot be matched (write the whole character)` };
  return { text: hex(cp), length: 6 };
}
