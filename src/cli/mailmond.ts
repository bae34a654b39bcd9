#!/usr/bin/env node
// mailmond: the delivery-delay monitor (docs/mailmond.md). Sends probe
// messages through the MTA to an address whose rule is `probe`, and reads
// their arrival from mailprocd over <run>/control.sock (mailmond/probe.ts
// says why there).
//   mailmond check --to ADDR [--smtp HOST:PORT] [--threshold 60s]
//       one probe; prints a status line and the table of its stages
//   mailmond run --to ADDR [--interval 60s] [--listen 127.0.0.1:9743]
//                [--alert-command CMD] [--threshold 60s] [--smtp HOST:PORT]
//       a probe every interval, p50/p99 windows, Prometheus /metrics, alerts
// Both take --config FILE (the same file as mailprocd: probe.key, paths.run)
// and --from ADDR (the probe's envelope sender; default the null sender).
// Exit codes of check, as a Nagios plugin reads them: 0 arrived within the
// threshold, 2 did not (or the MTA did not take it), 3 cannot probe (bad
// config file, no probe.key); 64 for bad options (an unknown one is named).
// --version prints "mailmond VERSION", --help the usage, both on stdout,
// exit 0. run exits 0 after SIGTERM/SIGINT, 1 when it cannot start, 64 for
// bad options.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadDiscoveredConfig, packageVersion, type Config } from '../config/index.js';
import { duration } from '../config/units.js';
import { createLogger, setProcessName } from '../log.js';
import { probeOnce, type ProbeTarget } from './mailmond/probe.js';
import { formatCheck } from './mailmond/report.js';
import { parseLoopbackListen, runMonitor } from './mailmond/run.js';

const USAGE = `usage: mailmond check --to ADDR [--smtp HOST:PORT] [--threshold 60s] [--from ADDR] [--config FILE]
       mailmond --version | --help
       mailmond run --to ADDR [--interval 60s] [--listen 127.0.0.1:9743] [--alert-command CMD]
                    [--threshold 60s] [--smtp HOST:PORT] [--from ADDR] [--config FILE]
  --to ADDR            the probe address (a "probe" rule in mailprocd's rules table)
  --smtp HOST:PORT     the MTA the probe is handed to (default 127.0.0.1:25)
  --threshold DUR      a probe not arrived within this is an alert (default 60s)
  --interval DUR       run: time between probes (default 60s)
  --listen HOST:PORT   run: Prometheus metrics at http://HOST:PORT/metrics, loopback only (default 127.0.0.1:9743)
  --alert-command CMD  run: run CMD (/bin/sh -c) for a probe past the threshold or lost
  --from ADDR          the probe's envelope sender (default the null sender)
  --config FILE        mailprocd's configuration (probe.key, paths.run)
check exits 0 when the probe arrived within the threshold, 2 when it did not, 3 when it cannot probe.
`;

const OPTIONS = {
  config: { type: 'string', short: 'c' }, to: { type: 'string' }, smtp: { type: 'string' }, threshold: { type: 'string' },
  interval: { type: 'string' }, listen: { type: 'string' }, 'alert-command': { type: 'string' }, from: { type: 'string' },
  help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'V' },
} as const;

class UsageError extends Error {}

function parseDuration(name: string, text: string): number {
  const r = duration.safeParse(text);
  if (!r.success || !(r.data > 0)) throw new UsageError(`--${name} ${text}: expected a duration such as 30s, 5m or 500ms`);
  return r.data;
}

function parseSmtp(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+))(?::(\d{1,5}))?$/.exec(text);
  const port = Number(m?.[3] ?? 25);
  if (m === null || port < 1 || port > 65_535) throw new UsageError(`--smtp ${text}: expected HOST:PORT, e.g. 127.0.0.1:25`);
  return { host: m[1] ?? m[2] ?? '', port };
}

async function main(argv: string[]): Promise<number> {
  setProcessName('mailmond');
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    // As mailproc and mailprocd say it: `mailmond: unknown option "--bogus"`, not parseArgs' paragraph.
    const unknown = /^Unknown option '([^']*)'/.exec((err as Error).message);
    process.stderr.write(`mailmond: ${unknown !== null ? `unknown option "${unknown[1]}"` : (err as Error).message}\n${USAGE}`);
    return 64;
  }
  const v = parsed.values;
  const [command, ...extra] = parsed.positionals;
  if (v.help === true) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (v.version === true) {
    process.stdout.write(`mailmond ${packageVersion()}\n`);
    return 0;
  }
  if ((command !== 'check' && command !== 'run') || extra.length > 0) {
    process.stderr.write(`mailmond: ${command === undefined ? 'no command given' : extra.length > 0 ? `unexpected argument "${extra[0]}"` : `unknown command "${command}"`}\n${USAGE}`);
    return 64;
  }
  const cannot = command === 'check' ? 3 : 1;
  let target: ProbeTarget;
  let config: Config;
  try {
    if (v.to === undefined || !/^[^@\s]+@[^@\s]+$/.test(v.to)) throw new UsageError(`--to: expected the probe address, user@domain${v.to !== undefined ? `, not "${v.to}"` : ''}`);
    if (command === 'check' && (v.interval !== undefined || v.listen !== undefined || v['alert-command'] !== undefined)) {
      throw new UsageError('--interval, --listen and --alert-command are for mailmond run');
    }
    const smtp = parseSmtp(v.smtp ?? '127.0.0.1:25');
    const thresholdMs = parseDuration('threshold', v.threshold ?? '60s');
    try {
      config = loadDiscoveredConfig(v.config);
    } catch (err) {
      process.stderr.write(`mailmond: ${err instanceof ConfigError ? err.message : (err as Error).message}\n`);
      return cannot;
    }
    const key = config.probe.key;
    if (key === undefined) {
      process.stderr.write(`mailmond: probe.key is not set in ${config.file ?? 'the embedded default configuration'}: mailprocd ignores every probe without it (docs/mailmond.md)\n`);
      return cannot;
    }
    target = { to: v.to, from: v.from ?? '', ...smtp, key, controlSocket: join(config.paths.run, 'control.sock'), thresholdMs };
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`mailmond: ${err.message}\n${USAGE}`);
    return 64;
  }

  if (command === 'check') {
    const outcome = await probeOnce(target);
    process.stdout.write(formatCheck(outcome, target.thresholdMs, target.to));
    return outcome.result === 'arrived' ? 0 : 2;
  }
  let intervalMs: number;
  let listen: { host: string; port: number };
  try {
    intervalMs = parseDuration('interval', v.interval ?? '60s');
    const l = parseLoopbackListen(v.listen ?? '127.0.0.1:9743');
    if (typeof l === 'string') throw new UsageError(l);
    listen = l;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`mailmond: ${err.message}\n${USAGE}`);
    return 64;
  }
  const log = createLogger(config.log);
  const live = process.stdout.isTTY;
  return runMonitor({
    target, intervalMs, listen, live, log, write: (text) => process.stdout.write(text),
    ...(v['alert-command'] !== undefined ? { alertCommand: v['alert-command'] } : {}),
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`mailmond: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
