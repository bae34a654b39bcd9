// mailmond against a real mailprocd (test/helpers/daemon.ts) whose rules
// have a probe address and whose config sets probe.key; mailmond hands its
// probes to the daemon's own SMTP listener. The tests run in order on one
// daemon: check arrives; a forged probe is ignored and counted; a probe to a
// mailbox is never recorded (exit 2 after the threshold); run serves
// /metrics and runs its alert command once the daemon is stopped; check with
// the daemon stopped exits 2 within its threshold. The scrape is checked
// with Prometheus's own `promtool check metrics` where it is installed. Every wait is on a
// condition (a log line, a file, a scrape), bounded only as a hang detector.
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createTransport } from 'nodemailer';
import { askDaemon } from '../../src/cli/mailproc/control-client.js';
import { formatProbeHeader } from '../../src/mail/probe-token.js';
import { findProgram } from '../helpers/components.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/wait.js';

const MAILMOND = join(process.cwd(), 'dist/src/cli/mailmond.js');
const KEY = 'mailmond-test-key-0123456789abcdef';
const RULES = `
probe@example.test  probe
alice@example.test  maildir:\${MAIL}/\${user}/Maildir/
`;
const HANG_MS = 60_000;

interface Run { code: number; stdout: string; stderr: string; ms: number }

function mailmond(args: readonly string[]): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [MAILMOND, ...args], { timeout: HANG_MS, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? (err as unknown as { code: number }).code : -1;
      resolve({ code, stdout: String(stdout), stderr: String(stderr), ms: Date.now() - started });
    });
  });
}

let daemon: TestDaemon | undefined;
async function running(): Promise<TestDaemon> {
  daemon ??= await startDaemon({ rules: RULES, config: { probe: { key: KEY } } });
  return daemon;
}
const children: ChildProcess[] = [];
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await daemon?.stop();
  daemon?.cleanup();
});

const common = (d: TestDaemon, threshold: string): string[] => ['--config', d.configFile, '--to', 'probe@example.test', '--smtp', `127.0.0.1:${d.smtpPort}`, '--threshold', threshold];

/** Every file under a directory, recursively. */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]));
}

void test('mailmond check: the probe arrives, exit 0, a table of non-negative stages that sum to at most the total, and no mail is kept', async () => {
  const d = await running();
  const r = await mailmond(['check', ...common(d, '30s')]);
  assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^OK: probe \S+ to probe@example\.test arrived in [\d.]+ s/);
  const seconds = (stage: string): number => {
    const m = new RegExp(`^${stage}\\s+([\\d.]+)\\s`, 'm').exec(r.stdout);
    assert.ok(m !== null, `no ${stage} row in\n${r.stdout}`);
    return Number(m[1]);
  };
  const stages = ['mta', 'before', 'slot', 'transfer', 'work'].map(seconds);
  for (const s of stages) assert.ok(s >= 0);
  // Rounded to milliseconds in the table: the sum may gain up to 0.5 ms a row.
  assert.ok(stages.reduce((a, b) => a + b, 0) <= seconds('total') + 0.003, r.stdout);
  await d.waitForLog(/to=<probe@example\.test>, relay=probe, .*status=sent \(probe \S+ recorded/);
  assert.deepEqual(filesUnder(d.mail), [], 'nothing written under the mail root');
});

void test('a forged probe (another key) is answered 250, ignored, logged and counted, and never recorded', async () => {
  const d = await running();
  const transport = createTransport({ host: '127.0.0.1', port: d.smtpPort, secure: false, ignoreTLS: true });
  try {
    const info = await transport.sendMail({
      envelope: { from: 'forger@remote.test', to: ['probe@example.test'] },
      from: 'forger@remote.test', to: 'probe@example.test', subject: 'not a probe',
      headers: { 'X-Mailmond-Probe': formatProbeHeader('the-wrong-key-0123456789', 'forged1', Date.now()) },
      text: 'forged\n',
    });
    assert.match(info.response, /^250 /);
  } finally {
    transport.close();
  }
  await d.waitForLog(/probe to probe@example\.test ignored: probe forged1: bad signature.*reason=forged/);
  await d.waitForLog(/to=<probe@example\.test>, relay=probe, .*status=sent \(probe ignored \(forged\)/);
  const reply = await askDaemon(join(d.dir, 'state', 'run', 'control.sock'), { cmd: 'probe', id: 'forged1' });
  assert.equal(reply.ok, true);
  assert.equal(reply.probe, null);
  const counts = reply.counts as Record<string, number>;
  assert.ok((counts.forged ?? 0) >= 1, JSON.stringify(counts));
  assert.ok((counts.recorded ?? 0) >= 1, JSON.stringify(counts));
});

void test('mailmond check: a probe that is delivered but never recorded (a mailbox, not a probe address) exits 2 after the threshold', async () => {
  const d = await running();
  const r = await mailmond(['check', '--config', d.configFile, '--to', 'alice@example.test', '--smtp', `127.0.0.1:${d.smtpPort}`, '--threshold', '2s']);
  assert.equal(r.code, 2, `exit ${r.code}\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^CRITICAL: probe \S+ to alice@example\.test did not arrive: not arrived within 2 s/);
  assert.ok(r.ms >= 2000, 'it waited for the threshold');
});

void test('mailmond run: serves Prometheus text on loopback and runs the alert command once the daemon is stopped', async () => {
  const d = await running();
  const alerts = join(d.dir, 'alerts');
  writeFileSync(alerts, '');
  const child = spawn(process.execPath, [MAILMOND, 'run', ...common(d, '10s'), '--interval', '500ms', '--listen', '127.0.0.1:0',
    '--alert-command', `echo "$MAILMOND_RESULT $MAILMOND_PROBE_ID $MAILMOND_DELAY" >> ${alerts}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout.on('data', (b: Buffer) => { out += b.toString('utf8'); });
  child.stderr.on('data', (b: Buffer) => { out += b.toString('utf8'); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const diag = (): string => `\n--- mailmond ---\n${out}`;

  const port = await waitFor('the metrics address in mailmond\'s first line', () => /metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(out)?.[1], HANG_MS, diag);
  const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const arrived = await waitFor('an arrived probe in /metrics', async () => {
    const text = await scrape();
    return /^mailmond_probes_total\{result="arrived"\} [1-9]/m.test(text) ? text : undefined;
  }, HANG_MS, diag);
  assert.match(arrived, /^# TYPE mailmond_probes_total counter$/m);
  const promtool = findProgram('promtool');
  if (promtool !== undefined) {
    const lint = spawnSync(promtool, ['check', 'metrics'], { input: arrived, encoding: 'utf8' });
    assert.equal(lint.status, 0, `promtool check metrics:\n${lint.stdout}${lint.stderr}`);
  }
  assert.match(arrived, /^mailmond_delay_seconds\{stage="total",window="5m",quantile="0.99"\} [\d.e-]+$/m);
  assert.match(arrived, /^mailmond_last_delay_seconds\{stage="mta"\} [\d.e-]+$/m);
  assert.match(out, /probe \S+ arrived total=[\d.]+s mta=/, 'one plain line per probe when not on a terminal');
  assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
  assert.equal(readFileSync(alerts, 'utf8'), '', 'no alert while probes arrive');

  await d.stop();
  const alert = await waitFor('the alert command\'s line', () => readFileSync(alerts, 'utf8').split('\n').find((l) => l !== ''), HANG_MS, diag);
  assert.match(alert, /^(unsent|lost) \S+ inf$/);
  const after = await scrape();
  assert.match(after, /^mailmond_probes_total\{result="(unsent|lost)"\} [1-9]/m);
  assert.match(after, /^mailmond_last_delay_seconds\{stage="total"\} \+Inf$/m, 'a probe that did not arrive is +Inf, not a gap');

  child.kill('SIGTERM');
  assert.equal(await exited, 0, diag());
});

void test('mailmond check with the daemon stopped exits 2 within the threshold', async () => {
  const d = await running();
  await d.stop();
  const r = await mailmond(['check', ...common(d, '20s')]);
  assert.equal(r.code, 2, `exit ${r.code}\n${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^CRITICAL: probe \S+ to probe@example\.test not sent: 127\.0\.0\.1:\d+ did not take the probe/);
  // The threshold bounds the probe; node's own start comes on top.
  assert.ok(r.ms < 20_000 + 10_000, `took ${r.ms} ms`);
});

void test('mailmond: usage errors exit 64 and a config without probe.key exits 3', async () => {
  const d = await running();
  assert.equal((await mailmond(['check'])).code, 64);
  assert.equal((await mailmond(['frobnicate', '--to', 'a@b'])).code, 64);
  assert.equal((await mailmond(['run', '--to', 'a@b', '--listen', '0.0.0.0:9743', '--config', d.configFile])).code, 64);
  const noKey = join(d.dir, 'nokey.yaml');
  writeFileSync(noKey, `paths:\n  state: ${join(d.dir, 'state')}\n`);
  const r = await mailmond(['check', '--to', 'probe@example.test', '--config', noKey]);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /probe\.key is not set/);
});
