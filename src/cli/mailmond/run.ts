// `mailmond run`: a probe every interval (the first at once; a slow one does
// not hold the next back), p50/p99 over 5 minutes and an hour (stats.ts),
// Prometheus text on a loopback HTTP listener (GET /metrics), one log line
// per probe (or, on a terminal, a live screen instead), and the alert
// command for every probe that is slow, lost or not taken by the MTA. Runs
// until SIGTERM or SIGINT, then closes the listener and exits 0; probes
// still waiting are abandoned (no alert for them).
//
// The alert command runs with /bin/sh -c, once per alerting probe, with
// MAILMOND_RESULT (slow|lost|unsent), MAILMOND_PROBE_ID, MAILMOND_DELAY
// (seconds, "inf" when it did not arrive), MAILMOND_THRESHOLD (seconds) and
// MAILMOND_REASON in its environment; it is killed after ALERT_TIMEOUT_MS.
// Its failure is logged, never fatal.
//
// Exports: runMonitor, RunOptions, parseLoopbackListen.
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { isIP } from 'node:net';
import type { Logger } from '../../log.js';
import { probeOnce, type ProbeOutcome, type ProbeTarget } from './probe.js';
import { formatProbeLine, formatScreen } from './report.js';
import { classify, ProbeStats, type Result } from './stats.js';

const ALERT_TIMEOUT_MS = 60_000;
const RECENT_LINES = 12;

export interface RunOptions {
  readonly target: ProbeTarget;
  readonly intervalMs: number;
  readonly listen: { readonly host: string; readonly port: number };
  readonly alertCommand?: string;
  /** A terminal: the live screen instead of log lines. */
  readonly live: boolean;
  readonly log: Logger;
  /** Where the live screen goes. */
  readonly write: (text: string) => void;
}

/** HOST:PORT (or [V6]:PORT) on a loopback address, or what is wrong with it. */
export function parseLoopbackListen(spec: string): { host: string; port: number } | string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(spec);
  if (m === null) return `--listen ${spec}: expected HOST:PORT, e.g. 127.0.0.1:9743`;
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (port > 65_535) return `--listen ${spec}: port out of range`;
  const loopback = host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
  if (!loopback) return `--listen ${spec}: metrics are served on loopback only (127.0.0.0/8, ::1, localhost); put a proxy in front to publish them`;
  return { host, port };
}

function runAlert(command: string, o: ProbeOutcome, result: Result, thresholdMs: number, log: Logger): void {
  const delay = o.result === 'arrived' ? o.stages.total.toFixed(3) : 'inf';
  const reason = o.result === 'arrived' ? `arrived in ${delay} s, past the threshold of ${thresholdMs / 1000} s` : o.reason;
  const child = spawn('/bin/sh', ['-c', command], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, MAILMOND_RESULT: result, MAILMOND_PROBE_ID: o.id, MAILMOND_DELAY: delay, MAILMOND_THRESHOLD: String(thresholdMs / 1000), MAILMOND_REASON: reason },
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { if (stderr.length < 1000) stderr += d.toString('utf8'); });
  const timer = setTimeout(() => child.kill('SIGKILL'), ALERT_TIMEOUT_MS);
  child.on('error', (err) => log.error(`alert command could not run: ${err.message}`));
  child.on('exit', (code, signal) => {
    clearTimeout(timer);
    if (code !== 0) log.error(`alert command for probe ${o.id} ${signal !== null ? `killed by ${signal}` : `exited ${code}`}${stderr !== '' ? `: ${stderr.trim().split('\n')[0]}` : ''}`);
  });
}

/** Runs until a signal; resolves with the exit code. */
export async function runMonitor(o: RunOptions): Promise<number> {
  const stats = new ProbeStats();
  const recent: string[] = [];
  const thresholdMs = o.target.thresholdMs;
  const header = `mailmond: probing ${o.target.to} via ${o.target.host}:${o.target.port} every ${o.intervalMs / 1000} s, threshold ${thresholdMs / 1000} s, metrics http://${o.listen.host.includes(':') ? `[${o.listen.host}]` : o.listen.host}:${o.listen.port}/metrics`;
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?') === true)) {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(stats.formatMetrics(Date.now(), thresholdMs));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('mailmond serves /metrics only\n');
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.listen.port, o.listen.host, () => resolve());
    });
  } catch (err) {
    o.log.error(`cannot listen on ${o.listen.host}:${o.listen.port}: ${(err as Error).message}`);
    return 1;
  }
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : o.listen.port;
  o.log.info(`${header.replace(`:${o.listen.port}/metrics`, `:${port}/metrics`)}`);
  if (o.live) o.write(formatScreen(stats, recent, header, Date.now()));

  const finish = (p: ProbeOutcome): void => {
    const result = classify(p, thresholdMs);
    const now = Date.now();
    stats.add(p, result, now);
    if (p.counts !== undefined) {
      const { recorded: _recorded, ...ignored } = p.counts;
      stats.ignored = ignored;
    }
    const line = formatProbeLine(p, result);
    if (o.live) {
      recent.unshift(`${new Date(now).toLocaleTimeString()}  ${line}`);
      recent.length = Math.min(recent.length, RECENT_LINES);
      o.write(formatScreen(stats, recent, header, now));
    } else if (result === 'arrived') {
      o.log.info(line);
    } else {
      o.log.warn(line);
    }
    if (result !== 'arrived' && o.alertCommand !== undefined) runAlert(o.alertCommand, p, result, thresholdMs, o.log);
  };
  const probe = (): void => {
    probeOnce(o.target).then(finish, (err: unknown) => o.log.error(`probe failed: ${(err as Error).stack ?? String(err)}`));
  };
  probe();
  const timer = setInterval(probe, o.intervalMs);
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  clearInterval(timer);
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  o.log.info('stopped');
  return 0;
}
