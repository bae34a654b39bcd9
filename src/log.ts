// One line per event, Postfix-style by default:
//   2026-11-21T09:30:25.123Z mailprocd[123]: 4F2A…: to=<alice@example.test>, relay=maildir, delay=0.01, dsn=2.0.0, status=sent (Saved)
// or one JSON object per line with log.format: json. Fields keep their order.
//
// Where lines go: stderr, or log.file (an absolute path, created 0640,
// appended to; reopen() after logrotate moved it, on SIGUSR1). When stderr is
// the journal (systemd sets JOURNAL_STREAM to stderr's device:inode, see
// systemd.exec(5)), each line starts with its syslog priority (<3> error,
// <4> warning, <6> info, <7> debug) and carries neither a time nor our name
// and pid: the journal records all three (SYSLOG_IDENTIFIER from the unit's
// SyslogIdentifier=, _PID), and rsyslog would print them twice. The prefix
// goes before a JSON line too: journald takes it off, MESSAGE stays JSON.
//
// Exports: createLogger (a RootLogger: a Logger that can reopen and close its
// file), Logger, Level, Fields, setProcessName, journalPriority, stderrIsJournal.
//
// Never throws; a broken stderr or a full disk must not take delivery down
// with it. A log.file that cannot be opened or written sends the line to
// stderr instead (and says so there once per failure).
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
/** syslog(3) priorities, which journald reads from a `<N>` at the start of a line. */
const PRIORITY: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3 };

export type Fields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  /** Whether a line at this level is written: to skip building fields nobody will see on a hot path. */
  enabled(level: Level): boolean;
  log(level: Level, message: string, fields?: Fields, id?: string): void;
  debug(message: string, fields?: Fields, id?: string): void;
  info(message: string, fields?: Fields, id?: string): void;
  warn(message: string, fields?: Fields, id?: string): void;
  error(message: string, fields?: Fields, id?: string): void;
}

/** The daemon's own logger: also owns the log file, if any. */
export interface RootLogger extends Logger {
  /** SIGUSR1: close log.file and open it again by name (logrotate's postrotate). No-op on stderr. */
  reopen(): void;
  /** Closes log.file; later lines go to stderr. */
  close(): void;
}

let procName = 'mailprocd';
export function setProcessName(name: string): void {
  procName = name;
}

export function journalPriority(level: Level): number {
  return PRIORITY[level];
}

/**
 * Whether descriptor 2 is the journal's stream: JOURNAL_STREAM ("dev:ino",
 * decimal) names the stream systemd connected, and it must still be our
 * stderr (a child whose stderr was redirected inherits the variable too).
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (m === null) return false;
  try {
    const st = fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1] ?? '') && st.ino === BigInt(m[2] ?? '');
  } catch {
    return false;
  }
}

function formatText(message: string, fields: Fields | undefined, id: string | undefined): string {
  const parts: string[] = [];
  let status = '';
  for (const [k, v] of Object.entries(fields ?? {})) {
    if (v === undefined) continue;
    if (k === 'status') {
      status = String(v);
      continue;
    }
    parts.push(`${k}=${k === 'to' || k === 'from' || k === 'orig_to' ? `<${String(v)}>` : String(v)}`);
  }
  // Postfix puts status= last with the text in parentheses.
  if (status !== '') parts.push(`status=${status}${message !== '' ? ` (${message})` : ''}`);
  else if (message !== '') parts.unshift(message);
  return `${id !== undefined ? `${id}: ` : ''}${parts.join(', ')}`;
}

const ENVELOPE = new Set(['time', 'level', 'process', 'pid', 'id', 'message']);

/** A field named like a key of the JSON envelope (a worker's pid=) is kept as field_<name>, not written over it. */
function jsonFields(fields: Fields | undefined): Fields | undefined {
  if (fields === undefined || !Object.keys(fields).some((k) => ENVELOPE.has(k))) return fields;
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [ENVELOPE.has(k) ? `field_${k}` : k, v]));
}

function writeStderr(line: string): void {
  try {
    process.stderr.write(line);
  } catch {
    // nowhere left to report it
  }
}

/** log.file: appended to with one write(2) per line, so lines from before and after a reopen never interleave. */
class LogFile {
  private fd: number | undefined;
  private failed = false;

  constructor(private readonly path: string) {
    this.open();
  }

  open(): void {
    try {
      // 'a': O_APPEND|O_CREAT (and Node adds O_CLOEXEC): no worker inherits it.
      this.fd = openSync(this.path, 'a', 0o640);
      this.failed = false;
    } catch (err) {
      this.fd = undefined;
      this.complain(`cannot open log.file ${this.path}: ${(err as Error).message}; logging to stderr`);
    }
  }

  write(line: string): void {
    if (this.fd === undefined) return writeStderr(line);
    try {
      writeSync(this.fd, line);
      this.failed = false;
    } catch (err) {
      this.complain(`cannot write log.file ${this.path}: ${(err as Error).message}`);
      writeStderr(line);
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // already gone
    }
    this.fd = undefined;
  }

  /** One stderr line per run of failures, not one per log line. */
  private complain(text: string): void {
    if (this.failed) return;
    this.failed = true;
    writeStderr(`${new Date().toISOString()} ${procName}[${process.pid}]: error: ${text}\n`);
  }
}

export function createLogger(opts: {
  format: 'text' | 'json';
  level: Level;
  /** log.file: an absolute path. */
  file?: string;
  /** For tests: where lines go (overrides file and stderr). */
  write?: (line: string) => void;
  /** Whether to write the journal's form; default: stderrIsJournal(), when lines go to stderr. */
  journal?: boolean;
}): RootLogger {
  const file = opts.write === undefined && opts.file !== undefined ? new LogFile(opts.file) : undefined;
  const write = opts.write ?? ((line: string) => (file !== undefined ? file.write(line) : writeStderr(line)));
  const journal = opts.journal ?? (opts.write === undefined && file === undefined && stderrIsJournal());
  const min = RANK[opts.level];
  const log = (level: Level, message: string, fields?: Fields, id?: string): void => {
    if (RANK[level] < min) return;
    if (opts.format === 'json') {
      const json = JSON.stringify({ time: new Date().toISOString(), level, process: procName, pid: process.pid, id, message, ...jsonFields(fields) });
      write(`${journal ? `<${PRIORITY[level]}>` : ''}${json}\n`);
      return;
    }
    const tag = level === 'info' ? '' : `${level}: `;
    const text = `${tag}${formatText(message, fields, id)}`;
    if (journal) {
      // Every line of a multi-line message (a config error lists one problem a line) keeps the priority.
      const prefix = `<${PRIORITY[level]}>`;
      write(`${prefix}${text.split('\n').join(`\n${prefix}`)}\n`);
    } else {
      write(`${new Date().toISOString()} ${procName}[${process.pid}]: ${text}\n`);
    }
  };
  return {
    enabled: (level) => RANK[level] >= min,
    log,
    debug: (m, f, i) => log('debug', m, f, i),
    info: (m, f, i) => log('info', m, f, i),
    warn: (m, f, i) => log('warn', m, f, i),
    error: (m, f, i) => log('error', m, f, i),
    reopen: () => {
      if (file === undefined) return;
      file.close();
      file.open();
    },
    close: () => file?.close(),
  };
}
