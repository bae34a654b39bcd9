#!/usr/bin/env node
// mailprocd: the daemon. `mailprocd [--config FILE]` runs it (no file = the
// embedded default); `mailprocd --check-config [--config FILE]` validates and
// prints the resolved configuration, exit 0 when good, 1 with every problem
// named by key when not.
//
// Exit codes of the daemon: 1 when it cannot start — one line naming what to
// fix, e.g. "state directory /var/lib/mailprocd is in use by mailprocd pid
// 1234" when another instance holds the state directory
// (src/state/instance-lock.ts); 64 for bad options.
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/index.js';
import { createLogger } from '../log.js';
import { parseDefaultDestination, startDaemon } from '../main.js';

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
  let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let stopRequested: string | undefined;
  const shutdown = (sig: string): void => {
    process.stderr.write(`mailprocd: ${sig} received\n`);
    if (daemon === undefined) stopRequested = sig;
    else void daemon.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => void daemon?.reload());
  try {
    daemon = await startDaemon(args.config !== undefined ? { configFile: args.config } : {});
  } catch (err) {
    const msg = err instanceof ConfigError ? err.message : `cannot start: ${(err as Error).message}`;
    createLogger({ format: 'text', level: 'info' }).error(msg);
    return 1;
  }
  if (stopRequested !== undefined) void daemon.stop().then(() => process.exit(0));
  return -1; // keep running
}

void main().then((code) => {
  if (code >= 0) process.exit(code);
});
