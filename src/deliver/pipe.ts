// Pipe leaf: runs a command with the message on its standard input, the way
// Postfix local(8) runs a `|command` (pipe_command.c; ../shared/notes/reliability.md §1.3).
//
// Exports: deliverPipe(copy, options) → Promise<Delivery>; PipeOptions;
// pipeEnvironment(copy, home?) (pure but for process.env, for tests);
// PIPE_PATH.
//
// The command: argv[0] with argv[1..], executed directly (no shell: a ';' in an
// argument is just a character), in its own session and process group, with
// cwd = HOME when that is an accessible directory, else "/". It inherits the
// worker's uid/gid — the worker already runs as the recipient (the privilege
// boundary is the worker's process boundary, not this file). Its environment
// is exactly HOME, USER, LOGNAME, SHELL=/bin/sh, PATH=PIPE_PATH, SENDER,
// RECIPIENT, LOCAL, DOMAIN, EXTENSION (only when there is one) and TZ (only
// when the worker has one); nothing else of the worker's environment.
// stdin is the trace header then the message, LF line endings, written
// without joining them. The first 2 KiB of stdout+stderr are kept for the
// status text; the rest is read and dropped.
//
// Failure contract: never throws for command trouble; throws only for bad
// options (empty argv, a non-positive timeout). Exit codes map through the one
// table in src/mail/sysexits.ts (unknown codes: temporary by default). When a
// failing command's output begins with an RFC 3463 code (4.x.x or 5.x.x), that
// code wins, as in Postfix; a 2.x.x there never turns a failure into success.
// Killed by a signal: 4.3.0. Time limit: the whole process group is SIGKILLed
// and the result is 4.3.0 (Postfix bounces it; we defer — see NOTES.md). A
// command that cannot be started goes through the errno table (ENOENT 4.3.0,
// EACCES 4.2.0). Exit 0 without reading all input (EPIPE on our side) is
// delivered, and the text says so.
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { execa } from 'execa';
import { statusFromError } from '../mail/errno.js';
import { isSuccess, ok, status, type EnhancedCode, type Status } from '../mail/status.js';
import { statusFromExit, statusFromSignal, type UnknownExit } from '../mail/sysexits.js';
import type { CopyRecipient, Delivery, MessageCopy } from './types.js';

export interface PipeOptions {
  /** The command and its arguments; argv[0] is looked up in PIPE_PATH when it has no '/'. */
  readonly argv: readonly string[];
  /** Wall-clock limit for the whole run (Postfix command_time_limit). */
  readonly timeoutMs: number;
  /** An exit code outside the sysexits table: 'temporary' (default, 4.3.0) or 'permanent' (5.3.0, Postfix). */
  readonly unknownExit?: UnknownExit;
  /** HOME for the command; default the worker's HOME. */
  readonly home?: string;
}

/** The command's PATH, whatever the worker's is (Postfix resets it too). */
export const PIPE_PATH = '/usr/local/bin:/usr/bin:/bin';

/** Output kept for the status text and the enhanced-code check; the rest is drained. */
const OUTPUT_LIMIT = 2048;
/** Characters of output quoted in the status text. */
const TEXT_LIMIT = 200;
/** After the command exits, how long a background process that inherited stdout may keep us waiting for EOF. */
const OUTPUT_GRACE_MS = 1000;
/** After SIGKILL at the time limit, how long to wait for the exit before answering anyway (a process in D state). */
const KILL_GRACE_MS = 5000;

/** Stream errors that mean "the command closed its stdin before we were done". */
const UNREAD_CODES = new Set(['EPIPE', 'ECONNRESET', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_PREMATURE_CLOSE']);

const DSN_RE = /^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)/;

type Run =
  | { readonly kind: 'exit'; readonly code: number; readonly output: string; readonly unread: boolean; readonly writeError?: unknown }
  | { readonly kind: 'signal'; readonly signal: string; readonly output: string }
  | { readonly kind: 'timeout'; readonly output: string }
  | { readonly kind: 'not-started'; readonly error: unknown };

export async function deliverPipe(copy: MessageCopy, o: PipeOptions): Promise<Delivery> {
  const argv0 = o.argv[0];
  if (argv0 === undefined || argv0 === '') throw new Error('bug: pipe delivery with an empty argv');
  if (!Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0) throw new Error(`bug: pipe timeoutMs must be positive, got ${o.timeoutMs}`);
  const what = `command ${printable(argv0, 100)}`;
  const env = pipeEnvironment(copy, o.home);
  const cwd = await workingDirectory(env.HOME);
  const run = await runCommand(argv0, o.argv.slice(1), env, cwd, copy, o.timeoutMs);
  return { status: statusOfRun(run, what, o) };
}

/** The command's whole environment; see the header for the list. */
export function pipeEnvironment(copy: Pick<MessageCopy, 'sender' | 'recipient'>, home?: string): Record<string, string> {
  const e = process.env;
  const r: CopyRecipient = copy.recipient;
  const login = e.USER ?? e.LOGNAME ?? passwordEntry()?.username;
  const dir = home ?? e.HOME ?? passwordEntry()?.homedir;
  const env: Record<string, string> = {};
  if (dir !== undefined && dir !== '') env.HOME = dir;
  if (login !== undefined && login !== '') {
    env.USER = login;
    env.LOGNAME = login;
  }
  env.SHELL = '/bin/sh';
  env.PATH = PIPE_PATH;
  env.SENDER = copy.sender;
  env.RECIPIENT = r.address;
  env.LOCAL = r.local;
  env.DOMAIN = r.domain;
  // Postfix sets EXTENSION only when the address has one; scripts test ${EXTENSION-…}.
  if (r.extension !== '') env.EXTENSION = r.extension;
  if (e.TZ !== undefined) env.TZ = e.TZ;
  return env;
}

function passwordEntry(): { username: string; homedir: string } | undefined {
  try {
    return userInfo();
  } catch {
    return undefined; // a uid with no passwd entry: HOME/USER stay unset
  }
}

async function workingDirectory(home: string | undefined): Promise<string> {
  if (home === undefined || !home.startsWith('/')) return '/';
  try {
    if (!(await stat(home)).isDirectory()) return '/';
    await access(home, constants.X_OK);
    return home;
  } catch {
    return '/';
  }
}

// Process groups of commands still running, killed if the worker exits under them.
const running = new Set<number>();
let exitHookInstalled = false;

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // ESRCH: the group is gone already
  }
}

function track(pid: number): void {
  if (!exitHookInstalled) {
    // Detached children are not ours to leave behind when the worker exits.
    process.on('exit', () => running.forEach(killGroup));
    exitHookInstalled = true;
  }
  running.add(pid);
}

async function runCommand(file: string, args: readonly string[], env: Record<string, string>, cwd: string, copy: MessageCopy, timeoutMs: number): Promise<Run> {
  const child = execa(file, args, {
    shell: false,
    extendEnv: false,
    env,
    cwd,
    // Own session and process group, so the time limit can kill grandchildren too.
    detached: true,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
    // We read the output ourselves (bounded); execa's buffering would kill the command past maxBuffer.
    buffer: false,
    encoding: 'buffer',
    reject: false,
    verbose: 'none',
  });

  const kept: Buffer[] = [];
  let keptBytes = 0;
  const keep = (chunk: Buffer | string): void => {
    if (keptBytes >= OUTPUT_LIMIT) return;
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    const part = Buffer.from(b.subarray(0, OUTPUT_LIMIT - keptBytes));
    kept.push(part);
    keptBytes += part.length;
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);

  let flushed = false;
  let writeError: NodeJS.ErrnoException | undefined;
  const stdin = child.stdin;
  if (stdin) {
    stdin.on('error', (err: NodeJS.ErrnoException) => {
      writeError ??= err;
    });
    stdin.on('finish', () => {
      flushed = true;
    });
    stdin.write(copy.header);
    stdin.end(copy.body);
  }

  const pid = child.pid;
  if (pid !== undefined) track(pid);
  let timedOut = false;
  let giveUp: (() => void) | undefined;
  const gaveUp = new Promise<'gave-up'>((resolve) => {
    giveUp = () => resolve('gave-up');
  });
  let killTimer: NodeJS.Timeout | undefined;
  let outputTimer: NodeJS.Timeout | undefined;
  const limitTimer = setTimeout(() => {
    timedOut = true;
    if (pid !== undefined) killGroup(pid);
    killTimer = setTimeout(() => giveUp?.(), KILL_GRACE_MS);
  }, timeoutMs);
  child.on('exit', () => {
    clearTimeout(limitTimer);
    if (pid !== undefined) running.delete(pid);
    // A background process of the command may hold stdout open; stop waiting for its EOF.
    outputTimer = setTimeout(() => {
      child.stdout?.destroy();
      child.stderr?.destroy();
    }, OUTPUT_GRACE_MS);
  });

  try {
    const result = await Promise.race([child, gaveUp]);
    const output = Buffer.concat(kept).toString('utf8');
    if (timedOut || result === 'gave-up') return { kind: 'timeout', output };
    if (result.signal !== undefined) return { kind: 'signal', signal: result.signal, output };
    if (result.exitCode !== undefined) {
      const unread = !flushed || (writeError !== undefined && UNREAD_CODES.has(writeError.code ?? ''));
      const otherError = writeError !== undefined && !UNREAD_CODES.has(writeError.code ?? '') ? writeError : undefined;
      return { kind: 'exit', code: result.exitCode, output, unread, ...(otherError ? { writeError: otherError } : {}) };
    }
    return { kind: 'not-started', error: result.cause ?? result };
  } finally {
    clearTimeout(limitTimer);
    clearTimeout(killTimer);
    clearTimeout(outputTimer);
  }
}

function statusOfRun(run: Run, what: string, o: PipeOptions): Status {
  switch (run.kind) {
    case 'not-started':
      return statusFromError(run.error, `cannot run ${what}`);
    case 'timeout':
      return withOutput(status('4.3.0', `${what} timed out after ${o.timeoutMs / 1000} s`), run.output);
    case 'signal':
      return withOutput(statusFromSignal(run.signal, what), run.output);
    case 'exit': {
      const mapped = statusFromExit(run.code, what, o.unknownExit ?? 'temporary');
      if (isSuccess(mapped)) {
        // Postfix: exit 0 decides, unless writing failed for a reason other than the command closing its input.
        if (run.writeError !== undefined) return statusFromError(run.writeError, `error writing the message to ${what}`);
        const notes = [run.code === 99 ? 'exit 99: qmail "success, stop"' : '', run.unread ? 'it did not read the whole message' : ''].filter((n) => n !== '');
        return ok(`delivered to ${what}${notes.map((n) => ` (${n})`).join('')}`);
      }
      // local(8): a failing command's output that begins with an enhanced status code takes precedence.
      const m = DSN_RE.exec(run.output);
      if (m !== null && m[1] !== '2') return withOutput(status(m[0] as EnhancedCode, mapped.text), run.output.slice(m[0].length));
      return withOutput(mapped, run.output);
    }
  }
}

function withOutput(s: Status, output: string): Status {
  const said = printable(output, TEXT_LIMIT);
  return said === '' ? s : status(s.code, `${s.text}: ${said}`, s.reply);
}

/** One line of printable ASCII: control characters and whitespace runs become one space, other bytes '?'. */
function printable(s: string, limit: number): string {
  const line = s.replace(/[\s\p{Cc}]+/gu, ' ').replace(/[^\x20-\x7e]/g, '?').trim();
  return line.length > limit ? `${line.slice(0, limit)}...` : line;
}
