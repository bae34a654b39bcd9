// One line of the rules table after its key: DESTINATION, then conditions and
// options in any order (grammar and examples in db/README.md). Pure and
// internal to src/db: every problem goes to `report` with its line (and
// column, where one character is to blame), and the rule is returned only
// when there was none, so a half-understood rule can never be compiled.
// Globs and regexes are checked by the one pattern module that will match
// them (src/mail/pattern.ts): what it refuses is refused here, at its column.

import { VACATION_DAYS, type Comparison, type Condition, type Destination, type Pattern, type Rule } from '../classify/rules.js';
import { unescapeVacationText } from '../classify/rule-text.js';
import { checkPattern } from '../mail/pattern.js';
import {
  byteLength, checkLength, columnOf, LIMITS, parseAccount, parseSize, subToken,
  type AccountContext, type Report, type Token, type Where,
} from './source-lex.js';

/** The names the planner expands in paths, argv words and folders (src/classify/plan.ts). */
const VARIABLES = ['user', 'local', 'extension', 'domain', 'address', 'home'];

const DESTINATION_KINDS = 'maildir, mbox, pipe, forward, list, vacation, discard, probe or reject';
const DESTINATION_RE = /^(?:(?:maildir|mbox|pipe|forward|list|reject|vacation):|(?:discard|vacation|probe)$)/;
const MATCH_RE = /^(!?)(sender|extension|header:([A-Za-z0-9][A-Za-z0-9_.-]*))([=~])(.*)$/s;
const COMPARE_RE = /^(!?)(size|score)(<=|>=|<|>|=)(.*)$/s;
const OPTION_RE = /^(uid|gid|maxsize|folder|concurrency|text|text_file|subject|days|from|until|addresses)=(.*)$/s;
/** The options that belong to a vacation destination (db/README.md, "Vacation"). */
const VACATION_OPTIONS = ['text', 'text_file', 'subject', 'days', 'from', 'until', 'addresses'] as const;
const UNTIL_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
/** Control characters other than tab. */
const CONTROL_RE = /[^\P{Cc}\t]/u;
const REGEX_RE = /^\/(.+)\/([a-z]*)$/s;
/** A rule's words other than patterns and paths (e.g. a score): anything longer is a mistake. */
const MAX_WORD_BYTES = 4096;
const SCORE_RE = /^-?\d+(?:\.\d+)?$/;
const REJECT_CODE_RE = /^[45]\.\d{1,3}\.\d{1,3}$/;
const FORWARD_RE = /^[^@\s]+@[^@\s]+$/;
export function parseRule(tokens: readonly Token[], where: Where, accounts: AccountContext, report: Report): Rule | undefined {
  let ok = true;
  const fail: Report = (line, message, column) => {
    ok = false;
    report(line, message, column);
  };
  const [first, ...rest] = tokens;
  if (first === undefined) {
    fail(where.line, `rule has no destination (want ${DESTINATION_KINDS})`);
    return undefined;
  }
  const destination = parseDestination(first, fail);
  const conditions: Condition[] = [];
  const options = new Map<string, Token>();
  let stop = false;
  let locked = false;
  let dedupe = false;
  for (const t of rest) {
    if (byteLength(t.text) > MAX_WORD_BYTES && !MATCH_RE.test(t.text)) {
      fail(t.line, `word of ${byteLength(t.text)} bytes, more than the ${MAX_WORD_BYTES} a rule's word may have`, t.column);
      continue;
    }
    if (t.text === 'stop') {
      if (stop) fail(t.line, 'option stop given twice');
      stop = true;
      continue;
    }
    if (t.text === 'locked') {
      if (locked) fail(t.line, 'option locked given twice');
      locked = true;
      continue;
    }
    if (t.text === 'dedupe') {
      if (dedupe) fail(t.line, 'option dedupe given twice');
      dedupe = true;
      continue;
    }
    const option = OPTION_RE.exec(t.text);
    if (option) {
      const [, name = ''] = option;
      if (options.has(name)) fail(t.line, `option ${name} given twice`);
      options.set(name, subToken(t, name.length + 1));
      continue;
    }
    const condition = parseCondition(t, fail);
    if (condition) conditions.push(condition);
  }

  const uid = options.get('uid');
  const gid = options.get('gid');
  const maxsize = options.get('maxsize');
  const folder = options.get('folder');
  const concurrency = options.get('concurrency');
  const slots = concurrency ? Number(concurrency.text) : undefined;
  if (concurrency && !(Number.isInteger(slots) && (slots as number) >= 1 && (slots as number) <= 1000)) {
    fail(concurrency.line, `concurrency must be a whole number from 1 to 1000, not "${concurrency.text}"`);
  }
  const uidName = uid ? parseAccount('uid', uid, accounts, fail) : undefined;
  const gidName = gid ? parseAccount('gid', gid, accounts, fail) : undefined;
  const maxBytes = maxsize ? parseSize(maxsize.text, maxsize.line, fail) : undefined;
  if (maxsize && maxBytes === 0) fail(maxsize.line, 'maxsize must be more than 0');
  let withFolder = folder && destination ? addFolder(destination, folder, fail) : destination;
  if (withFolder?.kind === 'vacation') {
    withFolder = parseVacation(first, options, fail);
  } else if (withFolder !== undefined) {
    for (const [name, t] of options) {
      if ((VACATION_OPTIONS as readonly string[]).includes(name)) fail(t.line, `${name}= applies only to a vacation destination`, columnOf(t, -name.length - 1));
    }
  }
  if (!ok || withFolder === undefined) return undefined;
  return {
    destination: withFolder,
    conditions,
    ...(uidName !== undefined ? { uid: uidName } : {}),
    ...(gidName !== undefined ? { gid: gidName } : {}),
    ...(maxBytes !== undefined ? { maxsize: maxBytes } : {}),
    ...(slots !== undefined ? { concurrency: slots } : {}),
    stop,
    ...(locked ? { locked } : {}),
    ...(dedupe ? { dedupe } : {}),
    origin: where.origin,
  };
}

function addFolder(destination: Destination, folder: Token, fail: Report): Destination | undefined {
  if (destination.kind !== 'maildir') {
    fail(folder.line, 'folder= applies only to a maildir destination');
    return undefined;
  }
  if (folder.text === '' || folder.text.includes('/')) {
    fail(folder.line, `bad folder "${folder.text}" (want a name without "/")`);
    return undefined;
  }
  if (!checkLength('folder name', folder.text, LIMITS.folderBytes, { line: folder.line, column: columnOf(folder, 0) }, fail)) return undefined;
  return checkVariables(folder.text, folder.line, fail) ? { ...destination, folder: folder.text } : undefined;
}

function parseDestination(t: Token, fail: Report): Destination | undefined {
  const colon = t.text.indexOf(':');
  const kind = colon < 0 ? t.text : t.text.slice(0, colon);
  const arg = colon < 0 ? '' : t.text.slice(colon + 1);
  const need = (what: string, usage: string): boolean => {
    if (arg === '') fail(t.line, `${kind} needs ${what}: ${usage}`);
    return arg !== '';
  };
  const fits = (what: string, limit: number): boolean => checkLength(what, arg, limit, { line: t.line, column: columnOf(t, colon + 1) }, fail);
  switch (kind) {
    case 'maildir':
      return need('a path', `${kind}:PATH`) && fits('maildir path', LIMITS.pathBytes) && checkVariables(arg, t.line, fail) ? { kind, path: arg } : undefined;
    case 'mbox':
      if (!need('a path', `${kind}:PATH`) || !fits('mbox path', LIMITS.pathBytes) || !checkVariables(arg, t.line, fail)) return undefined;
      if (arg.endsWith('/')) {
        fail(t.line, `mbox path "${arg}" ends in "/": an mbox is a file`);
        return undefined;
      }
      return { kind, path: arg };
    case 'pipe': {
      if (!need('a command', 'pipe:"/path/to/program ARG…"') || !fits('pipe command', LIMITS.commandBytes)) return undefined;
      const argv = splitArgv(arg, t.line, fail);
      return argv && argv.every((w) => checkVariables(w, t.line, fail)) ? { kind, argv } : undefined;
    }
    case 'forward':
      if (!need('an address', 'forward:USER@DOMAIN') || !fits('forward address', LIMITS.addressBytes)) return undefined;
      if (arg.includes('${')) {
        // The planner passes forward addresses through unexpanded.
        fail(t.line, `forward address "${arg}" cannot use variables`);
        return undefined;
      }
      if (!FORWARD_RE.test(arg)) {
        fail(t.line, `bad forward address "${arg}" (want user@domain)`);
        return undefined;
      }
      return { kind, address: arg };
    case 'list':
      return need('a list address', 'list:LIST@DOMAIN') && fits('list address', LIMITS.addressBytes) ? { kind, name: arg.toLowerCase() } : undefined;
    case 'discard':
      if (colon >= 0) {
        fail(t.line, 'discard takes no argument');
        return undefined;
      }
      return { kind };
    case 'probe':
      if (colon >= 0) {
        fail(t.line, 'probe takes no argument (the key is probe.key in the config file)');
        return undefined;
      }
      return { kind };
    case 'vacation':
      if (colon >= 0) {
        fail(t.line, 'vacation takes no argument: its reply follows as options, vacation text="…" [subject="…"] [days=N]', columnOf(t, colon));
        return undefined;
      }
      // Filled in from the rule's options by parseVacation.
      return { kind, days: VACATION_DAYS.default };
    case 'reject': {
      if (!need('a code and text', 'reject:"5.7.1 TEXT"')) return undefined;
      const space = arg.search(/\s/);
      const code = space < 0 ? arg : arg.slice(0, space);
      if (!REJECT_CODE_RE.test(code)) {
        fail(t.line, `reject code "${code}" must be an enhanced status code 4.x.x or 5.x.x (quote it with the text: reject:"5.7.1 text")`);
        return undefined;
      }
      const text = space < 0 ? '' : arg.slice(space).trim();
      if (!checkLength('reject text', text, LIMITS.replyTextBytes, { line: t.line, column: columnOf(t, colon + 1) }, fail)) return undefined;
      return { kind, code, text };
    }
    default:
      fail(t.line, `unknown destination kind "${kind}" (a rule starts with its destination: ${DESTINATION_KINDS})`);
      return undefined;
  }
}

/**
 * The vacation destination from the rule's options (the destination word
 * itself carries nothing): exactly one of text= and text_file=, and the
 * optional subject=, days=, from=, until=, addresses=.
 */
function parseVacation(head: Token, options: ReadonlyMap<string, Token>, fail: Report): Destination | undefined {
  let ok = true;
  const bad = (t: Token, message: string, at = 0): void => {
    ok = false;
    fail(t.line, message, columnOf(t, at));
  };
  const text = options.get('text');
  const textFile = options.get('text_file');
  if (text && textFile) bad(textFile, 'give text= or text_file=, not both', -'text_file='.length);
  if (!text && !textFile) {
    fail(head.line, 'vacation needs its reply: text="…" (a line break is written \\n) or text_file=PATH', head.column);
    return undefined;
  }
  let body: string | undefined;
  if (text) {
    // The source line holds no line break, so the word as read has none: a control character here is one written.
    body = unescapeVacationText(text.text);
    const control = CONTROL_RE.exec(text.text);
    if (body.trim() === '') bad(text, 'text= is empty: write the reply, e.g. text="I am away until Monday."', -'text='.length);
    else if (control) bad(text, `control character U+${control[0].charCodeAt(0).toString(16).padStart(4, '0').toUpperCase()} in text= (a line break is written \\n)`, control.index);
  }
  if (textFile) {
    if (textFile.text === '') bad(textFile, 'text_file= needs a path', -'text_file='.length);
    else if (checkLength('text_file path', textFile.text, LIMITS.pathBytes, { line: textFile.line, column: columnOf(textFile, 0) }, fail)) {
      if (!checkVariables(textFile.text, textFile.line, fail)) ok = false;
    } else {
      ok = false;
    }
  }
  const subject = options.get('subject');
  if (subject) {
    const control = CONTROL_RE.exec(subject.text);
    if (subject.text.trim() === '') bad(subject, 'subject= is empty (leave it out for "Auto: " and the original subject)', -'subject='.length);
    else if (control) bad(subject, 'subject= holds a control character', control.index);
  }
  const daysToken = options.get('days');
  let days: number = VACATION_DAYS.default;
  if (daysToken) {
    days = /^\d{1,6}$/.test(daysToken.text) ? Number(daysToken.text) : NaN;
    if (!(days >= VACATION_DAYS.min && days <= VACATION_DAYS.max)) {
      bad(daysToken, `days must be a whole number from ${VACATION_DAYS.min} to ${VACATION_DAYS.max}, not "${daysToken.text}"`);
    }
  }
  const from = options.get('from');
  if (from) {
    if (!checkLength('from address', from.text, LIMITS.addressBytes, { line: from.line, column: columnOf(from, 0) }, fail)) ok = false;
    else if (from.text.includes('${')) bad(from, `from address "${from.text}" cannot use variables (without from= the reply comes from the recipient)`);
    else if (!FORWARD_RE.test(from.text) || CONTROL_RE.test(from.text)) bad(from, `bad from address "${from.text}" (want user@domain)`);
  }
  const until = options.get('until');
  if (until && !isCalendarDate(until.text)) bad(until, `bad until "${until.text}" (want the last day of replies as YYYY-MM-DD, e.g. 2026-08-31)`);
  const addressesToken = options.get('addresses');
  const addresses: string[] = [];
  if (addressesToken) {
    let at = 0;
    for (const item of addressesToken.text.split(',')) {
      const address = item.toLowerCase();
      if (item === '') bad(addressesToken, 'empty address in addresses= (two commas in a row, or a comma at an end)', at);
      else if (!FORWARD_RE.test(item) || CONTROL_RE.test(item) || byteLength(item) > LIMITS.addressBytes) bad(addressesToken, `bad address "${item}" in addresses= (want user@domain,user@domain)`, at);
      else if (!addresses.includes(address)) addresses.push(address);
      at += item.length + 1;
    }
  }
  if (!ok) return undefined;
  return {
    kind: 'vacation',
    ...(body !== undefined ? { text: body } : {}),
    ...(textFile ? { textFile: textFile.text } : {}),
    ...(subject ? { subject: subject.text } : {}),
    days,
    ...(from ? { from: from.text } : {}),
    ...(until ? { until: until.text } : {}),
    ...(addresses.length > 0 ? { addresses } : {}),
  };
}

/** YYYY-MM-DD naming a real day. */
function isCalendarDate(text: string): boolean {
  const m = UNTIL_RE.exec(text);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d && y >= 1970;
}

function parseCondition(t: Token, fail: Report): Condition | undefined {
  if (t.text === 'spam' || t.text === '!spam') return { kind: 'spam', is: t.text === 'spam' };
  const match = MATCH_RE.exec(t.text);
  if (match) {
    const [, bang, subject = '', name, op, text = ''] = match;
    if (name !== undefined && !checkLength('header name', name, LIMITS.headerNameBytes, { line: t.line, column: columnOf(t, t.text.indexOf(':') + 1) }, fail)) return undefined;
    const pattern = parsePattern(op === '~' ? 'regex' : 'glob', subToken(t, t.text.length - text.length), t, fail);
    if (pattern === undefined) return undefined;
    const negate = bang === '!';
    if (name !== undefined) return { kind: 'header', name, pattern, negate };
    return { kind: subject === 'sender' ? 'sender' : 'extension', pattern, negate };
  }
  const compare = COMPARE_RE.exec(t.text);
  if (compare) {
    const [, bang, subject, op, text = ''] = compare;
    if (bang === '!') {
      fail(t.line, `"${t.text}" cannot be negated: use the opposite comparison`);
      return undefined;
    }
    if (subject === 'size') {
      const bytes = parseSize(text, t.line, fail);
      return bytes === undefined ? undefined : { kind: 'size', op: op as Comparison, bytes };
    }
    if (!SCORE_RE.test(text)) {
      fail(t.line, `bad score "${text}" (want a number, e.g. 5 or -0.5)`);
      return undefined;
    }
    return { kind: 'score', op: op as Comparison, value: Number(text) };
  }
  if (DESTINATION_RE.test(t.text)) {
    fail(t.line, `second destination "${t.text}": a rule has one destination, so give each its own line`);
    return undefined;
  }
  const hint = t.text.replace(/^!/, '').startsWith('header:')
    ? ' (want header:NAME=GLOB or header:NAME~/REGEX/FLAGS)'
    : '';
  fail(t.line, `unknown condition or option "${t.text}"${hint}`, t.column);
  return undefined;
}

/** `p` is the pattern part of the condition word `t` (after = or ~). */
function parsePattern(kind: Pattern['kind'], p: Token, t: Token, fail: Report): Pattern | undefined {
  if (!checkLength('pattern', p.text, LIMITS.patternBytes, { line: t.line, column: columnOf(p, 0) }, fail)) return undefined;
  let pattern: Pattern;
  if (kind === 'glob') {
    pattern = { kind, glob: p.text };
  } else {
    const m = REGEX_RE.exec(p.text);
    if (!m) {
      fail(t.line, `bad regex "${p.text}" in "${t.text}" (want /REGEX/FLAGS)`, columnOf(p, 0));
      return undefined;
    }
    const [, source = '', flags = ''] = m;
    pattern = { kind, source, flags };
  }
  const problem = checkPattern(pattern);
  if (problem !== undefined) {
    // The problem's offset counts from the first character after the opening slash.
    const at = kind === 'regex' ? 1 + problem.offset : problem.offset;
    fail(t.line, `bad ${kind} in "${t.text}": ${problem.message}`, columnOf(p, at));
    return undefined;
  }
  return pattern;
}

/** A command's words as pipe: destinations split them (a list's pipe:COMMAND manager too); a string is what is wrong. */
export function splitCommand(text: string): string[] | string {
  let problem = 'bad command';
  const argv = splitArgv(text, 0, (_line, message) => { problem = message; });
  return argv ?? problem;
}

/** Words at white space; single quotes group a word that holds spaces. No shell is involved. */
function splitArgv(text: string, line: number, fail: Report): string[] | undefined {
  const argv: string[] = [];
  for (const m of text.matchAll(/'([^']*)'|(')|([^\s']+)|(\s+)/g)) {
    if (m[2] !== undefined) {
      fail(line, `unterminated single quote in pipe command "${text}"`);
      return undefined;
    }
    if (m[4] !== undefined) continue;
    // Adjacent pieces with no space between them (a'b c'd) form one word.
    const piece = m[1] ?? m[3] ?? '';
    const joined = m.index > 0 && !/\s/.test(text.charAt(m.index - 1)) && argv.length > 0;
    if (joined) argv[argv.length - 1] += piece;
    else argv.push(piece);
  }
  if (argv.length === 0 || argv[0] === '') {
    fail(line, 'pipe needs a command: pipe:"/path/to/program ARG…"');
    return undefined;
  }
  return argv;
}

/** Rejects ${name} templates the planner would not know, so the mistake shows at compile time. */
function checkVariables(text: string, line: number, fail: Report): boolean {
  let ok = true;
  for (let at = text.indexOf('${'); at >= 0; at = text.indexOf('${', at + 2)) {
    const end = text.indexOf('}', at);
    if (end < 0) {
      fail(line, `unterminated "\${" in "${text}"`);
      return false;
    }
    const name = text.slice(at + 2, end);
    if (!VARIABLES.includes(name)) {
      fail(line, `unknown variable \${${name}} in "${text}" (known: ${VARIABLES.join(', ')})`);
      ok = false;
    }
  }
  return ok;
}
