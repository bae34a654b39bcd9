// The worker process: delivers as one user. Started by the pool (as root when
// the master is root, only so that it can load this code from wherever the
// daemon is installed), it drops to the target uid/gid with no supplementary
// groups BEFORE it registers for any message, and asserts that it is no longer
// root — qmail-lspawn's rule: the privilege boundary is a process boundary.
// Before that, first thing, it closes every descriptor above 2 that would
// survive an exec except its IPC channel — whatever the pool or whoever
// started the daemon let through — so no user command it runs inherits one,
// and it checks that the pool's `setpriv --no-new-privs` took effect.
// It never opens the spool: the master sends the bytes over IPC. Each request
// is answered with one result per destination; a leaf that throws (a bug) is
// answered 4.3.0 so the message is retried, not lost. A queued request's
// redelivery tokens go with their destinations to the leaves: the Maildir
// leaf looks for an earlier copy here, as the user, never in the master.
import { performance } from 'node:perf_hooks';
import { exitWhenSafe } from '../deliver/critical.js';
import { executeDestination } from '../deliver/execute.js';
import type { MessageCopy } from '../deliver/types.js';
import { status } from '../mail/status.js';
import { readFileSync } from 'node:fs';
import { closeInheritableDescriptors } from '../os/descriptors.js';
import { checkMasterMessage, IPC_VERSION, requestIdOf, type DeliverRequest, type DeliveryResult, type WorkerMessage } from './ipc.js';

function fail(why: string): never {
  process.stderr.write(`fatal: ${why}\n`);
  process.exit(78); // EX_CONFIG
}

/**
 * Leaves the worker holding nothing above 2 that a command it runs would
 * inherit (its own descriptors, libuv's and the IPC channel are all
 * close-on-exec, the channel is kept in any case).
 */
function closeInheritedDescriptors(): void {
  const channel = (process.channel as { fd?: unknown } | undefined)?.fd;
  const closed = closeInheritableDescriptors(typeof channel === 'number' ? [channel] : []);
  if (closed === undefined) fail('cannot read /proc/self/fdinfo to close inherited descriptors');
}

/** The pool starts us through setpriv --no-new-privs; make sure it held. */
function checkNoNewPrivs(): void {
  if (process.env.MAILPROC_NO_NEW_PRIVS !== '1') return;
  delete process.env.MAILPROC_NO_NEW_PRIVS;
  let status = '';
  try {
    status = readFileSync('/proc/self/status', 'utf8');
  } catch (err) {
    fail(`cannot read /proc/self/status: ${(err as Error).message}`);
  }
  if (!/^NoNewPrivs:\s*1$/m.test(status)) fail('started without no_new_privs although the pool asked for it');
}

function dropPrivileges(): void {
  const uid = Number(process.env.MAILPROC_UID);
  const gid = Number(process.env.MAILPROC_GID);
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) fail('MAILPROC_UID/MAILPROC_GID not set');
  const allowRoot = process.env.MAILPROC_ALLOW_ROOT === '1';
  if ((uid === 0 || gid === 0) && !allowRoot) fail('refusing to deliver as root');
  if (process.getuid?.() === 0) {
    process.setgroups?.([gid]);
    process.setgid?.(gid);
    process.setuid?.(uid);
  }
  const ids = [process.getuid?.(), process.geteuid?.()];
  const gids = [process.getgid?.(), process.getegid?.()];
  if (ids.some((u) => u !== uid) || gids.some((g) => g !== gid)) {
    fail(`could not become uid ${uid} gid ${gid} (now uid ${ids.join('/')} gid ${gids.join('/')})`);
  }
  if (!allowRoot && (process.getuid?.() === 0 || process.geteuid?.() === 0)) fail('still root after dropping privileges');
  delete process.env.MAILPROC_UID;
  delete process.env.MAILPROC_GID;
  delete process.env.MAILPROC_ALLOW_ROOT;
}

async function handle(req: DeliverRequest): Promise<DeliveryResult[]> {
  const copy: MessageCopy = {
    header: Buffer.from(req.header.buffer, req.header.byteOffset, req.header.byteLength),
    body: Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength),
    sender: req.sender,
    arrival: new Date(req.arrival),
    recipient: req.recipient,
  };
  const results: DeliveryResult[] = [];
  for (const [i, d] of req.destinations.entries()) {
    const token = req.redelivery?.tokens[i];
    try {
      results.push(await executeDestination(copy, d, req.options, token !== undefined ? { token, check: req.redelivery?.check === true } : undefined));
    } catch (err) {
      process.stderr.write(`error: ${(err as Error).stack ?? String(err)}\n`);
      results.push({ status: status('4.3.0', `internal error in ${d.kind} delivery`) });
    }
  }
  return results;
}

function send(m: WorkerMessage, done?: () => void): void {
  process.send?.(m, undefined, undefined, () => done?.());
}

closeInheritedDescriptors();
checkNoNewPrivs();
dropPrivileges();
process.chdir('/');
if (process.send === undefined) fail('started without an IPC channel');
// The master is gone: nobody is left to answer for a delivery; stop (after an mbox append in progress).
process.on('disconnect', () => exitWhenSafe(0));
// The pool's terminate() at the end of the shutdown grace: exit as soon as no
// mbox append is half done (deliver/critical.ts), through process.exit so that
// pipe.ts's exit hook SIGKILLs the commands' process groups (a death by the
// default SIGTERM action would skip it and orphan them).
process.on('SIGTERM', () => exitWhenSafe(75)); // EX_TEMPFAIL: the deliveries in flight are retried
// Ctrl-C reaches the whole process group; the master's shutdown decides when a worker ends.
process.on('SIGINT', () => undefined);
let inFlight = 0;
let closing = false;
// A worker waits idle far longer than it works: once idle, collect garbage so
// it sits at its baseline size instead of its peak (the pool starts it with
// --expose-gc; without the flag this does nothing).
const collect = (globalThis as { gc?: () => void }).gc;
let idleTimer: NodeJS.Timeout | undefined;
function armIdleCollection(): void {
  if (collect === undefined) return;
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    if (inFlight === 0) collect();
  }, 1000);
  idleTimer.unref();
}
process.on('message', (raw: unknown) => {
  const m = checkMasterMessage(raw);
  if (typeof m === 'string') {
    process.stderr.write(`refusing malformed message: ${m}\n`);
    // Answer a deliver request by its id, so the master fails it (4.3.0) instead of waiting for ever.
    const id = requestIdOf(raw);
    if (id !== undefined) send({ v: IPC_VERSION, type: 'refused', id, reason: m });
    return;
  }
  if (m.type === 'shutdown') {
    closing = true;
    if (inFlight === 0) process.exit(0);
    return;
  }
  inFlight++;
  const started = performance.now();
  void handle(m).then((results) => {
    // Exit only once the reply is written: an unanswered delivery would be retried.
    send({ v: IPC_VERSION, type: 'delivered', id: m.id, results, elapsedMs: performance.now() - started }, () => {
      inFlight--;
      if (closing && inFlight === 0) process.exit(0);
      if (inFlight === 0) armIdleCollection();
    });
  });
});
send({ v: IPC_VERSION, type: 'ready', pid: process.pid, uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 });
