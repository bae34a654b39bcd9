// A mailbox owner's own rule (`mailproc rules add ADDRESS 'RULE'`): one line
// of the rules table's language after its key (db/README.md), parsed by the
// same parser as the tables (source-rule.ts), plus what users need and
// minus what only the administrator may say:
//   + `folder:NAME`         a folder of the address's default Maildir;
//   + `maildir:~/PATH`, `mbox:~/PATH`   relative to the owner's home;
//   − uid= gid= concurrency= maxsize= locked    (admin only);
//   − list:                 (lists are the administrator's);
//   − probe                 (mailmond's probe addresses are the administrator's);
//   − pipe:                 unless rules.user_pipes allows it (or that program);
//   − vacation text_file=   (the daemon would read the file with its own
//                           privileges, root's: a user writes text="…");
//   − vacation from=        other than the address's own (policy.address):
//                           a reply must not claim to come from someone else;
//   − a maildir/mbox path outside the roots the owner may write to (their
//     home, the address's own mail directory, rules.user_roots).
// Errors name the rule and the column: `rule 1, column 14: unknown condition
// or option "subjct"`. The paths are checked with every ${variable} but
// ${home} standing for one path segment: the planner substitutes values that
// hold no "/" and never start with ".", so no substitution can climb out.
// This is policy, not the privilege boundary: a user's copies are always
// written by a worker running as the owner (no uid= for users), so a path the
// owner could not write is refused by the kernel anyway.
//
// Exports: parseUserRule, checkUserRuleSet, UserRulePolicy, MAX_USER_RULE_CHARS.
// Pure; returns the rule or an error text, never throws.
import { isAbsolute, normalize } from 'node:path';
import type { Rule } from '../classify/rules.js';
import { splitEntries, type Token } from './source-lex.js';
import { parseRule } from './source-rule.js';

export const MAX_USER_RULE_CHARS = 2000;

export interface UserRulePolicy {
  /** The owner's home directory (absolute): where `~/` points. */
  readonly home: string;
  /** Absolute directories a maildir/mbox destination may be in (or be). */
  readonly roots: readonly string[];
  /** The address's default Maildir (absolute, a template), for folder:NAME; undefined when the default is not a Maildir. */
  readonly defaultMaildir?: string;
  /** rules.user_pipes: false, true, or the programs (argv[0]) allowed. */
  readonly pipes: boolean | readonly string[];
  /**
   * The address the rules are for (user@domain, any case): the one a
   * vacation's from= may name. Undefined: from= is refused.
   */
  readonly address?: string;
}

const ADMIN_ONLY = /^(uid|gid|concurrency|maxsize)=|^locked$/;
const ADMIN_ONLY_REASON: Record<string, string> = {
  uid: 'your rules always deliver as you',
  gid: 'your rules always deliver as you',
  concurrency: 'delivery slots are set by the administrator',
  maxsize: 'size limits are set by the administrator (a size condition does what you want: size>10M)',
  locked: 'locked rules are the administrator\'s',
};

/** `path` (a template) with ${home} filled in and every other variable as one plain segment. */
function checkedPath(path: string, home: string): string {
  return normalize(path.replaceAll('${home}', home).replace(/\$\{\w+\}/g, 'x'));
}

const within = (path: string, root: string): boolean => {
  const r = root.endsWith('/') && root.length > 1 ? root.slice(0, -1) : root;
  return path === r || path.startsWith(`${r}/`);
};

/**
 * The owner's rule number `n` (1-based, for messages), or what is wrong with
 * it. The rule's origin is "yours:N".
 */
export function parseUserRule(text: string, n: number, policy: UserRulePolicy): Rule | string {
  const at = (column: number | undefined, message: string): string => `rule ${n}${column !== undefined ? `, column ${column}` : ''}: ${message}`;
  if (text.length > MAX_USER_RULE_CHARS) return at(undefined, `${text.length} characters long, more than the ${MAX_USER_RULE_CHARS} a rule may have`);
  const control = /[\p{Cc}]/u.exec(text.replaceAll('\t', ' '));
  if (control) return at(control.index + 1, 'a rule is one line of text (no line breaks or control characters)');
  const lead = text.length - text.trimStart().length;
  const problems: { message: string; column?: number }[] = [];
  const entries = splitEntries(text.trimStart(), (_line, message, column) => {
    problems.push({ message, ...(column !== undefined ? { column: column + lead } : {}) });
  });
  const first = problems[0];
  if (first !== undefined) return at(first.column, first.message);
  const tokens = (entries[0]?.tokens ?? []).map((t) => ({ ...t, column: t.column + lead }));
  const [head, ...rest] = tokens;
  if (head === undefined) return at(undefined, 'empty rule (a rule starts with its destination, e.g. folder:NAME)');

  for (const t of rest) {
    const m = ADMIN_ONLY.exec(t.text);
    if (m) {
      const name = m[1] ?? 'locked';
      return at(t.column, `${name === 'locked' ? 'locked' : `${name}=`} is not allowed in your rules: ${ADMIN_ONLY_REASON[name] ?? 'admin only'}`);
    }
    if (t.text.startsWith('text_file=')) {
      return at(t.column, 'text_file= is not allowed in your rules: the server would read that file with its own privileges, not yours; write the reply as text="…" (a line break is \\n)');
    }
    const from = /^from=(.*)$/s.exec(t.text)?.[1];
    if (from !== undefined && (policy.address === undefined || from.toLowerCase() !== policy.address.toLowerCase())) {
      return at(t.column, `from= may only be this address itself${policy.address !== undefined ? ` (${policy.address})` : ''}: a reply must not claim to come from someone else`);
    }
  }

  // folder:NAME and ~/ become what the table parser knows.
  let folder: string | undefined;
  let first0: Token = head;
  if (head.text.startsWith('folder:')) {
    folder = head.text.slice('folder:'.length);
    if (policy.defaultMaildir === undefined) return at(head.column, 'folder: needs a Maildir, and this address\'s default destination is not one: use maildir:~/PATH');
    if (rest.some((t) => t.text.startsWith('folder='))) return at(head.column, 'folder:NAME already names the folder: drop folder=');
    first0 = { ...head, text: 'discard' };
  } else {
    const tilde = /^(maildir|mbox):~(?=\/|$)/.exec(head.text);
    if (tilde) first0 = { ...head, text: `${tilde[1]}:\${home}${head.text.slice(tilde[0].length)}` };
  }
  const parsed: { message: string; column?: number }[] = [];
  const rule = parseRule([first0, ...rest], { line: 1, origin: `yours:${n}` }, { key: '', allowRoot: new Set() }, (_line, message, column) => {
    parsed.push({ message, ...(column !== undefined ? { column } : {}) });
  });
  const problem = parsed[0];
  if (problem !== undefined || rule === undefined) return at(problem?.column, problem?.message ?? 'cannot be read');

  let result: Rule = rule;
  if (folder !== undefined) {
    if (folder === '' || folder.includes('/') || folder.startsWith('.') || folder.length > 254) {
      return at(head.column + 'folder:'.length, `bad folder "${folder}" (want a name without "/" that does not start with ".")`);
    }
    if (/\$\{/.test(folder)) return at(head.column + 'folder:'.length, 'a folder name cannot use variables here: write folder=${extension} after a maildir: destination');
    result = { ...rule, destination: { kind: 'maildir', path: policy.defaultMaildir as string, folder } };
  }

  const d = result.destination;
  switch (d.kind) {
    case 'list':
      return at(head.column, 'list: destinations are set by the administrator');
    case 'probe':
      return at(head.column, 'probe addresses are set by the administrator (mailmond)');
    case 'pipe': {
      const program = d.argv[0] ?? '';
      if (policy.pipes === false) return at(head.column, 'pipe: is not allowed for your rules on this server (rules.user_pipes)');
      if (policy.pipes !== true && !policy.pipes.includes(program)) {
        return at(head.column, `pipe: may run only ${policy.pipes.length > 0 ? policy.pipes.join(', ') : 'nothing'} here, not "${program}" (rules.user_pipes)`);
      }
      if (program.includes('${')) return at(head.column, 'the program of a pipe: cannot use variables');
      break;
    }
    case 'maildir':
    case 'mbox': {
      if (folder !== undefined) break;
      const raw = d.path.replaceAll('${home}', policy.home);
      if (!isAbsolute(raw)) return at(head.column, `${d.kind} path "${d.path}" must start with ~/ (your home) or /`);
      const path = checkedPath(d.path, policy.home);
      if (!policy.roots.some((root) => within(path, root))) {
        return at(head.column, `${d.kind}:${path} is outside what your rules may write to (${policy.roots.join(', ')})`);
      }
      break;
    }
    default:
      break;
  }
  return result;
}

/** What is wrong with a whole list of the owner's rules (counts), or undefined. */
export function checkUserRuleSet(rules: readonly Rule[], limits: { maxRules: number; maxForwards: number }): string | undefined {
  if (rules.length > limits.maxRules) return `at most ${limits.maxRules} rules per address (rules.user_max_rules)`;
  const forwards = rules.filter((r) => r.destination.kind === 'forward').length;
  if (forwards > limits.maxForwards) return `at most ${limits.maxForwards} forward: rules per address (rules.user_max_forwards)`;
  return undefined;
}
