// Built-in LMTP load driver for the lmtp part of `npm run bench`
// (scripts/bench/lmtp.mjs), used when ../shared/peers/ (or Postfix's
// smtp-source) is not there, so that `npm run bench` still prints our own
// figures. Plain Node, no dependencies.
//
// Lock-step like smtp-source (no PIPELINING): `sessions` workers each take the
// next message number until `count` messages were attempted or `maxSeconds`
// passed. Message i goes to user (i mod users)+1, e.g. u001@bench.test.
// By default every message has its own connection (connect, greeting, LHLO,
// MAIL, RCPT, DATA, QUIT), as smtp-source does without -d; `reuse` keeps the
// connection. Per-message latency = connect (or MAIL FROM when reused) until
// the LMTP reply after the final ".". Only unix sockets and loopback TCP.
// `signal` (an AbortSignal) stops it after the messages in flight.
// Two hooks let a caller send other mail (the spam part sends the labelled
// corpus to its users): `rcptOf(seq)` gives message seq's recipient, and
// `messageOf(seq, from, rcpt)` its DATA on the wire (CRLF, dot-stuffed,
// ending in ".\r\n"; toWire() makes that from a file's bytes). `perMessage`
// in the result is the latency of each message that was accepted, by seq;
// `outcomes` the final reply (code, text, ms) of every message that got one,
// accepted or refused (the milter part reads verdicts from it).
// `hello: 'EHLO'` speaks SMTP instead (a Postfix smtpd in front).
//
//   import { runLmtpLoad } from './lmtp-driver.mjs';
//   const r = await runLmtpLoad({ target: 'unix:/tmp/x/lmtp.sock', count: 5000 });
//   // { msgs, ok, failed, secs, msgsPerSec, p50, p90, p99, max, errors: Map, perMessage: Map }
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export function parseTarget(t) {
  if (t.startsWith('unix:')) return { path: t.slice(5) };
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(t) ?? /^([^:]+):(\d+)$/.exec(t);
  if (!m) throw new Error(`bad target ${t}`);
  const host = m[1] === 'localhost' ? '127.0.0.1' : m[1];
  if (!((net.isIPv4(host) && host.startsWith('127.')) || host === '::1')) throw new Error(`refusing non-loopback target ${t}`);
  return { host, port: Number(m[2]) };
}

/** A message of `size` payload bytes (plus a few headers), CRLF, terminated by ".". */
export function makeMessage(size, from, to, seq) {
  const hdr = `From: <${from}>\r\nTo: <${to}>\r\nSubject: bench ${seq}\r\nDate: ${new Date().toUTCString()}\r\n` +
    `Message-ID: <${process.pid}.${seq}@loadgen.bench.test>\r\n\r\n`;
  const line = 'La de da de da 1 La de da de da 2 La de da de da 3 La de da de da 4 La de\r\n';
  let body = '';
  while (body.length + line.length <= size) body += line;
  body += 'x'.repeat(Math.max(0, size - body.length - 2)) + '\r\n';
  return Buffer.from(`${hdr}${body}.\r\n`, 'latin1');
}

/**
 * A message file's bytes as LMTP DATA: every line ending (LF or CRLF) sent
 * as CRLF, a leading "." doubled, a last line without an end closed, then the
 * terminating ".". A bare CR inside a line stays content.
 */
export function toWire(bytes) {
  const lines = bytes.toString('latin1').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const body = lines.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l)).map((l) => (l.startsWith('.') ? `.${l}` : l)).join('\r\n');
  return Buffer.from(`${body}${lines.length > 0 ? '\r\n' : ''}.\r\n`, 'latin1');
}

class Session {
  constructor(target, timeoutMs, hello = 'LHLO') {
    this.target = target;
    this.helloCmd = hello;
    this.timeoutMs = timeoutMs;
    this.buf = '';
    this.lines = [];
    this.waiters = [];
    this.dead = null;
  }

  open() {
    return new Promise((resolve, reject) => {
      const s = net.connect(this.target);
      this.s = s;
      s.setNoDelay(true);
      s.once('connect', resolve);
      s.on('error', (e) => { this.fail(e); reject(e); });
      s.on('close', () => this.fail(new Error('connection closed by server')));
      s.on('data', (d) => {
        this.buf += d.toString('latin1');
        let i;
        while ((i = this.buf.indexOf('\n')) >= 0) {
          this.lines.push(this.buf.slice(0, i).replace(/\r$/, ''));
          this.buf = this.buf.slice(i + 1);
        }
        this.pump();
      });
    });
  }

  fail(e) {
    if (this.dead) return;
    this.dead = e;
    this.pump();
  }

  pump() {
    while (this.waiters.length > 0) {
      const end = this.lines.findIndex((l) => /^\d{3}( |$)/.test(l));
      if (end < 0) {
        if (!this.dead) return;
        const w = this.waiters.shift();
        clearTimeout(w.timer);
        w.reject(this.dead);
        continue;
      }
      const rep = this.lines.splice(0, end + 1);
      const w = this.waiters.shift();
      clearTimeout(w.timer);
      w.resolve({ code: Number(rep[rep.length - 1].slice(0, 3)), text: rep.join(' | ') });
    }
  }

  reply() {
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      w.timer = setTimeout(() => { reject(new Error('reply timeout')); this.s.destroy(); }, this.timeoutMs);
      this.waiters.push(w);
      this.pump();
    });
  }

  async cmd(line, want) {
    this.s.write(`${line}\r\n`);
    const r = await this.reply();
    if (Math.floor(r.code / 100) !== want) throw new Error(`${line.split(':')[0]} -> ${r.text}`);
    return r;
  }

  async hello() {
    const g = await this.reply();
    if (g.code !== 220) throw new Error(`greeting ${g.text}`);
    await this.cmd(`${this.helloCmd} loadgen.bench.test`, 2);
  }

  async quit() {
    try {
      this.s.write('QUIT\r\n');
      await Promise.race([this.reply(), new Promise((r) => setTimeout(r, 200))]);
    } catch {
      // the server may close first
    }
    this.s.destroy();
  }
}

export async function runLmtpLoad(opts) {
  const o = {
    count: 5000, sessions: 8, size: 4096, users: 100, domain: 'bench.test', from: 'bench@bench.test',
    reuse: false, maxSeconds: 150, timeoutMs: 30_000, ...opts,
  };
  const target = parseTarget(o.target);
  const rcptOf = o.rcptOf ?? ((seq) => `u${String((seq % o.users) + 1).padStart(3, '0')}@${o.domain}`);
  const messageOf = o.messageOf ?? ((seq, from, rcpt) => makeMessage(o.size, from, rcpt, seq));
  const lat = [];
  const perMessage = new Map();
  const outcomes = new Map();
  const errors = new Map();
  let next = 0;
  let ok = 0;
  let failed = 0;
  const t0 = performance.now();
  const deadline = t0 + o.maxSeconds * 1000;
  const note = (e) => {
    const k = String(e?.message ?? e).slice(0, 100);
    errors.set(k, (errors.get(k) ?? 0) + 1);
  };

  async function worker() {
    let c = null;
    while (next < o.count && performance.now() < deadline && !o.signal?.aborted) {
      const seq = next++;
      const rcpt = rcptOf(seq);
      const ts = performance.now();
      try {
        if (!c) {
          c = new Session(target, o.timeoutMs, o.hello);
          await c.open();
          await c.hello();
        }
        await c.cmd(`MAIL FROM:<${o.from}>`, 2);
        await c.cmd(`RCPT TO:<${rcpt}>`, 2);
        await c.cmd('DATA', 3);
        c.s.write(messageOf(seq, o.from, rcpt));
        const r = await c.reply();
        outcomes.set(seq, { code: r.code, text: r.text, ms: performance.now() - ts });
        if (r.code >= 200 && r.code < 300) {
          ok++;
          const ms = performance.now() - ts;
          lat.push(ms);
          perMessage.set(seq, ms);
        } else {
          failed++;
          note(new Error(`DATA -> ${r.text}`));
        }
        if (!o.reuse) {
          await c.quit();
          c = null;
        }
      } catch (e) {
        failed++;
        note(e);
        c?.s?.destroy();
        c = null;
      }
    }
    if (c) await c.quit();
  }

  await Promise.all(Array.from({ length: o.sessions }, () => worker()));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p) => (lat.length > 0 ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : NaN);
  return {
    msgs: ok + failed, attempted: o.count, ok, failed, secs, msgsPerSec: ok / secs,
    p50: q(0.5), p90: q(0.9), p99: q(0.99), max: lat.length > 0 ? lat[lat.length - 1] : NaN, errors, perMessage, outcomes,
  };
}
