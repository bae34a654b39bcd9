// The administrator's control socket (<run>/control.sock, mode 0600, owned by
// the daemon's user: the file system is the authentication). One JSON request
// per line, one JSON reply per line:
//   {"cmd":"status"}                → workers, per-user load, spam checkers, queue size, delivery delay percentiles
//   {"cmd":"queue.list"}            → every spooled message
//   {"cmd":"queue.show","id":ID}    → one message: envelope, progress, headers
//   {"cmd":"queue.flush"}           → attempt every waiting message now
//   {"cmd":"queue.delete","id":ID}  → remove a message without delivering it
//   {"cmd":"spam.checker","user":U} → U's spam checker (a name or uid), started if need be (`mailproc learn --user`)
//   {"cmd":"probe","id":ID}         → mailmond's probe ID as recorded ({"probe":null} until it arrives),
//                                     and what probe addresses got since start (recorded, forged, …)
//   {"cmd":"rules.…","address":A,…} → any address's owner rules, dry run and decision log, as on a
//                                     user's socket (user-protocol.ts, user-rules.ts), for root
// Replies are {"ok":true,...} or {"ok":false,"error":"…"}. A malformed line
// gets an error reply; the connection stays open for the next line.
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../log.js';
import type { DelaySummary } from '../metrics/index.js';
import type { ProbeLedger } from '../local/probe.js';
import { isProbeId } from '../mail/probe-token.js';
import { listenOn } from '../net/listen.js';
import { headerEnd, normaliseLineEndings } from '../mail/message.js';
import type { QueueManager } from '../queue/manager.js';
import type { Spool } from '../queue/spool.js';
import type { PolicyState } from '../state/index.js';
import type { WorkerPool } from '../workers/pool.js';
import type { SpamCheckers } from '../workers/spam-checkers.js';
import { resolveIdentity } from '../os/identity.js';
import { parseRulesRequest, type RulesRequest } from './user-protocol.js';
import type { RulesService } from './user-rules.js';
import { spamChecker } from './user-sockets.js';

export interface ControlDeps {
  readonly path: string;
  readonly pool: WorkerPool;
  readonly queue: QueueManager;
  readonly spool: Spool;
  readonly log: Logger;
  readonly startedAt: number;
  /** undefined: spam checking off or SpamAssassin not installed. */
  readonly spam?: SpamCheckers;
  readonly rules?: RulesService;
  /** mailmond's probes (src/local/probe.ts). */
  readonly probes?: Pick<ProbeLedger, 'find' | 'counts'>;
  /** Delivery delay percentiles since start, from the metrics' histograms. */
  readonly delays?: () => Promise<DelaySummary>;
  /** Where greylist, rate counters and user policies live (state.backend), and an outage in progress. */
  readonly policyState?: StateView;
}

/** What status needs of the policy state. */
type StateView = Pick<PolicyState, 'kind' | 'label' | 'outage' | 'policyCache'>;

/** A rules.test request carries its message (up to 8 MiB, base64). */
const MAX_LINE = 12 * 1024 * 1024;

export type ControlRequest =
  | { readonly cmd: 'status' }
  | { readonly cmd: 'queue.list' }
  | { readonly cmd: 'queue.flush' }
  | { readonly cmd: 'queue.show' | 'queue.delete'; readonly id: string }
  | { readonly cmd: 'spam.checker'; readonly user: string }
  | { readonly cmd: 'probe'; readonly id: string }
  | RulesRequest;

/** The one parser of control requests. */
export function parseControlRequest(line: string): ControlRequest | string {
  let m: unknown;
  try {
    m = JSON.parse(line);
  } catch {
    return 'not JSON';
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return 'not an object';
  const r = m as Record<string, unknown>;
  const rules = parseRulesRequest(r);
  if (rules !== undefined) return rules;
  switch (r.cmd) {
    case 'status':
    case 'queue.list':
    case 'queue.flush':
      return { cmd: r.cmd };
    case 'queue.show':
    case 'queue.delete':
      return typeof r.id === 'string' && /^[0-9A-F]{6,32}$/.test(r.id) ? { cmd: r.cmd, id: r.id } : 'id: expected a queue id';
    case 'spam.checker':
      return typeof r.user === 'string' && /^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$/.test(r.user) ? { cmd: r.cmd, user: r.user } : 'user: expected a user name or uid';
    case 'probe':
      return typeof r.id === 'string' && isProbeId(r.id) ? { cmd: r.cmd, id: r.id } : 'id: expected a probe id';
    default:
      return `unknown command ${JSON.stringify(r.cmd)}`;
  }
}

/** The policy state as status reports it: backend, engine (no password), and an outage with its start, reason and refused calls. */
function stateStatus(p: StateView): Record<string, unknown> {
  const down = p.outage?.();
  const cache = p.policyCache?.();
  return { backend: p.kind, engine: p.label, up: down === undefined, ...(down !== undefined ? { outage: down } : {}), ...(cache !== undefined ? { userPolicyCache: cache } : {}) };
}

async function answer(d: ControlDeps, req: ControlRequest): Promise<Record<string, unknown>> {
  switch (req.cmd) {
    case 'status': {
      const queue = await d.queue.list();
      return {
        ok: true, pid: process.pid, uptime: Math.round((Date.now() - d.startedAt) / 1000),
        workers: d.pool.list(), load: d.pool.load(),
        spam: d.spam === undefined ? { enabled: false } : { enabled: true, parent: d.spam.parentPid() ?? null, checkers: await d.spam.list() },
        queue: { messages: queue.length, recipients: queue.reduce((n, q) => n + q.recipients.length - q.done.length, 0) },
        ...(d.delays !== undefined ? { delays: await d.delays() } : {}),
        ...(d.policyState !== undefined ? { state: stateStatus(d.policyState) } : {}),
      };
    }
    case 'queue.list':
      return { ok: true, queue: await d.queue.list() };
    case 'queue.flush':
      return { ok: true, flushed: d.queue.flush() };
    case 'queue.show': {
      const info = (await d.queue.list()).find((q) => q.id === req.id);
      if (!info) return { ok: false, error: `${req.id}: not in the queue` };
      const entry = await d.spool.read(req.id);
      const body = normaliseLineEndings(entry.raw);
      return { ok: true, message: info, headers: body.subarray(0, headerEnd(body)).toString('utf8') };
    }
    case 'spam.checker': {
      const who = await resolveIdentity(req.user);
      if (typeof who === 'string') return { ok: false, error: who };
      if (who.uid === 0) return { ok: false, error: 'root has no spam checker: SpamAssassin never runs as root' };
      return spamChecker(d.spam, who);
    }
    case 'rules.list': case 'rules.add': case 'rules.remove': case 'rules.move':
    case 'rules.clear': case 'rules.test': case 'rules.log':
      return d.rules === undefined ? { ok: false, error: 'rules cannot be changed on this server' } : d.rules.answer({ root: true }, req);
    case 'probe':
      return d.probes === undefined ? { ok: false, error: 'no probes on this server' } : { ok: true, probe: d.probes.find(req.id) ?? null, counts: d.probes.counts() };
    case 'queue.delete':
      return (await d.queue.delete(req.id)) ? { ok: true } : { ok: false, error: `${req.id}: not in the queue, or being delivered right now` };
  }
}

export async function startControl(d: ControlDeps): Promise<Server> {
  const server = createServer((sock: Socket) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_LINE) {
        sock.end(`${JSON.stringify({ ok: false, error: 'request too long' })}\n`);
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const req = parseControlRequest(line);
        const reply = typeof req === 'string'
          ? Promise.resolve({ ok: false, error: req })
          : answer(d, req).catch((err: unknown) => ({ ok: false, error: (err as Error).message }));
        void reply.then((r) => sock.write(`${JSON.stringify(r)}\n`));
      }
    });
  });
  await listenOn(server, { kind: 'unix', path: d.path, host: '', port: 0, spec: `unix:${d.path}` }, { mode: 0o600 });
  return server;
}
