// One line per event on stderr, Postfix-style by default:
//   2026-11-21T09:30:25.123Z mailprocd[123]: 4F2A…: to=<alice@example.test>, relay=maildir, delay=0.01, dsn=2.0.0, status=sent (Saved)
// or one JSON object per line with log.format: json. Fields keep their order.
// Never throws; a broken stderr must not take delivery down with it.

export type Level = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

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

let procName = 'mailprocd';
export function setProcessName(name: string): void {
  procName = name;
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

export function createLogger(opts: { format: 'text' | 'json'; level: Level; write?: (line: string) => void }): Logger {
  const write = opts.write ?? ((line: string) => {
    try {
      process.stderr.write(line);
    } catch {
      // nowhere left to report it
    }
  });
  const min = RANK[opts.level];
  const log = (level: Level, message: string, fields?: Fields, id?: string): void => {
    if (RANK[level] < min) return;
    const time = new Date().toISOString();
    if (opts.format === 'json') {
      write(`${JSON.stringify({ time, level, process: procName, pid: process.pid, id, message, ...fields })}\n`);
    } else {
      const tag = level === 'info' ? '' : `${level}: `;
      write(`${time} ${procName}[${process.pid}]: ${tag}${formatText(message, fields, id)}\n`);
    }
  };
  return {
    enabled: (level) => RANK[level] >= min,
    log,
    debug: (m, f, i) => log('debug', m, f, i),
    info: (m, f, i) => log('info', m, f, i),
    warn: (m, f, i) => log('warn', m, f, i),
    error: (m, f, i) => log('error', m, f, i),
  };
}
