// Rows of a central table as a table source: `mailproc db sync` reads
// key/value rows from PostgreSQL (sync-postgres.ts) and compiles them with
// the one parser of table sources (source.ts), so a row means exactly what
// the same line in db/ would. Pure, no I/O.
//
// Each row becomes one source line "KEY VALUE". What the line format could
// misread is refused here, naming row and column, instead of being turned
// into a line: a key that is empty, holds white space or starts with "#" (a
// comment), a value with a line break (a continuation line, i.e. another
// entry's words) or a NUL. The parser's errors about a line are given back
// as the row's: "mailprocd_rules: row id=17, column value: …".
//
// Exports: CentralRow, RowsSource, rowsToSource, rowErrors.
import type { SourceError } from './source.js';

export interface CentralRow {
  /** How the row is named in errors: "id=17" (rules) or "key=alice@example.org". */
  readonly label: string;
  readonly key: string;
  readonly value: string;
}

export interface RowsSource {
  /** The source text, one line per row that could be written. */
  readonly text: string;
  /** lineRows[n - 1] is the row written as line n. */
  readonly lineRows: readonly CentralRow[];
  /** Rows refused before parsing (bad key or value), by row and column. */
  readonly errors: readonly SourceError[];
}

// eslint-disable-next-line no-control-regex -- control characters are what it finds
const KEY_BAD = /[\s\x00-\x1f\x7f]/;
const VALUE_BAD = /[\r\n\0]/;

export function rowsToSource(relation: string, rows: readonly CentralRow[]): RowsSource {
  const lines: string[] = [];
  const lineRows: CentralRow[] = [];
  const errors: SourceError[] = [];
  const refuse = (row: CentralRow, column: string, message: string): void => {
    errors.push({ file: relation, line: 0, message: `row ${row.label}, column ${column}: ${message}` });
  };
  for (const row of rows) {
    if (row.key === '') refuse(row, 'key', 'empty key');
    else if (KEY_BAD.test(row.key)) refuse(row, 'key', `key ${JSON.stringify(row.key.slice(0, 80))} holds white space or a control character`);
    else if (row.key.startsWith('#')) refuse(row, 'key', `key ${JSON.stringify(row.key.slice(0, 80))} starts with "#", which a source reads as a comment`);
    else if (VALUE_BAD.test(row.value)) refuse(row, 'value', 'value holds a line break or NUL: one row is one entry on one line');
    else {
      lines.push(`${row.key} ${row.value}`);
      lineRows.push(row);
    }
  }
  return { text: lines.length > 0 ? `${lines.join('\n')}\n` : '', lineRows, errors };
}

/**
 * The parser's errors for a text made by rowsToSource, as the rows' errors:
 * file → the relation, line → the row, and the column named: "key" when the
 * error is in the key's characters (or is about the key), "value" otherwise.
 */
export function rowErrors(relation: string, source: RowsSource, errors: readonly SourceError[]): SourceError[] {
  return errors.map((e) => {
    const row = source.lineRows[e.line - 1];
    if (row === undefined) return { file: relation, line: 0, message: e.message };
    const inKey = e.column !== undefined ? e.column <= row.key.length : /^(?:bad key|duplicate key|key |control character .* in key)/.test(e.message);
    const message = e.message.replace(/\(first given at line (\d+)\)/, (whole, n: string) => {
      const first = source.lineRows[Number(n) - 1];
      return first === undefined ? whole : `(first given in row ${first.label})`;
    });
    return { file: relation, line: 0, message: `row ${row.label}, column ${inKey ? 'key' : 'value'}: ${message}` };
  });
}
