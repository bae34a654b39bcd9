// Rules and destinations written back as the text of the rules table
// (db/README.md), for what users and administrators read: `mailproc rules
// list`, `rules test`, `rules log`. The text parses back to the same rule
// (a word with white space or a quote is quoted as the tables quote it).
//
// A vacation text is one word of one line: a line break in it is written
// "\n" and a backslash "\\" (then quoted as every word is), and
// unescapeVacationText is how the parser reads that back.
//
// Exports: formatRule, formatDestination, formatCondition,
// escapeVacationText, unescapeVacationText. Pure; never throws.
import { VACATION_DAYS, type Condition, type Destination, type Pattern, type Rule } from './rules.js';

/** A word as a table source writes it: quoted when it holds white space, a quote or nothing at all. */
function word(text: string): string {
  if (text !== '' && !/[\s"]/.test(text)) return text;
  return `"${text.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

function pattern(p: Pattern): string {
  return p.kind === 'glob' ? `=${p.glob}` : `~/${p.source}/${p.flags}`;
}

/** "\n" in a vacation text is a line break and "\\" a backslash (after the table's own quoting); any other backslash stays. */
export function unescapeVacationText(text: string): string {
  return text.replace(/\\([\\n])/g, (_whole, c: string) => (c === 'n' ? '\n' : '\\'));
}

/** The inverse of unescapeVacationText. */
export function escapeVacationText(text: string): string {
  return text.replaceAll('\\', '\\\\').replaceAll('\n', '\\n');
}

function vacationText(d: Extract<Destination, { kind: 'vacation' }>): string {
  const words = ['vacation'];
  if (d.text !== undefined) words.push(word(`text=${escapeVacationText(d.text)}`));
  if (d.textFile !== undefined) words.push(word(`text_file=${d.textFile}`));
  if (d.subject !== undefined) words.push(word(`subject=${d.subject}`));
  if (d.days !== VACATION_DAYS.default) words.push(`days=${d.days}`);
  if (d.from !== undefined) words.push(`from=${d.from}`);
  if (d.until !== undefined) words.push(`until=${d.until}`);
  if (d.addresses !== undefined && d.addresses.length > 0) words.push(`addresses=${d.addresses.join(',')}`);
  return words.join(' ');
}

export function formatCondition(c: Condition): string {
  const not = 'negate' in c && c.negate ? '!' : '';
  switch (c.kind) {
    case 'header': return word(`${not}header:${c.name}${pattern(c.pattern)}`);
    case 'sender': return word(`${not}sender${pattern(c.pattern)}`);
    case 'extension': return word(`${not}extension${pattern(c.pattern)}`);
    case 'size': return `size${c.op}${c.bytes}`;
    case 'spam': return c.is ? 'spam' : '!spam';
    case 'score': return `score${c.op}${c.value}`;
  }
}

/** A pipe's words joined the way the table splits them: single quotes around a word with white space. */
function argvText(argv: readonly string[]): string {
  return argv.map((a) => (/\s/.test(a) || a === '' ? `'${a}'` : a)).join(' ');
}

export function formatDestination(d: Destination): string {
  switch (d.kind) {
    case 'maildir': return `${word(`maildir:${d.path}`)}${d.folder !== undefined ? ` ${word(`folder=${d.folder}`)}` : ''}`;
    case 'mbox': return word(`mbox:${d.path}`);
    case 'pipe': return word(`pipe:${argvText(d.argv)}`);
    case 'forward': return `forward:${d.address}`;
    case 'list': return `list:${d.name}`;
    case 'discard': return 'discard';
    case 'probe': return 'probe';
    case 'vacation': return vacationText(d);
    case 'reject': return word(`reject:${d.code}${d.text !== '' ? ` ${d.text}` : ''}`);
  }
}

export function formatRule(r: Rule): string {
  const words = [formatDestination(r.destination), ...r.conditions.map(formatCondition)];
  if (r.uid !== undefined) words.push(`uid=${r.uid}`);
  if (r.gid !== undefined) words.push(`gid=${r.gid}`);
  if (r.maxsize !== undefined) words.push(`maxsize=${r.maxsize}`);
  if (r.concurrency !== undefined) words.push(`concurrency=${r.concurrency}`);
  if (r.locked === true) words.push('locked');
  if (r.dedupe === true) words.push('dedupe');
  if (r.stop) words.push('stop');
  return words.join(' ');
}
