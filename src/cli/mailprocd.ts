#!/usr/bin/env node
// mailprocd: the daemon. `mailprocd [--config FILE]` runs it; `mailprocd
// --check-config [--config FILE]` validates the configuration and prints the
// effective one as YAML on stdout (in the config's own units: 5m, 10M),
// "configuration … is valid" on stderr, exit 0 when good, 1 with every
// problem named by key when not. `--version` prints the package version.
// `--log-format text|json` overrides log.format (JSON lines for log shippers).
// The configuration is found as for every mailproc command
// (src/config/discover.ts): --config, $MAILPROCD_CONFIG,
// /etc/mailprocd/mailprocd.yaml, else the embedded default under the package.
//
// Exit codes of the daemon: 0 after SIGTERM/SIGINT once stopped (main.ts
// stop(): within limits.shutdown_grace plus a few seconds; if anything still
// hangs at grace + STOP_SLACK_MS the process exits 1 with a line saying so);
// 1 when it cannot start — one line naming what to fix, e.g. "state directory
// /var/lib/mailprocd is in use by mailprocd pid 1234" when another instance
// holds the state directory (src/state/instance-lock.ts); 64 for bad options.
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, discoverConfig, loadConfigFrom, packageVersion } from '../config/index.js';
import { formatConfigYaml } from '../config/print.js';
import { createLogger } from '../log.js';
import { loadMilterFilters } from '../milter/index.js';
import { probeRelay } from '../relay/index.js';
import { parseDefaultDestination, startDaemon, STOP_SLACK_MS, type Daemon } from '../main.js';

interface Options { config?: string; checkConfig?: boolean; logFormat?: 'text' | 'json' }

/** The options, or the exit code once help, the version or a usage error was printed. */
function parseOptions(argv: string[]): Options | number {
  const program = new Command('mailprocd')
    .description('mail delivery server: LMTP/SMTP intake, per-user rules, Maildir and mbox delivery')
    .option('-c, --config <file>', 'YAML configuration (default: $MAILPROCD_CONFIG, else /etc/mailprocd/mailprocd.yaml if it exists, else the embedded default, state under the package\'s ./var)')
    .option('--check-config', 'validate the configuration, print the effective one as YAML, then exit')
    .addOption(new Option('--log-format <format>', 'log lines as text (Postfix style) or json (one object per line); overrides log.format').choices(['text', 'json']))
    .version(`mailprocd ${packageVersion()}`, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'print this help and exit')
    .exitOverride()
    .configureOutput({ outputError: () => undefined });
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    if (err.exitCode === 0) return 0;
    const what = /unknown option '([^']*)'/.exec(err.message);
    process.stderr.write(`mailprocd: ${what !== null ? `unknown option "${what[1]}"` : err.message.replace(/^error: /, '')}\n${program.helpInformation()}`);
    return 64;
  }
  return program.opts<Options>();
}

async function main(): Promise<number> {
  const args = parseOptions(process.argv.slice(2));
  if (typeof args === 'number') return args;
  const source = discoverConfig({ option: args.config });
  if (args.checkConfig === true) {
    try {
      const c = loadConfigFrom(source);
      parseDefaultDestination(c.delivery.default);
      const relay = await probeRelay(c.relay);
      if (relay !== undefined) process.stderr.write(`mailprocd: warning: ${relay}\n`);
      // Users' milter filters are loaded (each in its worker) and ended again: a module that
      // would stop the start is named now, as the start would name it (milter.filters[i]).
      if (c.milter.filters.length > 0) {
        const loaded = await loadMilterFilters({
          paths: c.milter.filters, baseDir: source.kind === 'default' ? source.base : process.cwd(), timeoutMs: c.milter.filter_timeout,
          log: createLogger({ format: 'text', level: 'warn' }),
        });
        await loaded.close();
      }
      process.stdout.write(formatConfigYaml(c));
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
    // In the daemon's log format: a raw line would break a JSON log and lack the journal's priority.
    (daemon?.log ?? createLogger({ format: args.logFormat ?? 'text', level: 'info' })).info(`${sig} received`);
    if (daemon === undefined) stopRequested = sig;
    else stopAndExit(daemon);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => void daemon?.reload());
  // Also keeps SIGUSR1 from opening Node's inspector on a root process.
  process.on('SIGUSR1', () => daemon?.reopenLogs());
  try {
    // The embedded default's relative paths (./var, ./db, its sockets, the
    // default Maildir) belong to the package, whoever starts it from where.
    if (source.kind === 'default') process.chdir(source.base);
    daemon = await startDaemon({
      ...(source.kind === 'file' ? { configFile: source.file } : {}),
      ...(args.logFormat !== undefined ? { logFormat: args.logFormat } : {}),
    });
  } catch (err) {
    const msg = err instanceof ConfigError ? err.message : `cannot start: ${(err as Error).message}`;
    createLogger({ format: args.logFormat ?? 'text', level: 'info' }).error(msg);
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
