// A real Mailman 3 core (Debian package "mailman3") for a test: the list
// manager mailprocd hands list posts to over LMTP.
//
// Exports startMailman() → TestMailman (lmtpPort, createList, posts, logs,
// halt/resume for "Mailman is down, then back", stop).
//
// Everything lives under one mkdtemp directory: mailman.cfg (written from
// scratch; the system's /etc/mailman3/mailman.cfg is not read), and var/ with
// the SQLite database, queues, locks and logs. Only four runners start: lmtp
// (on 127.0.0.1 and a free port), in, pipeline and out; the REST API, the
// task runner (Mailman's own cron) and the rest are off, and mail handling
// needs none of them. The out runner delivers to 127.0.0.1 only: the test's
// SMTP sink (opts.smtpPort) or a loopback port nothing listens on, so Mailman
// keeps undeliverable list mail in its retry queue. The DMARC public-suffix
// URL points at loopback too, so nothing can contact another address.
//
// Privileges: the `mailman` command refuses to run as root (it wants
// --run-as-root), and Mailman has no reason to be root here, so when the
// tests run as root every Mailman process runs as the Debian package's user
// "list" (setpriv), which owns the temp directory.
//
// The master is spawned directly (not with `mailman start`, which forks and
// loses the PID) as the leader of a new process group; it forks the runners
// into that group. Stopping sends SIGTERM to the master (it stops its runners
// and removes its lock), then SIGKILL to the group if anything is left after
// 30 s. Only this process group is signalled, never processes found by name.
//
// How it fails: startMailman() rejects, with Mailman's logs and leaving
// nothing running, when the master exits or the LMTP runner does not greet
// within READY_MS (Mailman's Python runners take ~2 s each to import on an
// idle machine and ten times that on a loaded 2-core one; the deadline is a
// hang detector, not a budget). createList() rejects with the command's output.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestContext } from 'node:test';
import { findProgram, requireProgram } from './components.js';
import { freePort } from './postfix.js';
import { ensureSystemUser, type SystemUser } from './users.js';

export interface MailmanOptions {
  /** Where the out runner delivers list mail: a loopback SMTP sink's port. Default: a loopback port nothing listens on. */
  readonly smtpPort?: number;
}

export interface TestMailman {
  readonly dir: string;
  readonly configFile: string;
  /** The LMTP runner's port on 127.0.0.1 (the same after resume()). */
  readonly lmtpPort: number;
  /** `mailman create` (the domain is registered on the way), then `mailman addmembers` without welcome mail. */
  createList(fqdnListname: string, members?: readonly string[]): Promise<void>;
  /** Posts to the list that Mailman's LMTP runner has queued so far (see countPosts). Exact once the sender has its 250. */
  posts(fqdnListname: string): number;
  /** Mailman's main log and the end of its LMTP/SMTP log, for diagnostics. */
  logs(): string;
  /** Stops the master and its runners, keeping the directory: the LMTP port refuses connections until resume(). */
  halt(): Promise<void>;
  /** Starts a halted Mailman again with the same state and port; resolves when LMTP greets. */
  resume(): Promise<void>;
  /** Stops everything this helper started and removes the directory. */
  stop(): Promise<void>;
}

/** Debian's layout: the master and runner programs are not on PATH. */
const BIN_DIR = '/usr/lib/mailman3/bin';
const RUNNERS_OFF = ['rest', 'archive', 'bounces', 'command', 'digest', 'nntp', 'retry', 'task', 'virgin'];
const READY_MS = 180_000;
const STOP_MS = 30_000;
const COMMAND_MS = 120_000;
const PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

function mailmanCfg(o: { varDir: string; lmtpPort: number; smtpPort: number }): string {
  return `# Written by test/helpers/mailman.ts for one test run.
[mailman]
layout: testrun
site_owner: postmaster@mailman.test

[paths.testrun]
var_dir: ${o.varDir}
bin_dir: ${BIN_DIR}
pid_file: $var_dir/master.pid

[database]
class: mailman.database.sqlite.SQLiteDatabase
url: sqlite:///$DATA_DIR/mailman.db

[mta]
# No alias files: nothing routes to Mailman but the test's LMTP client.
incoming: mailman.mta.null.NullMTA
outgoing: mailman.mta.deliver.deliver
smtp_host: 127.0.0.1
smtp_port: ${o.smtpPort}
lmtp_host: 127.0.0.1
lmtp_port: ${o.lmtpPort}

[webservice]
# The REST runner is not started (below); loopback in case a command reads this.
hostname: 127.0.0.1

[dmarc]
org_domain_data_url: http://127.0.0.1:9/public_suffix_list.dat

[logging.smtp]
# The LMTP runner's per-recipient lines, which posts() counts, are debug lines.
level: debug
format: %(asctime)s (%(process)d) %(message)s
datefmt: %Y-%m-%dT%H:%M:%S

${RUNNERS_OFF.map((r) => `[runner.${r}]\nstart: no\n`).join('\n')}`;
}

/**
 * Counts the posts to `list` in the LMTP runner's log. Its handle_DATA logs,
 * for each recipient, "<msgid> to: ADDR, list: …, sub: None, …" and, after it
 * has queued the message into var/queue/in, "<msgid> subaddress: None, queue:
 * in"; both are written (and flushed) before it answers 250. So the count is
 * exact as soon as the sender has its reply, and a duplicate delivery would
 * show at once. Mailman's other records do not do that: queue files move on
 * (in → pipeline → out → gone) within seconds, and the archive and the list's
 * post_id count only what passed moderation, seconds later. Message-Ids with
 * spaces are not counted (the pattern takes one token); the tests' have none.
 * Lines of message data are logged as "DATA readline: b'…'", which the
 * anchored pattern cannot match, so a message cannot forge a count.
 */
export function countPosts(smtpLog: string, list: string): number {
  const want = list.toLowerCase();
  const line = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d \((\d+)\) (\S+) (?:to: (\S+), list: \S+, sub: (\S+), dom: \S+|subaddress: (\S+), queue: (\S+))$/;
  // The runner's last "to:" line per process: the queue line follows it (handle_DATA does not yield in between).
  const pending = new Map<string, { msgid: string; to: string; sub: string }>();
  let n = 0;
  for (const text of smtpLog.split('\n')) {
    const m = line.exec(text);
    if (m === null) continue;
    const [, pid = '', msgid = '', to, sub, qsub, queue] = m;
    if (to !== undefined) {
      pending.set(pid, { msgid, to, sub: sub ?? '' });
      continue;
    }
    const p = pending.get(pid);
    pending.delete(pid);
    if (p !== undefined && p.msgid === msgid && p.to === want && p.sub === 'None' && qsub === 'None' && queue === 'in') n++;
  }
  return n;
}

interface ExecResult {
  readonly code: number;
  readonly output: string;
}

/** Pids in the process group that are still alive (not zombies: an init that does not reap must not make a stop wait). */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** A running Mailman core, or undefined with the test skipped (failed under CI=true) when mailman3 is not installed. */
export async function startMailman(t: TestContext, opts: MailmanOptions = {}): Promise<TestMailman | undefined> {
  if (requireProgram(t, 'mailman', 'mailman3') === undefined) return undefined;
  const master = join(BIN_DIR, 'master');
  if (!existsSync(master)) {
    const why = `${master} not found: install the Debian package "mailman3"`;
    if (process.env.CI === 'true') throw new Error(why);
    t.skip(why);
    return undefined;
  }
  let user: SystemUser | undefined;
  let setpriv: string | undefined;
  if (process.getuid?.() === 0) {
    setpriv = requireProgram(t, 'setpriv', 'util-linux');
    if (setpriv === undefined) return undefined;
    user = ensureSystemUser('list');
  }

  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-mailman-'));
  chmodSync(dir, 0o755);
  if (user !== undefined) chownSync(dir, user.uid, user.gid);
  const varDir = join(dir, 'var');
  const configFile = join(dir, 'mailman.cfg');
  const lmtpPort = await freePort();
  // Nothing listens there unless the test gives its sink: undeliverable list mail stays in Mailman's retry queue.
  const smtpPort = opts.smtpPort ?? await freePort();
  const writeOwned = (path: string, text: string): void => {
    writeFileSync(path, text, { mode: 0o644 });
    if (user !== undefined) chownSync(path, user.uid, user.gid);
  };
  writeOwned(configFile, mailmanCfg({ varDir, lmtpPort, smtpPort }));

  // Runs a program as Mailman's user (itself when the tests do not run as root).
  const asMailman = (program: string, args: readonly string[]): [string, string[]] =>
    (setpriv !== undefined && user !== undefined
      ? [setpriv, [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', program, ...args]]
      : [program, [...args]]);
  const env = { PATH, HOME: dir, LANG: 'C.UTF-8' };

  const mailman = (args: readonly string[]): Promise<ExecResult> => new Promise((resolve) => {
    const [file, argv] = asMailman(findProgram('mailman') ?? 'mailman', ['-C', configFile, ...args]);
    execFile(file, argv, { env, cwd: dir, timeout: COMMAND_MS, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; killed?: boolean }) | null;
      const code = e === null ? 0 : typeof e.code === 'number' ? e.code : -1;
      resolve({ code, output: `${stdout}${stderr}${e?.killed === true ? `\n(killed after ${COMMAND_MS} ms)` : ''}` });
    });
  });

  const readLog = (name: string): string => {
    try {
      return readFileSync(join(varDir, 'logs', name), 'utf8');
    } catch {
      return '';
    }
  };

  let child: ChildProcess | undefined;
  let pgid: number | undefined;
  let exited: Promise<void> = Promise.resolve();
  let exit: string | undefined;
  let output = '';

  // Safety net if the test process dies without stop(): take this instance down with it.
  const onExit = (): void => {
    if (pgid !== undefined && groupMembers(pgid).length > 0) process.kill(-pgid, 'SIGKILL');
  };
  process.on('exit', onExit);

  const logs = (): string =>
    `--- mailman.log ---\n${readLog('mailman.log')}\n--- smtp.log (end) ---\n${readLog('smtp.log').split('\n').slice(-40).join('\n')}\n--- master output ---\n${output}`;

  const halt = async (): Promise<void> => {
    const group = pgid;
    if (group === undefined) return;
    if (exit === undefined && child?.pid !== undefined) process.kill(child.pid, 'SIGTERM');
    const deadline = Date.now() + STOP_MS;
    await Promise.race([exited, sleep(STOP_MS, undefined, { ref: false })]);
    while (groupMembers(group).length > 0 && Date.now() < deadline) await sleep(100);
    if (groupMembers(group).length > 0) {
      process.kill(-group, 'SIGKILL');
      const hard = Date.now() + 10_000;
      while (groupMembers(group).length > 0 && Date.now() < hard) await sleep(50);
    }
    await exited;
    pgid = undefined;
    child = undefined;
  };

  const greets = (): Promise<boolean> => new Promise((resolve) => {
    const s = connect(lmtpPort, '127.0.0.1');
    let data = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 5_000);
    s.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      if (data.includes('\n')) {
        s.write('QUIT\r\n');
        done(/^220 .*GNU Mailman LMTP runner/.test(data));
      }
    });
    s.on('error', () => done(false));
  });

  const resume = async (): Promise<void> => {
    if (pgid !== undefined) return;
    exit = undefined;
    output = '';
    // --force: a lock left by a master that was killed is removed when its pid is gone.
    const [file, argv] = asMailman(master, ['-C', configFile, '--force']);
    const c = spawn(file, argv, { env, cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    pgid = c.pid;
    c.stdout?.on('data', (d: Buffer) => { output += d.toString('utf8'); });
    c.stderr?.on('data', (d: Buffer) => { output += d.toString('utf8'); });
    exited = new Promise<void>((resolve) => {
      c.once('exit', (code, signal) => { exit = signal ?? String(code); resolve(); });
      c.once('error', (err) => { exit = err.message; resolve(); });
    });
    const deadline = Date.now() + READY_MS;
    for (;;) {
      if (exit !== undefined) {
        await halt();
        throw new Error(`Mailman's master exited (${exit}) before its LMTP runner greeted on 127.0.0.1:${lmtpPort}:\n${logs()}`);
      }
      if (await greets()) return;
      if (Date.now() > deadline) {
        await halt();
        throw new Error(`Mailman's LMTP runner did not greet on 127.0.0.1:${lmtpPort} within ${READY_MS} ms:\n${logs()}`);
      }
      await sleep(200);
    }
  };

  const stop = async (): Promise<void> => {
    await halt();
    process.removeListener('exit', onExit);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await resume();
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    dir, configFile, lmtpPort, logs, halt, resume, stop,
    async createList(fqdnListname, members = []) {
      const created = await mailman(['create', '-N', fqdnListname]);
      if (created.code !== 0) throw new Error(`mailman create ${fqdnListname} failed (exit ${created.code}):\n${created.output}`);
      if (members.length === 0) return;
      const file = join(dir, `members-${fqdnListname}.txt`);
      writeOwned(file, members.map((m) => `${m}\n`).join(''));
      const added = await mailman(['addmembers', '--no-welcome-msg', file, fqdnListname]);
      if (added.code !== 0) throw new Error(`mailman addmembers ${fqdnListname} failed (exit ${added.code}):\n${added.output}`);
    },
    posts: (fqdnListname) => countPosts(readLog('smtp.log'), fqdnListname),
  };
}
