// `mailproc learn --spam|--ham [--forget] [--user USER] PATH…`: teaches a
// user's own SpamAssassin (Bayes) with messages — a Maildir folder (its cur/
// and new/), an mbox file, a directory of message files, or message files.
// Each message goes to the user's checker as a TELL, so it is learned by the
// checker running as that user, into that user's Bayes files.
//
// Who: a mailbox owner runs it for themselves; it asks the daemon over their
// own socket (<run>/users/<uid>/control.sock, or --socket PATH,
// $MAILPROC_SOCKET) to start their checker, then talks to the checker's
// socket in their 0700 directory. Root gives --user and asks over the admin
// socket instead; root reads the files, the checker (as the user) learns.
// The messages are read as the caller: a user can learn only what they can
// read.
//
// Output: on a terminal a running count on stderr; always a summary line on
// stdout ("learned 40, already known 2, too large 1, failed 0"). Exit 0 when
// nothing failed, 1 when a message failed (the others are still learned),
// 64 usage, 66 a PATH cannot be read, 69 the daemon or the checker cannot be
// reached, 77 another user's socket.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { tell, SpamdError } from '../../classify/spam/index.js';
import { loadDiscoveredConfig } from '../../config/index.js';
import { userSocketPath } from '../../control/user-sockets.js';
import { askDaemon } from './control-client.js';
import { describeArgError, USAGE } from './usage.js';

export const LEARN_OPTIONS = {
  config: { type: 'string', short: 'c' }, socket: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  spam: { type: 'boolean' }, ham: { type: 'boolean' }, forget: { type: 'boolean' }, user: { type: 'string' },
} as const;

/** Ask for the checker again after this many messages: it keeps it from idling out and follows a restart. */
const TOUCH_EVERY = 50;
const TELL_TIMEOUT_MS = 120_000;
/**
 * Asking for a checker may start one, which takes SpamAssassin's whole start
 * (tens of seconds on a busy host). The daemon answers by spam.start_timeout
 * (60 s by default) with the checker or an error, so the client waits longer
 * than any start the daemon would itself allow, instead of the control
 * client's 30 s default that cut starts short on a loaded machine.
 */
const CHECKER_TIMEOUT_MS = 600_000;

interface Checker {
  readonly socket: string;
  readonly user: string;
}

/** A source of messages: each yields its messages' bytes in order. */
type Messages = AsyncGenerator<{ readonly where: string; readonly bytes: Buffer }>;

/** Splits an mbox (mboxrd/mboxo: "From " lines start messages; ">From " is unquoted one level). */
export function splitMbox(data: Buffer): Buffer[] {
  const text = data.toString('latin1');
  const out: Buffer[] = [];
  const starts: number[] = [];
  if (text.startsWith('From ')) starts.push(0);
  for (let i = text.indexOf('\nFrom '); i >= 0; i = text.indexOf('\nFrom ', i + 1)) starts.push(i + 1);
  for (let k = 0; k < starts.length; k++) {
    const begin = starts[k] as number;
    const end = k + 1 < starts.length ? (starts[k + 1] as number) : text.length;
    const chunk = text.slice(text.indexOf('\n', begin) + 1, end).replace(/\n$/, '');
    out.push(Buffer.from(chunk.replace(/^>(>*From )/gm, '$1'), 'latin1'));
  }
  return out;
}

async function* messagesOf(path: string): Messages {
  const st = await stat(path);
  if (st.isDirectory()) {
    const entries = await readdir(path);
    const maildir = entries.includes('cur') || entries.includes('new');
    const dirs = maildir ? ['cur', 'new'].filter((d) => entries.includes(d)).map((d) => join(path, d)) : [path];
    for (const dir of dirs) {
      for (const name of (await readdir(dir)).sort()) {
        if (name.startsWith('.')) continue;
        const file = join(dir, name);
        const fst = await stat(file).catch(() => undefined);
        if (fst?.isFile() === true) yield { where: file, bytes: await readFile(file) };
      }
    }
    return;
  }
  const data = await readFile(path);
  if (data.subarray(0, 5).toString('latin1') === 'From ') {
    let n = 0;
    for (const bytes of splitMbox(data)) yield { where: `${path} #${++n}`, bytes };
  } else {
    yield { where: path, bytes: data };
  }
}

export async function runLearn(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: LEARN_OPTIONS, allowPositionals: true });
  } catch (err) {
    process.stderr.write(`mailproc learn: ${describeArgError(err as Error)}\n${USAGE}`);
    return 64;
  }
  const v = parsed.values;
  const paths = parsed.positionals.slice(1);
  const usage = (why: string): number => {
    process.stderr.write(`mailproc: ${why}\n${USAGE}`);
    return 64;
  };
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (v.spam === v.ham) return usage('learn: give exactly one of --spam or --ham');
  if (paths.length === 0) return usage('learn: give at least one PATH (a Maildir folder, an mbox or message files)');
  const asRoot = process.getuid?.() === 0;
  if (asRoot && v.user === undefined) return usage('learn: as root, say whose checker learns with --user USER');
  if (!asRoot && v.user !== undefined) return usage('learn: --user is for root; you can teach only your own checker');

  for (const p of paths) {
    try {
      await stat(p);
    } catch (err) {
      process.stderr.write(`mailproc: ${p}: ${(err as Error).message}\n`);
      return 66;
    }
  }

  const find = async (): Promise<Checker | number> => {
    let control: string;
    let request: Record<string, unknown>;
    let config;
    try {
      config = v.socket === undefined || asRoot ? loadDiscoveredConfig(v.config) : undefined;
    } catch (err) {
      process.stderr.write(`mailproc: ${(err as Error).message}\n`);
      return 69;
    }
    if (asRoot) {
      control = join((config as NonNullable<typeof config>).paths.run, 'control.sock');
      request = { cmd: 'spam.checker', user: v.user };
    } else {
      control = v.socket ?? process.env.MAILPROC_SOCKET ?? userSocketPath((config as NonNullable<typeof config>).paths.run, process.getuid?.() ?? -1);
      request = { cmd: 'spam.checker' };
    }
    let r: Record<string, unknown>;
    try {
      r = await askDaemon(control, request, CHECKER_TIMEOUT_MS);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      process.stderr.write(`mailproc: cannot reach mailprocd at ${control}: ${code === 'EACCES' ? 'permission denied: it is not your socket' : (err as Error).message}\n`);
      return code === 'EACCES' ? 77 : 69;
    }
    if (r.ok !== true) {
      process.stderr.write(`mailproc: ${String(r.error)}\n`);
      return 69;
    }
    return { socket: String(r.socket), user: String(r.user) };
  };

  let checker = await find();
  if (typeof checker === 'number') return checker;
  const what = v.forget ? 'forget' : v.spam ? 'spam' : 'ham';
  const counts = { learned: 0, known: 0, large: 0, failed: 0 };
  const tty = process.stderr.isTTY;
  let seen = 0;
  const progress = (): void => {
    if (tty) process.stderr.write(`\r${seen} messages: ${counts.learned} learned, ${counts.known} already known, ${counts.failed} failed`);
  };
  const teach = async (socket: string, bytes: Buffer): Promise<'learned' | 'known'> => {
    const r = await tell({ target: { path: socket }, timeoutMs: TELL_TIMEOUT_MS },
      bytes, v.forget ? { remove: ['local'] } : { messageClass: v.spam ? 'spam' : 'ham', set: ['local'] });
    const changed = v.forget ? r.didRemove : r.didSet;
    return changed.includes('local') ? 'learned' : 'known';
  };

  for (const p of paths) {
    try {
      for await (const m of messagesOf(p)) {
        seen++;
        if (seen % TOUCH_EVERY === 0) {
          const again = await find();
          if (typeof again !== 'number') checker = again;
        }
        try {
          let result;
          try {
            result = await teach(checker.socket, m.bytes);
          } catch (err) {
            if (!(err instanceof SpamdError) || err.kind !== 'connect') throw err;
            // The checker stopped (idle, killed): ask for it again, once.
            const again = await find();
            if (typeof again === 'number') return again;
            checker = again;
            result = await teach(checker.socket, m.bytes);
          }
          counts[result === 'learned' ? 'learned' : 'known']++;
        } catch (err) {
          // EX_DATAERR (65): the checker refuses a message over its size limit (spam.max_size and a little).
          if (err instanceof SpamdError && (err.kind === 'too-large' || (err.kind === 'server' && err.exitCode === 65))) counts.large++;
          else {
            counts.failed++;
            if (tty) process.stderr.write('\n');
            process.stderr.write(`mailproc: ${m.where}: ${(err as Error).message}\n`);
          }
        }
        progress();
      }
    } catch (err) {
      if (tty) process.stderr.write('\n');
      process.stderr.write(`mailproc: ${p}: ${(err as Error).message}\n`);
      counts.failed++;
    }
  }
  if (tty) process.stderr.write('\n');
  const verb = what === 'forget' ? 'forgotten' : `learned as ${what}`;
  process.stdout.write(`${checker.user}: ${counts.learned} ${verb}, ${counts.known} already ${what === 'forget' ? 'unknown' : 'known'}, ${counts.large} too large, ${counts.failed} failed\n`);
  return counts.failed > 0 ? 1 : 0;
}
