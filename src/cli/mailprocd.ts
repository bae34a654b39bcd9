#!/usr/bin/env node
// mailprocd: the daemon. `mailprocd [--config FILE]` runs it (no file = the
// embedded default); `mailprocd --check-config [--config FILE]` validates and
// prints the resolved configuration, exit 0 when good, 1 with every problem
// named by key when not.
//
// Exit codes of the daemon: 0 after SIGTERM/SIGINT once stopped (main.ts
// stop(): within limits.shutdown_grace plus a few seconds; if anything still
// hangs at grace + STOP_SLACK_MS the process exits 1 with a line saying so);
// 1 when it cannot start — one line naming what to fix, e.g. "state directory
// /var/lib/mailprocd is in use by mailprocd pid 1234" when another instance
// holds the state directory (src/state/instance-lock.ts); 64 for bad options.
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/index.js';
import { createLogger } from '../log.js';
import { probeRelay } from '../relay/index.js';
import { parseDefaultDestination, startDaemon, STOP_SLACK_MS, type Daemon } from '../main.js';

const USAGE = `usage: mailprocd [--config FILE] [--check-config]
  --config FILE    YAML configuration (default: the embedded default, state under ./var)
  --check-config   validate the configuration and print it, then exit
`;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: { config: { type: 'string', short: 'c' }, 'check-config': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }).values;
  } catch (err) {
    process.stderr.write(`mailprocd: ${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args['check-config']) {
    try {
      const c = loadConfig(args.config);
      parseDefaultDestination(c.delivery.default);
      const relay = await probeRelay(c.relay);
      if (relay !== undefined) process.stderr.write(`mailprocd: warning: ${relay}\n`);
      process.stdout.write(`${JSON.stringify(c, null, 2)}\n`);
      process.stderr.write(`mailprocd: configuration ${c.file ?? '(embedded default)'} is valid\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`mailprocd: ${(err as Error).message}\n`);
      return 1;
    }
  }
  // Handlers go in before start-up: listeners open early, and a signal that
  // arrives before the rest is ready must not kill the daemon outright.
  let daemon: Daemon | undefined;
  let stopRequested: string | undefined;
  const shutdown = (sig: string): void => {
    process.stderr.write(`mailprocd: ${sig} received\n`);
    if (daemon === undefined) stopRequested = sig;
    else stopAndExit(daemon);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => void daemon?.reload());
  // Also keeps SIGUSR1 from opening Node's inspector on a root process.
  process.on('SIGUSR1', () => daemon?.reopenLogs());
  try {
    daemon = await startDaemon(args.config !== undefined ? { configFile: args.config } : {});
  } catch (err) {
    const msg = err instanceof ConfigError ? err.message : `cannot start: ${(err as Error).message}`;
    createLogger({ format: 'text', level: 'info' }).error(msg);
    return 1;
  }
  if (stopRequested !== undefined) stopAndExit(daemon);
  return -1; // keep running
}

/** Stops and exits 0; a stop that outlives the grace by STOP_SLACK_MS (a bug, or a hung close) exits 1 anyway. */
function stopAndExit(d: Daemon): void {
  const limit = d.config().limits.shutdown_grace + STOP_SLACK_MS;
  const backstop = setTimeout(() => {
    createLogger({ format: 'text', level: 'info' }).error(`not stopped ${limit / 1000} s after the signal; exiting now (spooled mail stays queued)`);
    process.exit(1);
  }, limit);
  backstop.unref();
  void d.stop().then(() => process.exit(0));
}

void main().then((code) => {
  if (code >= 0) process.exit(code);
});
