#!/usr/bin/env node
// Records the golden SPAMC/SPAMD exchanges in test/fixtures/spamd/ from the
// REAL spamd installed on this machine (Debian package "spamd"; the fixtures
// in git come from SpamAssassin 4.0.1).
//
// usage: node scripts/record-spamd-fixtures.mjs [OUTDIR]   (default test/fixtures/spamd)
//
// For each case it writes NAME.request (the exact bytes sent) and NAME.reply
// (the exact bytes spamd sent back before it closed). The requests are built
// here by hand, spamc 4.0.1's header order, independently of
// src/classify/spam/protocol.ts: test/classify/spam/protocol.test.ts checks
// that the project's formatRequest produces the same bytes, and reads every
// reply. A few requests are wrong on purpose (error-*) to record spamd's
// refusals. The messages come from OUTDIR/messages/.
//
// It starts two spamds of its own, local tests only (-L), no user config (-x),
// one child, on unix sockets in a temp directory, with a fresh Bayes store
// there and auto-learning off (a CHECK of the ham would learn it, and TELL's
// answer would depend on the order of the cases): one with --allow-tell (-l),
// one without (to record TELL refused).
// Run as root, spamd runs as nobody:nogroup (setpriv); run as anyone else,
// spamd runs as that user. Both are stopped by PID and the temp directory is
// removed at the end, also on failure. Nothing listens on the network.
//
// After recording, review the diff: scores and rule hits change with
// SpamAssassin's rules, the report names this machine's hostname.
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const OUT = resolve(process.argv[2] ?? 'test/fixtures/spamd');
const message = (name) => readFileSync(join(OUT, 'messages', `${name}.eml`));
const GTUBE = message('gtube');
const HAM = message('ham');
const EIGHT_BIT = message('8bit');

/** "CMD SPAMC/1.5", the given header lines, then Content-length (unless none), the empty line, the message. */
function request(command, headerLines, body, length = body?.length) {
  let head = `${command} SPAMC/1.5\r\n`;
  for (const h of headerLines) head += `${h}\r\n`;
  if (length !== undefined) head += `Content-length: ${length}\r\n`;
  head += '\r\n';
  return body === undefined ? Buffer.from(head, 'latin1') : Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

// [name, spamd ('tell' or 'plain'), request bytes], recorded in this order (TELL learns, then forgets).
const CASES = [
  ['ping', 'tell', request('PING', [])],
  ['skip', 'tell', request('SKIP', [])],
  ['check-gtube', 'tell', request('CHECK', [], GTUBE)],
  ['check-ham', 'tell', request('CHECK', [], HAM)],
  ['check-ham-with-user', 'tell', request('CHECK', ['User: nobody'], HAM)],
  ['symbols-gtube', 'tell', request('SYMBOLS', [], GTUBE)],
  ['symbols-ham', 'tell', request('SYMBOLS', [], HAM)],
  ['report-gtube', 'tell', request('REPORT', [], GTUBE)],
  ['report-ham', 'tell', request('REPORT', [], HAM)],
  ['report-ifspam-gtube', 'tell', request('REPORT_IFSPAM', [], GTUBE)],
  ['report-ifspam-ham', 'tell', request('REPORT_IFSPAM', [], HAM)],
  ['process-gtube', 'tell', request('PROCESS', [], GTUBE)],
  ['process-ham', 'tell', request('PROCESS', [], HAM)],
  ['process-8bit', 'tell', request('PROCESS', [], EIGHT_BIT)],
  ['headers-gtube', 'tell', request('HEADERS', [], GTUBE)],
  ['headers-ham', 'tell', request('HEADERS', [], HAM)],
  ['tell-learn-spam', 'tell', request('TELL', ['Message-class: spam', 'Set: local'], GTUBE)],
  ['tell-learn-spam-again', 'tell', request('TELL', ['Message-class: spam', 'Set: local'], GTUBE)],
  ['tell-forget', 'tell', request('TELL', ['Remove: local'], GTUBE)],
  ['tell-learn-ham-with-user', 'tell', request('TELL', ['Message-class: ham', 'Set: local', 'User: nobody'], HAM)],
  ['error-unknown-command', 'tell', request('FROB', [], HAM)],
  ['error-header-without-colon', 'tell', request('CHECK', ['No colon here'], HAM)],
  ['error-user-control-chars', 'tell', request('CHECK', ['User: bad\x01name'], HAM)],
  ['error-compress-gzip', 'tell', request('CHECK', ['Compress: gzip'], HAM)],
  ['error-length-mismatch', 'tell', request('CHECK', [], HAM, HAM.length + 10)],
  ['error-tell-set-and-remove', 'tell', request('TELL', ['Message-class: spam', 'Set: local', 'Remove: local'], GTUBE)],
  ['error-tell-not-allowed', 'plain', request('TELL', ['Message-class: spam', 'Set: local'], GTUBE)],
];

/** Sends the request in one write, half-closes, and collects everything until spamd closes. */
function exchange(path, bytes, timeoutMs = 60_000) {
  return new Promise((resolvePromise, reject) => {
    const chunks = [];
    const socket = connect({ path });
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no reply from ${path} within ${timeoutMs} ms`)); }, timeoutMs);
    socket.on('connect', () => socket.end(bytes));
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', (err) => { clearTimeout(timer); reject(err); });
    socket.on('close', () => { clearTimeout(timer); resolvePromise(Buffer.concat(chunks)); });
  });
}

function startSpamd(dir, name, allowTell) {
  const home = join(dir, name);
  mkdirSync(home);
  const root = process.getuid?.() === 0;
  if (root) chownSync(home, 65534, 65534);
  const socket = join(home, 'spamd.sock');
  const args = ['-L', '-x', ...(allowTell ? ['-l'] : []), '-m', '1', '--min-children', '1', `--socketpath=${socket}`, `--cf=bayes_path ${join(home, 'bayes')}`, '--cf=bayes_auto_learn 0', '-s', 'stderr'];
  const [cmd, argv] = root ? ['setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'spamd', ...args]] : ['spamd', args];
  const env = { ...process.env, HOME: home, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` };
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env });
  let log = '';
  child.stderr.on('data', (d) => { log += d.toString('utf8'); });
  const exited = new Promise((r) => child.once('exit', (code, signal) => r(signal ?? code)));
  return { socket, child, exited, log: () => log };
}

async function waitForPing(s) {
  const deadline = Date.now() + 60_000;
  let exitedWith;
  void s.exited.then((v) => { exitedWith = v; });
  for (;;) {
    if (exitedWith !== undefined) throw new Error(`spamd exited (${exitedWith}) before answering PING:\n${s.log()}`);
    try {
      const reply = await exchange(s.socket, request('PING', []), 5_000);
      if (reply.toString('latin1').startsWith('SPAMD/')) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`spamd did not answer PING within 60 s:\n${s.log()}`);
    await sleep(100);
  }
}

async function stop(s) {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return;
  s.child.kill('SIGTERM');
  const gone = await Promise.race([s.exited.then(() => true), sleep(30_000, false, { ref: false })]);
  if (!gone) {
    s.child.kill('SIGKILL');
    await s.exited;
  }
}

const dir = mkdtempSync(join(tmpdir(), 'record-spamd-'));
chmodSync(dir, 0o755);
const servers = {};
try {
  servers.tell = startSpamd(dir, 'tell', true);
  servers.plain = startSpamd(dir, 'plain', false);
  await Promise.all([waitForPing(servers.tell), waitForPing(servers.plain)]);
  for (const [name, server, bytes] of CASES) {
    const reply = await exchange(servers[server].socket, bytes);
    writeFileSync(join(OUT, `${name}.request`), bytes);
    writeFileSync(join(OUT, `${name}.reply`), reply);
    console.log(`${name}: ${JSON.stringify(reply.subarray(0, 60).toString('latin1'))}${reply.length > 60 ? '...' : ''}`);
  }
} finally {
  await Promise.all(Object.values(servers).map(stop));
  rmSync(dir, { recursive: true, force: true });
}
