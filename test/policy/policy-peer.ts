// Test helpers for the policy endpoint: a raw policy client that writes
// exactly the bytes a test gives and reads `action=…` replies one at a time
// (with a timeout, so a missing reply fails instead of hanging), and a real
// policy service on loopback port 0 and a unix socket in a temp directory,
// with compiled lists tables, its own state database and a collected log;
// all of it closed and removed when the test ends.
import { connect, type Socket } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { openPolicyState, openState, type PolicyState } from '../../src/state/index.js';
import { compileTables, openTables, type Tables } from '../../src/db/index.js';
import { createLogger, type Logger } from '../../src/log.js';
import type { MetricsEvents } from '../../src/mail/metrics-events.js';
import { startPolicyService, type PolicyPlugin, type PolicyService } from '../../src/policy/index.js';
import { policyConfigSchema, stateConfigSchema, type PolicyConfigInput, type StateConfigInput } from '../../src/config/index.js';

export class PolicyClient {
  private buffer = Buffer.alloc(0);
  private readonly waiters: (() => void)[] = [];
  private ended = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  static open(target: { port: number; host?: string } | { path: string }): Promise<PolicyClient> {
    return new Promise((resolve, reject) => {
      const s = 'path' in target ? connect(target.path) : connect(target.port, target.host ?? '127.0.0.1');
      s.once('connect', () => resolve(new PolicyClient(s)));
      s.once('error', reject);
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** One byte per write, yielding now and then so the bytes arrive in separate reads. */
  async writeBytewise(data: string | Buffer): Promise<void> {
    const b = typeof data === 'string' ? Buffer.from(data) : data;
    for (let i = 0; i < b.length; i++) {
      this.socket.write(b.subarray(i, i + 1));
      await new Promise((r) => setImmediate(r));
    }
  }

  /** Half-closes: the server should still answer what it has. */
  end(): void {
    this.socket.end();
  }

  private async until<T>(got: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = got();
      if (v !== undefined) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what} within ${timeoutMs} ms; unread: ${JSON.stringify(this.buffer.toString())}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The next reply's action (the text after "action="); fails on anything that is not a whole reply. */
  reply(timeoutMs = 5_000): Promise<string> {
    return this.until(() => {
      const end = this.buffer.indexOf('\n\n');
      if (end < 0) {
        if (this.ended) throw new Error(`connection closed; unread: ${JSON.stringify(this.buffer.toString())}`);
        return undefined;
      }
      const block = this.buffer.subarray(0, end).toString('utf8');
      this.buffer = this.buffer.subarray(end + 2);
      const m = /^action=([^\n]*)$/.exec(block);
      if (!m) throw new Error(`not a reply: ${JSON.stringify(block)}`);
      return m[1] as string;
    }, timeoutMs, 'no reply');
  }

  /** Sends one request (attributes in order, then the blank line) and returns the reply's action. */
  request(attrs: Record<string, string>, timeoutMs?: number): Promise<string> {
    this.write(formatRequest(attrs));
    return this.reply(timeoutMs);
  }

  /** Waits for the server to close the connection; resolves with every byte it sent that was not read as a reply. */
  closed(timeoutMs = 5_000): Promise<Buffer> {
    return this.until(() => (this.ended ? this.buffer : undefined), timeoutMs, 'connection not closed');
  }

  get isClosed(): boolean {
    return this.ended;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function formatRequest(attrs: Record<string, string>): string {
  return `${Object.entries(attrs).map(([k, v]) => `${k}=${v}\n`).join('')}\n`;
}

/** What Postfix sends at RCPT (Postfix 3.x attribute set, trimmed of the TLS ones). */
export function rcptRequest(over: Record<string, string> = {}): Record<string, string> {
  return {
    request: 'smtpd_access_policy',
    protocol_state: 'RCPT',
    protocol_name: 'ESMTP',
    helo_name: 'mail.sender.test',
    queue_id: '',
    sender: 'carol@elsewhere.test',
    recipient: 'dev@example.test',
    recipient_count: '0',
    client_address: '192.0.2.10',
    client_name: 'mail.sender.test',
    reverse_client_name: 'mail.sender.test',
    instance: '1a2b.5f3c9e2a.8d1e4.0',
    sasl_method: '',
    sasl_username: '',
    sasl_sender: '',
    size: '0',
    ccert_subject: '',
    etrn_domain: '',
    stress: '',
    ...over,
  };
}

/** The embedded default's lists table (db/lists) plus an open and a moderated list. */
export const TEST_LISTS = `
dev@example.test       closed     subscribers=alice@example.test,bob@example.test
announce@example.test  open
mods@example.test      moderated  subscribers=alice@example.test
synced@example.test    closed
`;


export interface TestService {
  readonly service: PolicyService;
  readonly tables: Tables;
  readonly dir: string;
  readonly stateDir: string;
  /** Greylist, rate counters, user policies: in LMDB at stateDir, or on the engine `backend` named. */
  readonly policyState: PolicyState;
  readonly port: number;
  readonly socketPath: string;
  readonly logLines: string[];
  readonly log: Logger;
  /** A client on the TCP listener. */
  client(): Promise<PolicyClient>;
  /** Closes the service and removes its directory (done by itself when started with a TestContext). */
  close(): Promise<void>;
}

export interface TestServiceOptions {
  readonly lists?: string;
  /** Merged over the test listeners (127.0.0.1:0 and a unix socket in the temp directory). */
  readonly config?: PolicyConfigInput;
  readonly plugins?: Record<string, PolicyPlugin>;
  readonly now?: () => number;
  /** state.backend: "lmdb" (default) or a test engine's URL (test/helpers/engines.ts). */
  readonly backend?: string;
  /** The rest of the state: section (timeout, retry_interval). */
  readonly stateConfig?: Omit<StateConfigInput, 'backend'>;
  /** Counts what the service and its state engine report (src/metrics createMetrics). */
  readonly metrics?: MetricsEvents;
  /** Listen on this loopback address instead of 127.0.0.1 (the three-node tests give each node its own). */
  readonly host?: string;
  /** What the service reads the tables through (e.g. a reader that fails on demand); default the compiled tables themselves. */
  readonly wrapTables?: (tables: Tables) => Tables;
}

/** With a TestContext the service is closed when that test ends; without, the caller calls close(). */
export async function startTestService(t: TestContext | undefined, o: TestServiceOptions = {}): Promise<TestService> {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-policy-'));
  mkdirSync(join(dir, 'src'));
  writeFileSync(join(dir, 'src', 'lists'), o.lists ?? TEST_LISTS);
  const report = await compileTables({ sourceDir: join(dir, 'src'), dbDir: join(dir, 'db'), tables: ['lists'] });
  if (!report.ok) throw new Error(JSON.stringify(report.errors));
  const socketPath = join(dir, 'run', 'policy.sock');
  const config = policyConfigSchema.parse({ listen: [`${o.host ?? '127.0.0.1'}:0`, `unix:${socketPath}`], ...o.config });
  const logLines: string[] = [];
  const log = createLogger({ format: 'text', level: 'debug', write: (line) => logLines.push(line) });
  const tables = openTables(join(dir, 'db'));
  const stateDir = join(dir, 'state-db');
  const state = openState(stateDir);
  let service: PolicyService;
  let policyState: PolicyState | undefined;
  try {
    policyState = await openPolicyState({ config: stateConfigSchema.parse({ backend: o.backend ?? 'lmdb', ...o.stateConfig }), store: state, log, metrics: o.metrics });
    service = await startPolicyService({
      config, tables: o.wrapTables ? o.wrapTables(tables) : tables, state, policyState, log, baseDir: dir,
      ...(o.plugins !== undefined ? { plugins: o.plugins } : {}),
      ...(o.now !== undefined ? { now: o.now } : {}),
      ...(o.metrics !== undefined ? { metrics: o.metrics } : {}),
    });
  } catch (err) {
    await policyState?.close();
    await state.close();
    await tables.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const close = async (): Promise<void> => {
    await service.close();
    await policyState.close();
    await state.close();
    await tables.close();
    rmSync(dir, { recursive: true, force: true });
  };
  t?.after(close);
  const port = service.listening.find((l) => l.kind === 'tcp')?.port ?? 0;
  const host = o.host ?? '127.0.0.1';
  return { service, tables, dir, stateDir, policyState, port, socketPath, logLines, log, client: () => PolicyClient.open({ port, host }), close };
}

/** A clock the test moves by hand. */
export function manualClock(start = Date.UTC(2026, 0, 1)): { now: () => number; advance(ms: number): void; set(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => { t += ms; }, set: (ms) => { t = ms; } };
}
