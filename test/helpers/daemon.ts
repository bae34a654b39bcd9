// Starts a real mailprocd (the compiled CLI) in a child process on a temp
// directory with its own tables, loopback ports chosen by the kernel and a
// unix LMTP socket; collects its log lines; stops it by PID. Used by the
// integration tests. Cleans up its directory on stop().
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

export const DAEMON = join(process.cwd(), 'dist/src/cli/mailprocd.js');
export const MAILPROC = join(process.cwd(), 'dist/src/cli/mailproc.js');

export const DEFAULT_RULES = (mail: string): string => `
alice@example.test  maildir:${mail}/\${user}/Maildir/
bob@example.test    maildir:${mail}/\${user}/Maildir/  folder=\${extension}  extension=?*  stop
bob@example.test    maildir:${mail}/\${user}/Maildir/
carol@example.test  mbox:${mail}/\${user}/mbox
small@example.test  maildir:${mail}/\${user}/Maildir/  maxsize=1k
`;

export interface DaemonOptions {
  /** Contents of the rules source; \${MAIL} is replaced by the mail root. */
  readonly rules?: string;
  readonly uid?: string;
  readonly gid?: string;
  readonly lists?: string;
  /** Contents of the spam table source. */
  readonly spam?: string;
  /** Extra config merged over the test defaults. */
  readonly config?: Record<string, unknown>;
  /** Reuse a directory (restart after a kill). */
  readonly dir?: string;
  /** Run the daemon itself as this user (the directory must be theirs). */
  readonly runAs?: { readonly uid: number; readonly gid: number };
  /** Added to the daemon's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** The daemon's stderr is appended to this file (not a pipe); its lines are read from there. */
  readonly stderrFile?: string;
  /** Log lines are also read from this file (log.file), followed by name: a new file there is read from its start. */
  readonly logFile?: string;
}

export interface TestDaemon {
  readonly dir: string;
  readonly mail: string;
  readonly socket: string;
  readonly lmtpPort: number;
  readonly smtpPort: number;
  readonly policyPort: number;
  readonly policySocket: string;
  /** The milter listener's TCP port and unix socket (test/helpers/milter-client.ts talks to them). */
  readonly milterPort: number;
  readonly milterSocket: string;
  /** The metrics endpoint's port, from its start line; 0 when metrics are off (the default here: give metrics.listen to turn them on). */
  readonly metricsPort: number;
  readonly configFile: string;
  readonly child: ChildProcess;
  readonly logs: string[];
  /** Resolves when a log line matching re appears (or rejects after timeoutMs, default 30 s: a hang detector, not a window). */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit; the directory is kept for a restart. */
  kill(): Promise<void>;
  /** Removes the directory (after stop or kill). */
  cleanup(): void;
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] = v !== null && typeof v === 'object' && !Array.isArray(v) && cur !== null && typeof cur === 'object' && !Array.isArray(cur)
      ? merge(cur as Record<string, unknown>, v as Record<string, unknown>)
      : v;
  }
  return out;
}

export function makeTestDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-test-'));
  // Workers run as nobody when the tests run as root: they must reach the mail root.
  chmodSync(dir, 0o755);
  return dir;
}

export async function startDaemon(opts: DaemonOptions = {}): Promise<TestDaemon> {
  const dir = opts.dir ?? makeTestDir();
  const mail = join(dir, 'mail');
  const sources = join(dir, 'db');
  mkdirSync(sources, { recursive: true });
  const socket = join(dir, 'lmtp.sock');
  writeFileSync(join(sources, 'rules'), (opts.rules ?? DEFAULT_RULES(mail)).replaceAll('${MAIL}', mail));
  writeFileSync(join(sources, 'uid'), opts.uid ?? '');
  writeFileSync(join(sources, 'gid'), opts.gid ?? '');
  writeFileSync(join(sources, 'lists'), opts.lists ?? '');
  writeFileSync(join(sources, 'spam'), opts.spam ?? '');
  const config = merge({
    hostname: 'mx.test.local',
    paths: { state: join(dir, 'state'), sources, mail },
    lmtp: { listen: [`unix:${socket}`, '127.0.0.1:0'] },
    smtp: { listen: ['127.0.0.1:0'] },
    policy: { listen: [`unix:${join(dir, 'policy.sock')}`, '127.0.0.1:0'] },
    // Never the embedded default's fixed 127.0.0.1:10042: two test daemons would collide there.
    milter: { listen: [`unix:${join(dir, 'milter.sock')}`, '127.0.0.1:0'] },
    delivery: { default: `maildir:${mail}/\${user}/Maildir/`, mbox_lock_delay: '50ms' },
    // Off unless a test turns it on (test/local/spam.test.ts): the other tests compare delivered bytes.
    spam: { enabled: false },
    // Off unless a test asks (test/metrics): the embedded default's fixed port would be shared by every daemon.
    metrics: { listen: [] },
    log: { level: 'debug' },
  }, opts.config ?? {});
  const configFile = join(dir, 'mailprocd.yaml');
  writeFileSync(configFile, stringify(config));

  if (opts.runAs) for (const f of [sources, join(sources, 'rules'), join(sources, 'uid'), join(sources, 'gid'), join(sources, 'lists'), join(sources, 'spam'), configFile]) chownSync(f, opts.runAs.uid, opts.runAs.gid);
  const stderrFd = opts.stderrFile !== undefined ? openSync(opts.stderrFile, 'a') : undefined;
  const child = spawn(process.execPath, [DAEMON, '--config', configFile], {
    stdio: ['ignore', 'pipe', stderrFd ?? 'pipe'],
    ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
    ...(opts.runAs ? { uid: opts.runAs.uid, gid: opts.runAs.gid, cwd: dir } : {}),
  });
  if (stderrFd !== undefined) closeSync(stderrFd);
  const logs: string[] = [];
  const watchers: { re: RegExp; resolve: (l: string) => void }[] = [];
  const lineReader = (): ((chunk: Buffer) => void) => {
    let partial = '';
    return (chunk) => {
      partial += chunk.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        logs.push(line);
        if (process.env.MAILPROC_TEST_LOG === '1') process.stderr.write(`[daemon] ${line}\n`);
        for (const w of [...watchers]) {
          if (w.re.test(line)) {
            watchers.splice(watchers.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    };
  };
  child.stdout?.on('data', lineReader());
  child.stderr?.on('data', lineReader());
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const followed = [opts.stderrFile, opts.logFile].filter((f): f is string => f !== undefined).map((path) => ({ path, ino: -1, offset: 0, read: lineReader() }));
  const poll = (): void => {
    for (const f of followed) {
      let st;
      try {
        st = statSync(f.path);
      } catch {
        continue;
      }
      if (st.ino !== f.ino || st.size < f.offset) Object.assign(f, { ino: st.ino, offset: 0 });
      if (st.size === f.offset) continue;
      const buf = Buffer.alloc(st.size - f.offset);
      const fd = openSync(f.path, 'r');
      try {
        f.offset += readSync(fd, buf, 0, buf.length, f.offset);
      } finally {
        closeSync(fd);
      }
      f.read(buf);
    }
  };
  if (followed.length > 0) {
    const follower = setInterval(poll, 20);
    void exited.then(() => { clearInterval(follower); poll(); });
  }

  const waitForLog = (re: RegExp, timeoutMs = 30_000): Promise<string> => {
    const seen = logs.find((l) => re.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for log ${re}; log so far:\n${logs.join('\n')}`)), timeoutMs);
      watchers.push({ re, resolve: (l) => { clearTimeout(t); resolve(l); } });
      void exited.then((code) => { clearTimeout(t); reject(new Error(`daemon exited (${code}) before log ${re}:\n${logs.join('\n')}`)); });
    });
  };
  // Start-up compiles tables and opens databases: a second when idle, several
  // on a loaded machine (10 s was once not enough). A daemon that does not
  // come up is killed, not left running to keep the test file alive.
  let ready: string;
  try {
    // " ready ", "<6>ready " when stderr is the journal, '"message":"ready ' in JSON.
    ready = await waitForLog(/[ >"]ready /, 90_000);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const ports = [...ready.matchAll(/(lmtp|smtp|policy|milter)=127\.0\.0\.1:(\d+)/g)];
  const portOf = (kind: string): number => Number(ports.find((m) => m[1] === kind)?.[2] ?? 0);
  const metricsLine = logs.map((l) => /metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(l)).find((m) => m !== null);
  return {
    dir, mail, socket, configFile, child, logs, waitForLog,
    lmtpPort: portOf('lmtp'),
    smtpPort: portOf('smtp'),
    policyPort: portOf('policy'),
    policySocket: join(dir, 'policy.sock'),
    milterPort: portOf('milter'),
    milterSocket: join(dir, 'milter.sock'),
    metricsPort: Number(metricsLine?.[1] ?? 0),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
