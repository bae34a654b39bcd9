// `mailproc rules list|add|remove|move|clear|test|log ADDRESS …`: a mailbox
// owner's own rules for an address of theirs — the layer between the
// administrator's locked rules (evaluated first) and the administrator's
// other rules (evaluated after). See db/README.md for the rule language and
// the precedence, README.md ("Your own rules") for the walk-through.
//
// Who: an ordinary user talks over their own socket,
// <run>/users/<uid>/control.sock (or --socket PATH, $MAILPROC_SOCKET): the
// daemon knows who asks from the socket, and answers only for that user's
// addresses. Root talks over the administrator's socket, <run>/control.sock,
// and may act on any address (the same rules.* requests).
//
// Exports: runRules (the command), RULES_OPTIONS (for the dispatcher's first
// word), and the pure text formatters formatRuleList, formatTestReport,
// formatDecisionLog with the reply types they read — tested with golden
// files (test/cli/rules-format.test.ts). Everything from the daemon that is
// printed goes through `printable`: header values, subjects and senders come
// from anyone who can send mail, and must not drive the owner's terminal.
//
// Exit 0 done, 1 the daemon refused (its error is printed as "mailproc:
// <error>"; nothing was changed), 64 usage, 69 the daemon is not running or
// gives the caller no socket, 77 another user's socket. `rules test` reads
// the message on standard input and sends at most MAX_TEST_BYTES of it with
// its real size.
import { parseArgs } from 'node:util';
import { loadDiscoveredConfig } from '../../config/index.js';
import { userSocketPath } from '../../control/user-sockets.js';
import { askAdminSocket, askUserSocket } from './control-client.js';
import { describeArgError, USAGE } from './usage.js';

/** spam.start_timeout (60 s by default) plus the check's spam.timeout, and room. */
const SPAM_TEST_TIMEOUT_MS = 180_000;

export const RULES_OPTIONS = {
  config: { type: 'string', short: 'c' }, socket: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  at: { type: 'string' }, from: { type: 'string' }, spam: { type: 'boolean' }, last: { type: 'string' },
} as const;

/** `rules test` sends at most this much of the message (the headers are what conditions read; the size is sent apart). */
export const MAX_TEST_BYTES = 8 * 1024 * 1024;
const DEFAULT_LOG_ENTRIES = 20;

// ---- The replies, as the wire carries them (src/control: rules.*) ----------

/** One of the administrator's rules shown beside the owner's: "db/rules:3". */
export interface AdminRuleView {
  readonly origin: string;
  readonly text: string;
}

/** The reply to list, add, remove, move and clear. */
export interface RuleListView {
  readonly address: string;
  readonly owner?: string;
  /** The owner's rules, numbered from 1 in evaluation order. */
  readonly rules: readonly { readonly n: number; readonly text: string }[];
  readonly locked: readonly AdminRuleView[];
  readonly admin: readonly AdminRuleView[];
  readonly updatedAt: string | null;
  /** clear only: how many of the owner's rules went. */
  readonly removed?: number;
}

export type SpamView =
  | { readonly checked: false; readonly reason?: string }
  | { readonly checked: true; readonly isSpam: boolean; readonly score: number; readonly required?: number | null; readonly tests?: readonly string[] };

export interface RuleTraceView {
  readonly layer: 'locked' | 'yours' | 'admin';
  /** "db/rules:3" or "yours:1". */
  readonly origin: string;
  readonly text: string;
  readonly result: 'applied' | 'not applied' | 'not reached';
  /** The first condition that did not hold, as written. */
  readonly failed?: string;
  /** The rule says stop. */
  readonly stop?: boolean;
}

export interface PlanStepView {
  readonly destination: string;
  readonly user: string;
  readonly group?: string;
  /** "db/rules:5", "yours:1" or "default". */
  readonly origin: string;
}

export type PlanView =
  | { readonly kind: 'deliver'; readonly steps: readonly PlanStepView[] }
  | { readonly kind: 'refuse'; readonly code: string; readonly text: string };

/** `rules test`'s report: what delivery would do with the message, and why. */
export interface TestReport {
  readonly address: string;
  /** Per table that had one, the key that matched the address. */
  readonly keys: readonly { readonly table: string; readonly key: string }[];
  readonly owner?: { readonly user: string; readonly uid?: number } | null;
  readonly sender: string;
  readonly size: number;
  /** Decoded, as the conditions see them. */
  readonly headers: readonly (readonly [string, string])[];
  readonly spam: SpamView;
  readonly rules: readonly RuleTraceView[];
  readonly plan: PlanView;
}

export interface DecisionCopyView {
  readonly origin: string;
  readonly rule?: string;
  readonly destination: string;
  readonly user: string;
}

export interface DecisionView {
  readonly time: string;
  readonly queueId: string;
  readonly recipient: string;
  readonly sender: string;
  readonly subject?: string;
  readonly status: string;
  readonly copies: readonly DecisionCopyView[];
}

export interface DecisionLogView {
  readonly address: string;
  /** Oldest first, newest last. */
  readonly entries: readonly DecisionView[];
}

// ---- Text ------------------------------------------------------------------

/**
 * Text from the daemon made safe for a terminal: control characters
 * (escape sequences, carriage returns, newlines folded into a subject) and
 * the bidirectional overrides that reorder what is shown become visible
 * escapes, so a sender cannot rewrite what the owner reads.
 */
export function printable(text: string): string {
  return text.replace(/[\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu, (c) => {
    const code = c.codePointAt(0) ?? 0;
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

/** 1234 → "1234 bytes"; 10485760 → "10485760 bytes (10.0M)". */
export function formatBytes(n: number): string {
  for (const [unit, m] of [['G', 1024 ** 3], ['M', 1024 ** 2], ['k', 1024]] as const) {
    if (n >= m) return `${n} bytes (${(n / m).toFixed(1)}${unit})`;
  }
  return plural(n, 'byte');
}

/** Lines of [label, text] with the texts in one column. */
function aligned(rows: readonly (readonly [string, string])[], indent: string): string[] {
  const width = Math.max(0, ...rows.map(([label]) => label.length));
  return rows.map(([label, text]) => `${indent}${label.padEnd(width)}  ${text}`.trimEnd());
}

/** The owner's number of a "yours:N" origin, or undefined. */
const yoursNumber = (origin: string): string | undefined => /^yours:(\d+)$/.exec(origin)?.[1];

/** How an origin reads in a plan or a log: "your rule 1", "locked rule db/rules:3", "rule db/rules:5", "the default". */
function describeOrigin(origin: string, locked: ReadonlySet<string> = new Set()): string {
  if (origin === 'default') return 'the default: no rule delivered a copy';
  const n = yoursNumber(origin);
  if (n !== undefined) return `your rule ${n}`;
  return `${locked.has(origin) ? 'locked rule' : 'rule'} ${printable(origin)}`;
}

/** "as alice" or "as alice, group mail". */
const asWhom = (user: string, group?: string): string => `as ${printable(user)}${group !== undefined ? `, group ${printable(group)}` : ''}`;

/** `rules list` (and add, remove, move): the three layers in evaluation order. */
export function formatRuleList(v: RuleListView): string {
  const out = [`${printable(v.address)}${v.owner !== undefined ? ` (owner ${printable(v.owner)})` : ''}`, ''];
  const adminRows = (rules: readonly AdminRuleView[]): string[] =>
    rules.length === 0 ? ['  (none)'] : aligned(rules.map((r) => [printable(r.origin), printable(r.text)]), '  ');
  out.push('Locked rules of the administrator, evaluated first (they apply whatever yours say):', ...adminRows(v.locked));
  out.push('Your rules, evaluated next:');
  out.push(...(v.rules.length === 0 ? ['  (none)'] : aligned(v.rules.map((r) => [String(r.n), printable(r.text)]), '  ')));
  out.push("The administrator's other rules, evaluated after yours:", ...adminRows(v.admin));
  out.push('When no rule delivers a copy, the message goes to the default destination.');
  out.push(v.updatedAt === null ? 'Your rules were never changed.' : `Your rules were last changed at ${printable(v.updatedAt)}.`);
  return `${out.join('\n')}\n`;
}

function formatSpam(s: SpamView): string {
  if (!s.checked) {
    const reason = s.reason === undefined || s.reason === '' || s.reason === 'not checked' ? undefined : printable(s.reason);
    return reason === undefined ? 'not checked (add --spam to have your spam checker look at it)' : `not checked: ${reason}`;
  }
  const required = s.required !== undefined && s.required !== null ? ` (required ${s.required.toFixed(1)})` : '';
  const tests = s.tests !== undefined ? `, tests ${s.tests.length > 0 ? s.tests.map(printable).join(',') : 'none'}` : '';
  return `${s.isSpam ? 'spam' : 'not spam'}, score ${s.score.toFixed(1)}${required}${tests}`;
}

/** Why a rule ended in `result`, one line. */
function ruleOutcome(rules: readonly RuleTraceView[], i: number, plan: PlanView): string {
  const r = rules[i] as RuleTraceView;
  switch (r.result) {
    case 'applied': {
      const refused = plan.kind === 'refuse' && !rules.slice(i + 1).some((x) => x.result !== 'not reached') && /^reject\b/.test(r.text);
      if (refused) return 'applied: every condition held; it refuses the message, no further rules';
      return `applied: every condition held${r.stop === true ? '; stop: no further rules' : ''}`;
    }
    case 'not applied':
      return r.failed !== undefined ? `not applied: ${printable(r.failed)} did not hold` : 'not applied';
    case 'not reached': {
      let k = i - 1;
      while (k >= 0 && rules[k]?.result !== 'applied') k--;
      const by = rules[k];
      if (by === undefined) return 'not reached: the message was refused before any rule (see the plan)';
      return `not reached: ${ruleLabel(by)} above ${by.stop === true ? 'applied with stop' : 'refused the message'}`;
    }
  }
}

/** "locked db/rules:3", "yours 1", "admin db/rules:5". */
function ruleLabel(r: RuleTraceView): string {
  return r.layer === 'yours' ? `yours ${yoursNumber(r.origin) ?? printable(r.origin)}` : `${r.layer} ${printable(r.origin)}`;
}

/** `rules test`: what the conditions saw, each rule's fate, and the plan. */
export function formatTestReport(t: TestReport): string {
  const out = [`Dry run for ${printable(t.address)}: nothing was delivered.`, ''];
  const owner = t.owner === undefined || t.owner === null
    ? '(none named by the uid table)'
    : `${printable(t.owner.user)}${t.owner.uid !== undefined ? ` (uid ${t.owner.uid})` : ''}`;
  out.push(...aligned([
    ['matched', t.keys.length === 0 ? '(no table key)' : t.keys.map((k) => `${printable(k.table)} table, key ${printable(k.key)}`).join('; ')],
    ['owner', owner],
    ['sender', t.sender === '' ? '<> (the null sender)' : printable(t.sender)],
    ['size', formatBytes(t.size)],
    ['spam', formatSpam(t.spam)],
  ], ''));

  out.push('', 'Headers, as the conditions see them:');
  out.push(...(t.headers.length === 0 ? ['  (none)'] : t.headers.map(([name, value]) => `  ${printable(name)}: ${printable(value)}`.trimEnd())));

  out.push('', 'Rules, in evaluation order:');
  if (t.rules.length === 0) out.push('  (none)');
  const labels = t.rules.map(ruleLabel);
  const width = Math.max(0, ...labels.map((l) => l.length));
  t.rules.forEach((r, i) => {
    out.push(`  ${(labels[i] as string).padEnd(width)}  ${printable(r.text)}`.trimEnd());
    out.push(`  ${''.padEnd(width)}  -> ${ruleOutcome(t.rules, i, t.plan)}`);
  });

  out.push('');
  const p = t.plan;
  if (p.kind === 'refuse') {
    out.push(`Plan: refuse the message: ${printable(p.code)} ${printable(p.text)}`.trimEnd());
  } else {
    const locked = new Set(t.rules.filter((r) => r.layer === 'locked').map((r) => r.origin));
    out.push(`Plan: deliver ${plural(p.steps.length, 'copy', 'copies')}${p.steps.length > 0 ? ':' : ''}`);
    for (const s of p.steps) out.push(`  ${printable(s.destination)}  ${asWhom(s.user, s.group)}  (${describeOrigin(s.origin, locked)})`);
  }
  return `${out.join('\n')}\n`;
}

/** `rules log`: per message delivered, who sent what and which rule placed each copy where. */
export function formatDecisionLog(v: DecisionLogView): string {
  if (v.entries.length === 0) return `${printable(v.address)}: no deliveries logged\n`;
  const out: string[] = [];
  for (const e of v.entries) {
    if (out.length > 0) out.push('');
    out.push(`${printable(e.time)}  ${printable(e.queueId)}  ${printable(e.status)}  to ${printable(e.recipient)}`);
    const rows: [string, string][] = [
      ['from', e.sender === '' ? '<> (the null sender)' : printable(e.sender)],
      ['subject', e.subject === undefined || e.subject === '' ? '(none)' : printable(e.subject)],
    ];
    if (e.copies.length === 0) rows.push(['copy', '(none)']);
    for (const c of e.copies) {
      const by = c.rule !== undefined ? `${describeOrigin(c.origin)}: ${printable(c.rule)}` : describeOrigin(c.origin);
      rows.push(['copy', `${printable(c.destination)}  ${asWhom(c.user)}`], ['', `by ${by}`]);
    }
    out.push(...aligned(rows, '  '));
  }
  return `${out.join('\n')}\n`;
}

// ---- The command -----------------------------------------------------------

/** A positive whole number from the command line, or undefined. */
function count(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,9}$/.test(text)) return undefined;
  const n = Number(text);
  return n >= 1 ? n : undefined;
}

/** The whole of standard input: its first `keep` bytes and its real size. */
async function readStdin(keep: number): Promise<{ bytes: Buffer; size: number }> {
  const chunks: Buffer[] = [];
  let kept = 0;
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (kept < keep) {
      const part = chunk.subarray(0, keep - kept);
      chunks.push(part);
      kept += part.length;
    }
  }
  return { bytes: Buffer.concat(chunks), size };
}

type Parsed = ReturnType<typeof parseArgs<{ options: typeof RULES_OPTIONS; allowPositionals: true }>>;

/** The request the command line asks for, or a usage problem. Reads standard input for test. */
async function buildRequest(p: Parsed): Promise<Record<string, unknown> | string> {
  const v = p.values;
  const [, verb, address, ...args] = p.positionals;
  const verbs = 'list, add, remove, move, clear, test or log';
  if (verb === undefined) return `rules: expected ${verbs}, then ADDRESS`;
  if (!verbs.split(/, | or /).includes(verb)) return `rules: unknown verb "${verb}" (expected ${verbs})`;
  if (address === undefined) return `rules ${verb}: give the ADDRESS`;
  const misplaced = (['at', 'from', 'spam', 'last'] as const).find((k) => v[k] !== undefined
    && !(k === 'at' && verb === 'add') && !((k === 'from' || k === 'spam') && verb === 'test') && !(k === 'last' && verb === 'log'));
  if (misplaced !== undefined) return `--${misplaced} goes with rules ${misplaced === 'at' ? 'add' : misplaced === 'last' ? 'log' : 'test'}`;
  const want = { list: 0, add: 1, remove: 1, move: 2, clear: 0, test: 0, log: 0 }[verb] ?? 0;
  if (verb === 'add' && args.length > 1) {
    return "rules add: give the rule as one argument, in quotes: mailproc rules add ADDRESS 'folder:Invoices header:Subject=Invoice* stop'";
  }
  if (args.length !== want) {
    const shape = { add: "ADDRESS 'RULE'", remove: 'ADDRESS N', move: 'ADDRESS FROM TO' }[verb as 'add' | 'remove' | 'move'] ?? 'ADDRESS';
    return `rules ${verb}: expected ${shape}${args.length > want ? `, not also ${args.slice(want).join(' ')}` : ''}`;
  }
  const base = { cmd: `rules.${verb}`, address };
  switch (verb) {
    case 'add': {
      if (v.at === undefined) return { ...base, rule: args[0] };
      const at = count(v.at);
      return at === undefined ? `--at: expected a rule number from 1, got "${v.at}"` : { ...base, rule: args[0], position: at };
    }
    case 'remove': {
      const n = count(args[0]);
      return n === undefined ? `rules remove: expected a rule number from 1, got "${args[0] ?? ''}"` : { ...base, n };
    }
    case 'move': {
      const [from, to] = [count(args[0]), count(args[1])];
      if (from === undefined || to === undefined) return `rules move: expected two rule numbers from 1, got "${args[0] ?? ''}" "${args[1] ?? ''}"`;
      return { ...base, from, to };
    }
    case 'log': {
      if (v.last === undefined) return { ...base, last: DEFAULT_LOG_ENTRIES };
      const last = count(v.last);
      return last === undefined ? `--last: expected a number from 1, got "${v.last}"` : { ...base, last };
    }
    case 'test': {
      if (process.stdin.isTTY) return 'rules test: give the message on standard input: mailproc rules test ADDRESS < message.eml';
      const { bytes, size } = await readStdin(MAX_TEST_BYTES);
      return {
        ...base, message: bytes.toString('base64'), size,
        ...(v.from !== undefined ? { sender: v.from } : {}), ...(v.spam === true ? { spam: true } : {}),
      };
    }
    default: return base;
  }
}

/** argv: the whole command line after `mailproc` (options may come before "rules"). */
export async function runRules(argv: string[]): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parseArgs({ args: argv, options: RULES_OPTIONS, allowPositionals: true });
  } catch (err) {
    process.stderr.write(`mailproc rules: ${describeArgError(err as Error)}\n${USAGE}`);
    return 64;
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const request = await buildRequest(parsed);
  if (typeof request === 'string') {
    process.stderr.write(`mailproc: ${request}\n${USAGE}`);
    return 64;
  }

  // A dry run with --spam may start the owner's checker first (cold: seconds to a minute on a loaded machine).
  const timeoutMs = request.cmd === 'rules.test' && request.spam === true ? SPAM_TEST_TIMEOUT_MS : undefined;
  let reply: Record<string, unknown> | number;
  const socket = v.socket ?? process.env.MAILPROC_SOCKET;
  const uid = process.getuid?.() ?? -1;
  if (socket !== undefined && socket !== '') reply = await askUserSocket(socket, request, timeoutMs);
  else if (uid === 0) {
    // Root may act on any address: the administrator's socket takes the same requests.
    reply = await askAdminSocket(loadDiscoveredConfig(v.config), request, timeoutMs);
  } else {
    let run: string;
    try {
      run = loadDiscoveredConfig(v.config).paths.run;
    } catch (err) {
      process.stderr.write(`mailproc: ${(err as Error).message}\nmailproc: give the socket with --socket PATH or $MAILPROC_SOCKET (it is <run>/users/${uid}/control.sock)\n`);
      return 69;
    }
    reply = await askUserSocket(userSocketPath(run, uid), request, timeoutMs);
  }
  if (typeof reply === 'number') return reply;

  if (v.json) process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`);
  else if (request.cmd === 'rules.test') process.stdout.write(formatTestReport(reply.test as TestReport));
  else if (request.cmd === 'rules.log') process.stdout.write(formatDecisionLog(reply as unknown as DecisionLogView));
  else if (request.cmd === 'rules.clear') {
    const removed = Number(reply.removed ?? 0);
    process.stdout.write(`${printable(String(reply.address))}: ${removed === 0 ? 'you had no rules' : `${plural(removed, 'rule')} removed`}\n`);
  } else process.stdout.write(formatRuleList(reply as unknown as RuleListView));
  return 0;
}
