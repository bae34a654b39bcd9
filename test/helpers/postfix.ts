// Runs a throwaway, loopback-only Postfix instance in front of a mailprocd
// LMTP socket, the way an administrator wires it (docs/postfix.md), so the
// end-to-end tests send real mail through a real MTA. With smtpRelay it
// hands the mail to mailprocd's SMTP listener instead, through Postfix's
// smtp(8) client (with its TLS security level: the STARTTLS tests).
//
// Exports startPostfix() → TestPostfix (port, maillog, queue ids, flush,
// stop) and swaks() (the administrator's SMTP test client).
//
// Everything lives under one mkdtemp directory: config_directory (main.cf,
// master.cf written from scratch), queue_directory, data_directory and the
// maillog (postlogd, no syslog). Every master.cf service runs unchrooted so
// the LMTP socket path outside the queue directory is reachable. Needs root:
// `postfix start` runs master as root, which drops to mail_owner (postfix).
//
// How it fails: a Postfix that does not pass `postfix check`, does not start
// or does not answer 220 on its port makes startPostfix() reject with the
// maillog in the message (and leaves nothing running). Every external command
// and every wait is bounded. stop() stops only this instance's master (by the
// pid in its own pid file), never processes found by name.
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PostfixOptions {
  /**
   * mailprocd's LMTP unix socket as Postfix names it: an absolute path
   * (TestDaemon.socket), or with lmtpChroot a path relative to the queue
   * directory such as "private/mailprocd-lmtp".
   */
  readonly lmtpSocket: string;
  /** Run lmtp(8) chrooted into the queue directory, as Debian's stock master.cf does. */
  readonly lmtpChroot?: boolean;
  /** mailprocd's policy socket; adds check_policy_service to smtpd_recipient_restrictions. */
  readonly policySocket?: string;
  /** Domains handed to mailprocd (virtual_mailbox_domains). Default: example.test. */
  readonly domains?: readonly string[];
  /** Addresses Postfix accepts at RCPT (virtual_mailbox_maps). Default: alice and bob @example.test. */
  readonly recipients?: readonly string[];
  /**
   * Deliver to mailprocd's SMTP listener on this loopback port with
   * Postfix's smtp client (virtual_transport = smtp:[127.0.0.1]:PORT)
   * instead of over LMTP; tls is smtp_tls_security_level, and the
   * client logs its TLS sessions (smtp_tls_loglevel = 1).
   */
  readonly smtpRelay?: { readonly port: number; readonly tls: 'none' | 'may' | 'encrypt' };
  /** Extra main.cf lines ("name = value"); a setting named here replaces the helper's. */
  readonly extraMainCf?: string;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface TestPostfix {
  readonly dir: string;
  readonly configDir: string;
  readonly queueDir: string;
  readonly smtpPort: number;
  /** The whole maillog so far. */
  logs(): string;
  /** Polls the maillog until a line matches (rejects after timeoutMs, with the maillog). */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  /** The queue id cleanup(8) gave the message with this Message-Id (without <>), if seen yet. */
  queueIdOf(messageId: string): string | undefined;
  /** Waits for cleanup(8) to log the message; its queue id. */
  waitForQueueId(messageId: string, timeoutMs?: number): Promise<string>;
  /** Every maillog line about a queue id. */
  linesOf(queueId: string): string[];
  /** Queue ids still in the queue (postqueue -j). */
  queueIds(): Promise<string[]>;
  /** postqueue -f: try the deferred mail now. */
  flush(): Promise<void>;
  /** Stops this instance (postfix stop, then abort, then SIGKILL of its master pid) and removes the directory. */
  stop(): Promise<void>;
}

export const POSTFIX_HOSTNAME = 'mx.postfix.test';
const COMMAND_TIMEOUT_MS = 30_000;

/** Runs a command without blocking the event loop (the daemon's log pipe must keep draining). */
export function run(file: string, args: readonly string[], timeoutMs = COMMAND_TIMEOUT_MS): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(file, [...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string; killed?: boolean }) | null;
      const code = e === null ? 0 : typeof e.code === 'number' ? e.code : -1;
      const killed = e?.killed === true ? `\n(killed after ${timeoutMs} ms)` : '';
      const spawnErr = e !== null && typeof e.code === 'string' ? `\n(${e.message})` : '';
      resolve({ code, stdout: String(stdout), stderr: String(stderr) + killed + spawnErr });
    });
  });
}

/** A loopback TCP port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once the port greets with 220 (an smtpd, not just a listener). */
function waitForBanner(port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    const t = setTimeout(() => { s.destroy(); reject(new Error(`no SMTP banner on 127.0.0.1:${port} within ${timeoutMs} ms (got ${JSON.stringify(data)})`)); }, timeoutMs);
    s.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      if (data.includes('\n')) {
        clearTimeout(t);
        s.end('QUIT\r\n');
        if (data.startsWith('220')) resolve(data.trim());
        else reject(new Error(`unexpected banner on 127.0.0.1:${port}: ${data.trim()}`));
      }
    });
    s.on('error', (err) => { clearTimeout(t); reject(err); });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The process exists and is not a zombie (an init that does not reap must not make stop() wait). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

async function systemDefault(name: string): Promise<string> {
  const r = await run('postconf', ['-dh', name]);
  const v = r.stdout.trim();
  if (r.code !== 0 || v === '') throw new Error(`postconf -dh ${name} failed: ${r.stderr}`);
  return v;
}

export function mainCf(o: {
  dir: string; configDir: string; queueDir: string; dataDir: string; maillog: string;
  daemonDir: string; shlibDir: string; metaDir: string; commandDir: string;
  lmtpSocket: string; policySocket?: string; domains: readonly string[]; extra: string;
  smtpRelay?: { readonly port: number; readonly tls: string };
}): string {
  const lines = [
    '# Written by test/helpers/postfix.ts for one test run; see docs/postfix.md.',
    'compatibility_level = 3.6',
    `config_directory = ${o.configDir}`,
    `queue_directory = ${o.queueDir}`,
    `data_directory = ${o.dataDir}`,
    `daemon_directory = ${o.daemonDir}`,
    `shlib_directory = ${o.shlibDir}`,
    `meta_directory = ${o.metaDir}`,
    `command_directory = ${o.commandDir}`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    'import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME',
    // Logging through postlogd into a file: no syslog in the test environment.
    `maillog_file = ${o.maillog}`,
    `maillog_file_prefixes = ${o.dir}`,
    // Loopback only.
    `myhostname = ${POSTFIX_HOSTNAME}`,
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    // No local(8) domains, aliases or biff: only mailprocd delivers.
    'mydestination =',
    'alias_maps =',
    'alias_database =',
    'biff = no',
    // What the administrator adds (docs/postfix.md).
    `virtual_mailbox_domains = ${o.domains.join(', ')}`,
    `virtual_mailbox_maps = hash:${o.configDir}/mailprocd_recipients`,
    o.smtpRelay === undefined ? `virtual_transport = lmtp:unix:${o.lmtpSocket}` : `virtual_transport = smtp:[127.0.0.1]:${o.smtpRelay.port}`,
    ...(o.smtpRelay === undefined ? [] : [`smtp_tls_security_level = ${o.smtpRelay.tls}`, 'smtp_tls_loglevel = 1']),
    'smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination',
    `smtpd_recipient_restrictions =${o.policySocket !== undefined ? ` check_policy_service unix:${o.policySocket}` : ''}`,
    // Test only: nothing leaves this machine (bounces to remote senders fail at once),
    // and deferred mail is retried within seconds.
    'default_transport = error:5.7.1 outbound mail is disabled in this test instance',
    'relay_transport = error:5.7.1 outbound mail is disabled in this test instance',
    'queue_run_delay = 2s',
    'minimal_backoff_time = 2s',
    'maximal_backoff_time = 4s',
  ];
  // extra's settings replace ours (rather than follow them, which Postfix warns about).
  const overridden = new Set([...o.extra.matchAll(/^\s*([a-z0-9_]+)\s*=/gm)].map((m) => m[1]));
  const kept = lines.filter((l) => !overridden.has(/^([a-z0-9_]+) =/.exec(l)?.[1] ?? ''));
  return `${[...kept, o.extra].join('\n')}\n`;
}

// Every service unchrooted (5th column "n"): the lmtp client must reach the
// socket by its path outside the queue directory. With lmtpChroot, lmtp(8)
// alone is chrooted (Debian's default for it) and finds the socket inside.
// tlsmgr (TLS entropy and session cache) only where a TLS client needs it:
// without it Postfix 3.7's smtp(8) disables TLS ("no entropy for TLS key
// generation").
function masterCf(smtpPort: number, lmtpChroot: boolean, tlsmgr: boolean): string {
  return `# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:${smtpPort} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       ${lmtpChroot ? 'y' : 'n'}       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
${tlsmgr ? 'tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n' : ''}`;
}

/**
 * Starts a throwaway Postfix that accepts mail for opts.domains on a free
 * loopback port and hands it to mailprocd over LMTP. Must run as root.
 */
export async function startPostfix(opts: PostfixOptions): Promise<TestPostfix> {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-postfix-'));
  // Postfix's processes run as user postfix: they must traverse to the queue, data and maillog.
  chmodSync(dir, 0o755);
  const configDir = join(dir, 'etc');
  const queueDir = join(dir, 'queue');
  const dataDir = join(dir, 'data');
  const maillog = join(dir, 'maillog');
  mkdirSync(configDir, { mode: 0o755 });
  mkdirSync(queueDir, { mode: 0o755 });
  mkdirSync(dataDir, { mode: 0o700 });
  const pw = /^postfix:[^:]*:(\d+):(\d+):/m.exec(readFileSync('/etc/passwd', 'utf8'));
  if (pw === null) throw new Error('no user "postfix" in /etc/passwd: is the Debian package postfix installed?');
  chownSync(dataDir, Number(pw[1]), Number(pw[2]));

  const logs = (): string => (existsSync(maillog) ? readFileSync(maillog, 'utf8') : '');
  const pidFile = join(queueDir, 'pid', 'master.pid');
  const masterPid = (): number | undefined => {
    try {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      return Number.isInteger(pid) && pid > 1 ? pid : undefined;
    } catch {
      return undefined;
    }
  };
  let lastPid: number | undefined;
  // Safety net if the test process dies without stop(): take this instance's master down with it.
  const onExit = (): void => {
    if (lastPid !== undefined && alive(lastPid)) process.kill(lastPid, 'SIGKILL');
  };
  process.on('exit', onExit);

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const pid = masterPid() ?? lastPid;
    if (pid !== undefined && alive(pid)) {
      // postfix stop waits up to 5 s itself, then kills the master's process group.
      const r = await run('postfix', ['-c', configDir, 'stop']);
      if (r.code !== 0 && alive(pid)) await run('postfix', ['-c', configDir, 'abort']);
      const deadline = Date.now() + 10_000;
      while (alive(pid) && Date.now() < deadline) await sleep(50);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
      const hard = Date.now() + 5_000;
      while (alive(pid) && Date.now() < hard) await sleep(50);
    }
    process.removeListener('exit', onExit);
    rmSync(dir, { recursive: true, force: true });
  };

  const fail = async (what: string, detail: string): Promise<never> => {
    const log = logs();
    await stop();
    throw new Error(`Postfix ${what}:\n${detail}\n--- maillog ---\n${log}`);
  };

  try {
    // The installed programs' own locations (Debian: /usr/lib/postfix/sbin, …).
    const daemonDir = await systemDefault('daemon_directory');
    const shlibDir = await systemDefault('shlib_directory');
    const metaDir = await systemDefault('meta_directory');
    const commandDir = await systemDefault('command_directory');
    const domains = opts.domains ?? ['example.test'];
    const recipients = opts.recipients ?? ['alice@example.test', 'bob@example.test'];
    writeFileSync(join(configDir, 'main.cf'), mainCf({
      dir, configDir, queueDir, dataDir, maillog,
      daemonDir, shlibDir, metaDir, commandDir,
      lmtpSocket: opts.lmtpSocket, ...(opts.policySocket !== undefined ? { policySocket: opts.policySocket } : {}),
      domains, extra: opts.extraMainCf ?? '', ...(opts.smtpRelay !== undefined ? { smtpRelay: opts.smtpRelay } : {}),
    }));
    // Postfix re-reads a main.cf modified within the last second until it is
    // older (in case it is still being written): ~2 s for every command. It is complete.
    const past = new Date(Date.now() - 60_000);
    utimesSync(join(configDir, 'main.cf'), past, past);
    // The right-hand side is not used with an LMTP virtual_transport; "OK" by convention.
    writeFileSync(join(configDir, 'mailprocd_recipients'), recipients.map((r) => `${r} OK\n`).join(''));
    const postmap = await run('postmap', ['-c', configDir, `hash:${join(configDir, 'mailprocd_recipients')}`]);
    if (postmap.code !== 0) return await fail('postmap failed', postmap.stdout + postmap.stderr);

    // The port is free when we look; another process may take it before smtpd binds: try a few.
    for (let attempt = 1; ; attempt++) {
      const smtpPort = await freePort();
      writeFileSync(join(configDir, 'master.cf'), masterCf(smtpPort, opts.lmtpChroot === true, opts.smtpRelay !== undefined));
      if (attempt === 1) {
        const check = await run('postfix', ['-c', configDir, 'check']);
        if (check.code !== 0) return await fail(`check failed (exit ${check.code})`, check.stdout + check.stderr);
      }
      const start = await run('postfix', ['-c', configDir, 'start']);
      lastPid = masterPid();
      if (start.code !== 0) {
        if (attempt < 3 && /address already in use/i.test(logs())) {
          if (lastPid !== undefined && alive(lastPid)) await run('postfix', ['-c', configDir, 'abort']);
          continue;
        }
        return await fail(`did not start (postfix start exit ${start.code})`, start.stdout + start.stderr);
      }
      try {
        await waitForBanner(smtpPort, 10_000);
      } catch (err) {
        return await fail('does not answer on its SMTP port', (err as Error).message);
      }
      return handle(smtpPort);
    }
  } catch (err) {
    await stop();
    throw err;
  }

  function handle(smtpPort: number): TestPostfix {
    const waitForLog = async (re: RegExp, timeoutMs = 30_000): Promise<string> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const line = logs().split('\n').find((l) => re.test(l));
        if (line !== undefined) return line;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for maillog ${re}; maillog:\n${logs()}`);
        await sleep(100);
      }
    };
    const queueIdOf = (messageId: string): string | undefined => {
      const m = new RegExp(`cleanup\\[\\d+\\]: ([0-9A-Za-z]+): message-id=<${escape(messageId)}>`).exec(logs());
      return m?.[1];
    };
    return {
      dir, configDir, queueDir, smtpPort, logs, waitForLog, queueIdOf,
      async waitForQueueId(messageId, timeoutMs = 30_000) {
        const line = await waitForLog(new RegExp(`cleanup\\[\\d+\\]: [0-9A-Za-z]+: message-id=<${escape(messageId)}>`), timeoutMs);
        return /: ([0-9A-Za-z]+): message-id=/.exec(line)?.[1] ?? '';
      },
      linesOf(queueId) {
        return logs().split('\n').filter((l) => l.includes(` ${queueId}: `));
      },
      async queueIds() {
        const r = await run('postqueue', ['-c', configDir, '-j']);
        if (r.code !== 0) throw new Error(`postqueue -j failed: ${r.stderr}`);
        return r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => (JSON.parse(l) as { queue_id: string }).queue_id);
      },
      async flush() {
        const r = await run('postqueue', ['-c', configDir, '-f']);
        if (r.code !== 0) throw new Error(`postqueue -f failed: ${r.stderr}`);
      },
      stop,
    };
  }
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export interface SwaksOptions {
  readonly port: number;
  readonly to: readonly string[];
  readonly from: string;
  readonly messageId: string;
  readonly subject?: string;
  readonly body?: string;
}

export interface SwaksResult extends ExecResult {
  /** Postfix's queue id from "250 2.0.0 Ok: queued as ID", when the message was accepted. */
  readonly queueId?: string;
}

/** Sends one message with swaks (exit 0: accepted for at least one recipient; 24: no RCPT accepted). */
export async function swaks(o: SwaksOptions): Promise<SwaksResult> {
  const r = await run('swaks', [
    '--server', `127.0.0.1:${o.port}`,
    '--helo', 'client.test',
    '--from', o.from,
    '--to', o.to.join(','),
    '--header', `Subject: ${o.subject ?? 'test'}`,
    '--header', `Message-Id: <${o.messageId}>`,
    '--body', o.body ?? 'sent through Postfix\n',
    '--timeout', '20',
  ]);
  const queueId = /^<[-~]\s+250 [\d.]+ Ok: queued as ([0-9A-Za-z]+)/m.exec(r.stdout)?.[1];
  return { ...r, ...(queueId !== undefined ? { queueId } : {}) };
}
