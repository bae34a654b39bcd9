// One line of the rules table after its key: DESTINATION, then conditions and
// options in any order (grammar and examples in db/README.md). Pure and
// internal to src/db: every problem goes to `report` with its line (and
// column, where one character is to blame), and the rule is returned only
// when there was none, so a half-understood rule can never be compiled.
// Globs and regexes are checked by the one pattern module that will match
// them (src/mail/pattern.ts): what it refuses is refused here, at its column.

import type { Comparison, Condition, Destination, Pattern, Rule } from '../classify/rules.js';
import { checkPattern } from '../mail/pattern.js';
import {
  byteLength, checkLength, columnOf, LIMITS, parseAccount, parseSize, subToken,
  type AccountContext, type Report, type Token, type Where,
} from './source-lex.js';

/** The names the planner expands in paths, argv words and folders (src/classify/plan.ts). */
const VARIABLES = ['user', 'local', 'extension', 'domain', 'address', 'home'];

const DESTINATION_KINDS = 'maildir, mbox, pipe, forward, list, discard or reject';
const DESTINATION_RE = /^(?:(?:maildir|mbox|pipe|forward|list|reject):|discard$)/;
const MATCH_RE = /^(!?)(sender|extension|header:([A-Za-z0-9][A-Za-z0-9_.-]*))([=~])(.*)$/s;
const COMPARE_RE = /^(!?)(size|score)(<=|>=|<|>|=)(.*)$/s;
const OPTION_RE = /^(uid|gid|maxsize|folder|concurrency)=(.*)$/s;
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
  const withFolder = folder && destination ? addFolder(destination, folder, fail) : destination;
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
