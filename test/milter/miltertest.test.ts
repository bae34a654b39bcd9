// Debian's miltertest (OpenDKIM's milter test client, package "miltertest")
// plays the MTA against a real mailprocd with examples/milter/site-policy.mjs
// loaded from milter.filters: one Lua script per case under test/milter/lua/,
// each asserting what an MTA would get — the protocol steps negotiated away,
// reply codes at RCPT, end of headers and end of message, the headers added,
// inserted and changed, the body replaced, recipients deleted and added, the
// quarantine. The built-in checks are off so that the example's own steps are
// what is negotiated. The script docs/milter-api.md shows runs as written.
// A second daemon loads a filter stuck in an endless
// loop: LMTP answers while the filter is stuck, the MTA gets a tempfail at
// milter.filter_timeout (on_filter_error), and the next connection is served.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test, type TestContext } from 'node:test';
import { requireProgram } from '../helpers/components.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { lmtpRcptCode } from '../helpers/raw-client.js';

const EXAMPLE = join(process.cwd(), 'examples/milter/site-policy.mjs');
const LUA = join(process.cwd(), 'test/milter/lua');
/** examples/milter/site-policy.mjs's WARNING: a changed text fails external-text.lua, as it should. */
const WARNING = 'This message came from outside example.test. Do not open links or attachments you did not expect.';
const sha256 = (s: string): string => createHash('sha256').update(s, 'latin1').digest('hex');

/** miltertest's own read timeout is 10 s; this one only keeps a hung run from hanging the suite. */
const RUN_LIMIT_MS = 60_000;

function miltertest(program: string, script: string, vars: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const args = [...Object.entries(vars).flatMap(([k, v]) => ['-D', `${k}=${v}`]), '-s', resolve(LUA, script)];
  return new Promise((resolve) => {
    execFile(program, args, { timeout: RUN_LIMIT_MS, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, out: `${stdout}${stderr}${err?.killed === true ? `\nkilled after ${RUN_LIMIT_MS} ms` : ''}` });
    });
  });
}

async function runCase(t: TestContext, program: string, d: TestDaemon, script: string, vars: Record<string, string> = {}): Promise<void> {
  const r = await miltertest(program, script, { socket: d.milterSocket, ...vars });
  assert.equal(r.code, 0, `miltertest -s ${script} failed:\n${r.out}\n--- daemon log:\n${d.logs.slice(-30).join('\n')}`);
  t.diagnostic(`${script}: ok`);
}

const CASES: { script: string; what: string; vars?: Record<string, string> }[] = [
  { script: 'negotiate.lua', what: 'only the steps the example handles are negotiated: no HELO, DATA or unknown commands' },
  { script: 'refuse-recipient.lua', what: 'a no-reply recipient gets the example\'s reply code at RCPT, the next recipient goes on' },
  { script: 'two-from.lua', what: 'two From: headers: the message is refused with a reply code at end of headers' },
  {
    script: 'external-text.lua', what: 'external plain text: Subject tagged, warning appended, retired recipient replaced, archive copy, X-Site-Policy inserted first',
    vars: { warning: WARNING, sha: sha256('Hi Bob,\r\nsee you at 10.\r\n') },
  },
  { script: 'external-executable.lua', what: 'an external executable attachment: 550 5.7.1 with the example\'s text at end of message, nothing modified' },
  {
    script: 'internal-hold.lua', what: 'an internal executable attachment: quarantined with the reason, a header says why, not tagged',
    vars: { sha: sha256('Content-Disposition: attachment; filename=run.js\r\n\r\nalert(1)\r\n') },
  },
  { script: 'no-subject.lua', what: 'external mail without a Subject gets "[EXTERNAL]" added; a multipart body is left alone' },
];

test('miltertest drives the example filter through mailprocd\'s milter socket: each action observed', async (t) => {
  const program = requireProgram(t, 'miltertest', 'miltertest');
  if (program === undefined) return;
  const d = await startDaemon({ config: { milter: { filters: [EXAMPLE], policy: false, spam: { enabled: false } } } });
  t.after(async () => {
    await d.stop();
    d.cleanup();
  });
  assert.ok(d.logs.some((l) => l.includes('milter filter site-policy.mjs loaded from')), d.logs.join('\n'));
  for (const c of CASES) await t.test(c.what, (tc) => runCase(tc, program, d, c.script, c.vars));
  await t.test('the miltertest script docs/milter-api.md shows passes as written', async (tc) => {
    const docs = await readFile(join(process.cwd(), 'docs/milter-api.md'), 'utf8');
    const script = /cat > tag\.lua <<'EOF'\n([\s\S]*?)\nEOF\n/.exec(docs)?.[1];
    assert.ok(script !== undefined, 'docs/milter-api.md has no tag.lua block');
    const dir = await mkdtemp(join(tmpdir(), 'milter-docs-'));
    tc.after(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'tag.lua'), `${script}\n`);
    await runCase(tc, program, d, join(dir, 'tag.lua'));
  });
  // The filter's console.log, in the daemon's log under its name.
  await d.waitForLog(/milter filter site-policy\.mjs: holding a message from <carol@example\.test>: executable attachment run\.js/);
});

test('a filter stuck in a loop: LMTP answers meanwhile, the MTA gets a tempfail at milter.filter_timeout, and the next connection is served', async (t) => {
  const program = requireProgram(t, 'miltertest', 'miltertest');
  if (program === undefined) return;
  const loop = join(process.cwd(), 'dist/test/milter/fixtures/loop.js');
  // Far above a call's latency on a loaded machine, far below miltertest's 10 s read timeout.
  const d = await startDaemon({ config: { milter: { filters: [loop], policy: false, spam: { enabled: false }, filter_timeout: '3s', on_filter_error: 'tempfail' } } });
  t.after(async () => {
    await d.stop();
    d.cleanup();
  });
  let finished = false;
  const run = miltertest(program, 'loop-tempfail.lua', { socket: d.milterSocket }).finally(() => (finished = true));
  // While the filter's worker is stuck, the daemon's own event loop answers LMTP.
  await d.waitForLog(/milter filter loop\.js: stuck in a loop/);
  assert.equal(await lmtpRcptCode(d.lmtpPort, 'alice@example.test'), 250);
  assert.equal(finished, false, 'the stuck call was over before LMTP was asked: the test proved nothing');
  const r = await run;
  assert.equal(r.code, 0, `miltertest -s loop-tempfail.lua failed:\n${r.out}\n--- daemon log:\n${d.logs.slice(-30).join('\n')}`);
  await d.waitForLog(/milter filter loop\.js.*header.*milter\.filter_timeout \(3000 ms\)/);
});
