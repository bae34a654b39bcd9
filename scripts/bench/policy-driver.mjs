// Policy-delegation pieces for the policy part of `npm run bench`
// (scripts/bench/policy.mjs). Plain Node, no dependencies. Three things:
//
// 1. The lists table the bench compiles into mailprocd (listsSource) and the
//    answers it must give (expectedSharedActions). The shared driver,
//    ../shared/peers/policy-load.mjs, cannot be told which recipients and
//    senders to send: request i uses triplet t = i mod --pool, sender
//    user<t>@sender<t mod 97>.example, recipient u<(t mod --users)+1>@bench.test.
//    So the table makes its recipients lists: u001..u<lists>@bench.test are
//    closed lists whose subscribers are exactly the senders t with
//    floor(t / users) even (for every t < subscriberPool), padded with other
//    addresses up to `subscribers` each; u<lists+1>.. are no lists. The shared
//    driver's generic requests, sent as they are, then mix subscribers (DUNNO),
//    non-subscribers (REJECT) and recipients that are no list (DUNNO), and the
//    bench can check the action counts it reports.
//    The table also has list@bench.test (closed, `subscribers` addresses
//    s0000@subs.bench.test, …) for the built-in driver.
//
// 2. runPolicyLoad: the built-in driver. Same protocol and the same attribute
//    block as policy-load.mjs (Postfix smtpd's 27 attributes, LF, blank line),
//    `conns` connections in lock-step (one request in flight per connection,
//    as smtpd does), until `count` requests or `maxSeconds`. Request k:
//      k mod 3 = 0  subscriber of list@bench.test   (every 4th in mixed case) → DUNNO
//      k mod 3 = 1  non-subscriber (unique sender) to list@bench.test        → REJECT
//      k mod 3 = 2  recipient that is no list (nolistNNN@bench.test)         → DUNNO
//    Every reply is checked against that; wrong answers are counted. `first`
//    starts at request k = first (a warm-up away from the measured requests).
//    Latency per request = request written .. reply read.
//
//      import { runPolicyLoad } from './policy-driver.mjs';
//      const r = await runPolicyLoad({ target: 'unix:/tmp/x/policy.sock', count: 20000, conns: 16 });  // also first, maxSeconds, subscribers, signal
//      // { reqs, ok, secs, reqPerSec, p50, p90, p99, max, actions: Map, wrong, wrongSample, errors: Map, distinctPairs }
//
// 3. A null policy server (the driver's ceiling, like smtp-sink for LMTP):
//      node scripts/bench/policy-driver.mjs --null-server 127.0.0.1:0 [--max-seconds 300]
//    answers every request "action=DUNNO" at once, prints "listening PORT"
//    and exits on SIGTERM, when stdin closes, or after --max-seconds.
//
// Only unix sockets and loopback TCP.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseTarget } from './lmtp-driver.mjs';

export const LIST_ADDRESS = 'list@bench.test';
const pad = (n, w) => String(n).padStart(w, '0');

/** The sender policy-load.mjs puts in request i's triplet t (see its request()). */
export const sharedSender = (t) => `user${t}@sender${t % 97}.example`;
/** Is the shared driver's sender t a subscriber of its recipient's list (when that is a list)? */
const sharedSubscribes = (t, users, subscriberPool) => t < subscriberPool && Math.floor(t / users) % 2 === 0;

/**
 * The db/lists source: u001..u<lists>@bench.test closed (see the header) and
 * list@bench.test closed, each with `subscribers` addresses.
 */
export function listsSource({ users = 100, lists = 66, subscribers = 500, subscriberPool = 20000 } = {}) {
  const out = ['# written by scripts/bench/policy.mjs (scripts/bench/policy-driver.mjs listsSource)'];
  const entry = (key, addrs) => {
    out.push(`${key}  closed  manager=""`);
    for (let i = 0; i < addrs.length; i++) out.push(`    ${i === 0 ? 'subscribers=' : ''}${addrs[i]}${i < addrs.length - 1 ? ',' : ''}`);
  };
  entry(LIST_ADDRESS, Array.from({ length: subscribers }, (_, j) => `s${pad(j, 4)}@subs.bench.test`));
  for (let k = 1; k <= Math.min(lists, users); k++) {
    const addrs = [];
    for (let t = k - 1; t < subscriberPool; t += users) if (sharedSubscribes(t, users, subscriberPool)) addrs.push(sharedSender(t));
    for (let j = 0; addrs.length < subscribers; j++) addrs.push(`m${pad(k, 3)}-${pad(j, 4)}@members.bench.test`);
    entry(`u${pad(k, 3)}@bench.test`, addrs);
  }
  return `${out.join('\n')}\n`;
}

/** Action counts (first word) policy-load.mjs must report for requests 0..requests-1 with this pool. */
export function expectedSharedActions({ requests, pool, users = 100, lists = 66, subscriberPool = 20000 }) {
  let reject = 0;
  for (let i = 0; i < requests; i++) {
    const t = i % pool;
    const k = (t % users) + 1;
    if (k <= lists && !sharedSubscribes(t, users, subscriberPool)) reject++;
  }
  return { DUNNO: requests - reject, REJECT: reject };
}

/** "DUNNO:13200,REJECT:6800" → Map; order-free comparison with an expected record. */
export function parseActions(text) {
  const m = new Map();
  for (const part of String(text ?? '').split(',')) {
    const [k, v] = part.split(':');
    if (k && v !== undefined) m.set(k, Number(v));
  }
  return m;
}

// ---- built-in driver -------------------------------------------------------------------------
function block(sender, recipient, seq, client) {
  const host = `mx${seq % 1000}.sender${seq % 97}.example`;
  return [
    'request=smtpd_access_policy', 'protocol_state=RCPT', 'protocol_name=ESMTP',
    `helo_name=${host}`, 'queue_id=', `sender=${sender}`, `recipient=${recipient}`, 'recipient_count=0',
    `client_address=${client}`, `client_name=${host}`, `reverse_client_name=${host}`,
    `instance=${process.pid.toString(16)}.${seq.toString(16)}.0`, 'sasl_method=', 'sasl_username=', 'sasl_sender=',
    'size=4096', 'ccert_subject=', 'ccert_issuer=', 'ccert_fingerprint=', 'encryption_protocol=',
    'encryption_cipher=', 'encryption_keysize=0', 'etrn_domain=', 'stress=', 'server_address=127.0.0.1',
    'server_port=25', 'policy_context=', '', '',
  ].join('\n');
}

/** Request k of the built-in mix: [request text, expected first word, recipient|sender pair]. */
export function builtinRequest(k, subscribers) {
  const client = `198.18.${k % 256}.${1 + (Math.floor(k / 256) % 254)}`;
  const kind = k % 3;
  let sender;
  let recipient = LIST_ADDRESS;
  let want = 'DUNNO';
  if (kind === 0) {
    const j = Math.floor(k / 3);
    sender = `s${pad(j % subscribers, 4)}@subs.bench.test`;
    if (j % 4 === 3) sender = sender.toUpperCase().replace('@SUBS', '@Subs'); // subscribers compare without regard to case
  } else if (kind === 1) {
    sender = `n${k}@outside.example`;
    want = 'REJECT';
  } else {
    sender = `x${k}@outside.example`;
    recipient = `nolist${pad(k % 500, 3)}@bench.test`;
  }
  return [block(sender, recipient, k, client), want, `${recipient}\n${sender}`];
}

class Conn {
  constructor(target, timeoutMs) {
    this.target = target;
    this.timeoutMs = timeoutMs;
    this.buf = '';
    this.pending = null;
    this.closed = true;
  }

  open() {
    return new Promise((resolve, reject) => {
      const s = net.connect(this.target);
      this.s = s;
      this.closed = false;
      s.setNoDelay(true);
      s.once('connect', resolve);
      const fail = (e) => {
        this.closed = true;
        const p = this.pending;
        this.pending = null;
        if (p) {
          clearTimeout(p.timer);
          p.reject(e);
        } else reject(e);
      };
      s.on('error', fail);
      s.on('close', () => fail(new Error('closed by server')));
      s.on('data', (d) => {
        this.buf += d.toString('latin1');
        const end = this.buf.indexOf('\n\n');
        if (end >= 0 && this.pending) {
          const rep = this.buf.slice(0, end);
          this.buf = this.buf.slice(end + 2);
          const p = this.pending;
          this.pending = null;
          clearTimeout(p.timer);
          p.resolve(rep);
        }
      });
    });
  }

  ask(req) {
    return new Promise((resolve, reject) => {
      this.pending = {
        resolve, reject,
        timer: setTimeout(() => {
          this.pending = null;
          this.s.destroy();
          reject(new Error('reply timeout'));
        }, this.timeoutMs),
      };
      this.s.write(req);
    });
  }
}

export async function runPolicyLoad(opts) {
  const o = { conns: 16, count: 20000, first: 0, maxSeconds: 60, subscribers: 500, timeoutMs: 10_000, ...opts };
  const target = parseTarget(o.target);
  // Built before the clock starts: the driver should cost as little as it can while measuring.
  const reqs = Array.from({ length: o.count }, (_, k) => builtinRequest(o.first + k, o.subscribers));
  const distinctPairs = new Set(reqs.map((r) => r[2])).size;
  const lat = new Float64Array(o.count);
  let nlat = 0;
  const actions = new Map();
  const errors = new Map();
  let next = 0;
  let ok = 0;
  let nerr = 0;
  let wrong = 0;
  const wrongSample = [];
  const t0 = performance.now();
  const deadline = t0 + o.maxSeconds * 1000;

  async function worker() {
    const c = new Conn(target, o.timeoutMs);
    while (next < o.count && performance.now() < deadline && !o.signal?.aborted) {
      const k = next++;
      const [text, want] = reqs[k];
      try {
        if (c.closed) await c.open();
        const ts = performance.now();
        const rep = await c.ask(text);
        lat[nlat++] = performance.now() - ts;
        const m = /^action=(\S+)/m.exec(rep);
        const a = m ? m[1].toUpperCase() : 'NO_ACTION';
        actions.set(a, (actions.get(a) ?? 0) + 1);
        ok++;
        if (a !== want) {
          wrong++;
          if (wrongSample.length < 3) wrongSample.push(`#${k} want ${want} got "${rep.replace(/\n/g, ' ')}"`);
        }
      } catch (e) {
        nerr++;
        const key = String(e?.message ?? e).slice(0, 100);
        errors.set(key, (errors.get(key) ?? 0) + 1);
        c.s?.destroy();
        c.closed = true;
      }
    }
    if (c.s && !c.closed) c.s.end();
  }

  await Promise.all(Array.from({ length: o.conns }, () => worker()));
  const secs = (performance.now() - t0) / 1000;
  const l = lat.subarray(0, nlat).sort();
  const q = (p) => (l.length > 0 ? l[Math.min(l.length - 1, Math.floor(p * l.length))] : NaN);
  return {
    reqs: ok + nerr, ok, errors, nerr, secs, reqPerSec: ok / secs,
    p50: q(0.5), p90: q(0.9), p99: q(0.99), max: l.length > 0 ? l[l.length - 1] : NaN,
    actions, wrong, wrongSample, distinctPairs,
  };
}

// ---- null server -----------------------------------------------------------------------------
function nullServer(listen, maxSeconds) {
  const t = parseTarget(listen);
  const reply = 'action=DUNNO\n\n';
  const server = net.createServer((s) => {
    s.setNoDelay?.(true);
    let tail = '';
    s.on('data', (d) => {
      const text = tail + d.toString('latin1');
      let n = 0;
      let from = 0;
      for (let i; (i = text.indexOf('\n\n', from)) >= 0; from = i + 2) n++;
      tail = text.slice(from); // the unfinished request (its "\n" may end this read, the blank line the next)
      if (n > 0) s.write(reply.repeat(n));
    });
    s.on('error', () => undefined);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop).resume();
  setTimeout(() => process.exit(0), maxSeconds * 1000).unref();
  const cb = () => process.stdout.write(`listening ${t.path ?? server.address().port}\n`);
  if (t.path) server.listen(t.path, cb);
  else server.listen(t.port, t.host, cb);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const a = process.argv.slice(2);
  const i = a.indexOf('--null-server');
  const m = a.indexOf('--max-seconds');
  if (i < 0 || a[i + 1] === undefined) {
    process.stderr.write('usage: node scripts/bench/policy-driver.mjs --null-server 127.0.0.1:PORT|unix:/path [--max-seconds 300]\n');
    process.exit(2);
  }
  nullServer(a[i + 1], m >= 0 ? Number(a[m + 1]) : 300);
}
