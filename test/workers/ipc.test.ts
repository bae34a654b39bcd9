// The master↔worker messages (src/workers/ipc.ts): every field a receiver acts
// on is checked, a bad one is named, another build's version is refused; and
// a real worker answers a malformed request by its id ("refused") instead of
// leaving the master waiting.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { checkMasterMessage, checkWorkerMessage, IPC_VERSION, requestIdOf, type DeliverRequest } from '../../src/workers/ipc.js';
import { DAEMON } from '../helpers/daemon.js';

const good: DeliverRequest = {
  v: IPC_VERSION,
  type: 'deliver',
  id: 7,
  sender: 's@remote.test',
  arrival: 1_700_000_000_000,
  recipient: { address: 'bob+x@example.test', local: 'bob+x', user: 'bob', extension: 'x', domain: 'example.test' },
  header: new Uint8Array([0x41, 0x0a]),
  body: new Uint8Array([0x42, 0x0a]),
  destinations: [
    { kind: 'maildir', path: '/var/mail/bob/Maildir/', folder: 'x' },
    { kind: 'mbox', path: '/var/mail/bob/mbox' },
    { kind: 'pipe', argv: ['/usr/bin/true'] },
    { kind: 'discard' },
  ],
  options: { hostname: 'mx.test', fsync: true, mboxLockAttempts: 20, mboxLockDelayMs: 1000, mboxStaleLockMs: 500_000, pipeTimeoutMs: 1000, pipeUnknownExit: 'temporary' },
};

const edit = (over: Record<string, unknown>): unknown => ({ ...good, ...over });
const TOKEN = 'abcdefghijklmn23';

test('a well-formed deliver request and a shutdown pass the check unchanged', () => {
  assert.deepEqual(checkMasterMessage(good), good);
  const queued = edit({ redelivery: { check: true, tokens: [TOKEN, 'zzzzzzzzzzzzzzz7', TOKEN, TOKEN] } });
  assert.deepEqual(checkMasterMessage(queued), queued);
  assert.deepEqual(checkMasterMessage({ v: IPC_VERSION, type: 'shutdown' }), { v: IPC_VERSION, type: 'shutdown' });
});

const badMaster: { name: string; msg: unknown; want: RegExp }[] = [
  { name: 'not an object', msg: 'deliver', want: /not an object/ },
  { name: 'another build (version 1)', msg: edit({ v: 1 }), want: new RegExp(`IPC version 1, expected ${IPC_VERSION}`) },
  { name: 'an unknown type', msg: edit({ type: 'format-disk' }), want: /unknown message type "format-disk"/ },
  { name: 'a negative id', msg: edit({ id: -1 }), want: /id: not a count/ },
  { name: 'a sender that is not a string', msg: edit({ sender: 5 }), want: /sender/ },
  { name: 'an arrival that is not a time', msg: edit({ arrival: Number.NaN }), want: /arrival/ },
  { name: 'a body sent as text', msg: edit({ body: 'B\n' }), want: /header\/body: not binary/ },
  { name: 'a recipient without its domain', msg: edit({ recipient: { ...good.recipient, domain: undefined } }), want: /recipient\.domain/ },
  { name: 'no destinations', msg: edit({ destinations: [] }), want: /destinations: not a non-empty list/ },
  { name: 'a relative maildir path', msg: edit({ destinations: [{ kind: 'maildir', path: 'var/mail/x' }] }), want: /destinations\[0\]\.path: not an absolute path/ },
  { name: 'a path with a NUL byte', msg: edit({ destinations: [{ kind: 'mbox', path: '/var/mail/x\0y' }] }), want: /destinations\[0\]\.path/ },
  { name: 'a pipe with an empty argv', msg: edit({ destinations: [{ kind: 'pipe', argv: [] }] }), want: /argv/ },
  { name: 'a pipe whose argv holds a number', msg: edit({ destinations: [{ kind: 'pipe', argv: ['/bin/echo', 3] }] }), want: /argv/ },
  { name: 'a forward (the relay’s, never a worker’s)', msg: edit({ destinations: [{ kind: 'forward', address: 'x@y' }] }), want: /"forward" is not executed by a worker/ },
  { name: 'a reject (the planner’s)', msg: edit({ destinations: [{ kind: 'reject', code: '5.7.1', text: 'no' }] }), want: /"reject" is not executed by a worker/ },
  { name: 'options without fsync', msg: edit({ options: { ...good.options, fsync: 'yes' } }), want: /options\.fsync/ },
  { name: 'a zero pipe timeout', msg: edit({ options: { ...good.options, pipeTimeoutMs: 0 } }), want: /options\.pipeTimeoutMs/ },
  { name: 'an unknown pipeUnknownExit', msg: edit({ options: { ...good.options, pipeUnknownExit: 'ignore' } }), want: /pipeUnknownExit/ },
  { name: 'redelivery tokens fewer than the destinations', msg: edit({ redelivery: { check: true, tokens: [TOKEN] } }), want: /redelivery\.tokens: not one per destination/ },
  { name: 'a redelivery token that could add a path or an info part', msg: edit({ redelivery: { check: true, tokens: [TOKEN, TOKEN, TOKEN, 'abcdefgh/:,.ijklm'] } }), want: /redelivery\.tokens: not redelivery tokens/ },
  { name: 'a redelivery without its check', msg: edit({ redelivery: { tokens: [TOKEN, TOKEN, TOKEN, TOKEN] } }), want: /redelivery\.check/ },
];

for (const c of badMaster) {
  test(`checkMasterMessage refuses ${c.name}, naming the field`, () => {
    const got = checkMasterMessage(c.msg);
    assert.equal(typeof got, 'string', 'must be refused');
    assert.match(got as string, c.want);
  });
}

test('requestIdOf finds the id of a malformed deliver request, and nothing else', () => {
  assert.equal(requestIdOf(edit({ body: 'text' })), 7);
  assert.equal(requestIdOf({ v: IPC_VERSION, type: 'shutdown' }), undefined);
  assert.equal(requestIdOf(edit({ id: 'seven' })), undefined);
  assert.equal(requestIdOf(null), undefined);
});

const delivered = { v: IPC_VERSION, type: 'delivered', id: 7, elapsedMs: 1.5, results: [{ status: { code: '2.0.0', text: 'ok' }, path: '/x' }, { status: { code: '4.2.0', text: 'locked', reply: 451 } }] };

test('well-formed worker messages pass: ready, delivered, refused', () => {
  assert.deepEqual(checkWorkerMessage({ v: IPC_VERSION, type: 'ready', pid: 10, uid: 65534, gid: 65534 }), { v: IPC_VERSION, type: 'ready', pid: 10, uid: 65534, gid: 65534 });
  assert.deepEqual(checkWorkerMessage(delivered), delivered);
  assert.deepEqual(checkWorkerMessage({ v: IPC_VERSION, type: 'refused', id: 3, reason: 'x' }), { v: IPC_VERSION, type: 'refused', id: 3, reason: 'x' });
});

const badWorker: { name: string; msg: unknown; want: RegExp }[] = [
  { name: 'another build', msg: { ...delivered, v: IPC_VERSION + 1 }, want: new RegExp(`IPC version ${IPC_VERSION + 1}`) },
  { name: 'a status code that is not RFC 3463', msg: { ...delivered, results: [{ status: { code: '250', text: 'ok' } }] }, want: /results\[0\]\.status\.code/ },
  { name: 'a success of the wrong shape', msg: { ...delivered, results: [{ status: { code: '2.0.0' } }] }, want: /results\[0\]\.status\.text/ },
  { name: 'a reply number out of range', msg: { ...delivered, results: [{ status: { code: '4.2.0', text: 'x', reply: 999 } }] }, want: /status\.reply/ },
  { name: 'a negative elapsed time', msg: { ...delivered, elapsedMs: -1 }, want: /elapsedMs/ },
  { name: 'a ready with a string pid', msg: { v: IPC_VERSION, type: 'ready', pid: '10', uid: 0, gid: 0 }, want: /ready/ },
  { name: 'an unknown type', msg: { v: IPC_VERSION, type: 'exec' }, want: /unknown message type "exec"/ },
];

for (const c of badWorker) {
  test(`checkWorkerMessage refuses ${c.name}, naming the field`, () => {
    const got = checkWorkerMessage(c.msg);
    assert.equal(typeof got, 'string', 'must be refused');
    assert.match(got as string, c.want);
  });
}

test('a real worker answers a malformed request with "refused" and its id, and a request from another build too', { timeout: 30_000 }, async () => {
  const worker = DAEMON.replace(/cli\/mailprocd\.js$/, 'workers/worker-main.js');
  const root = process.getuid?.() === 0;
  const child = spawn(process.execPath, [worker], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    serialization: 'advanced',
    // As root it drops to nobody (65534) before it reads a message; otherwise it stays who we are.
    env: { PATH: '/usr/bin:/bin', MAILPROC_UID: String(root ? 65534 : process.getuid?.()), MAILPROC_GID: String(root ? 65534 : process.getgid?.()) },
  });
  try {
    const replies: unknown[] = [];
    child.on('message', (m) => replies.push(m));
    const next = async (n: number): Promise<void> => {
      for (let i = 0; i < 600 && replies.length < n; i++) await new Promise((r) => setTimeout(r, 50));
    };
    await next(1);
    assert.equal((replies[0] as { type?: string } | undefined)?.type, 'ready');
    child.send(edit({ id: 41, destinations: [{ kind: 'forward', address: 'x@y' }] }) as object);
    child.send({ ...good, id: 42, v: 1 });
    await next(3);
    const refused = replies.slice(1).map((r) => checkWorkerMessage(r));
    assert.deepEqual(refused.map((r) => typeof r === 'object' && r.type === 'refused' ? r.id : r), [41, 42]);
    assert.match((refused[0] as { reason: string }).reason, /forward/);
    assert.match((refused[1] as { reason: string }).reason, /IPC version 1/);
  } finally {
    child.kill('SIGKILL');
  }
});
