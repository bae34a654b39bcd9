#!/usr/bin/env node
// mailproc: the administrator's command. This file only declares the command
// line (commander) and dispatches; each subcommand lives in
// mailproc/<name>.ts, whose header states its contract:
//   mailproc db compile [TABLE…] | show TABLE KEY | sync --from URL | transport-map   the administrator's tables (mailproc/db.ts)
//   mailproc status [--json]                        workers, load, spam checkers, queue, delay (mailproc/status.ts)
//   mailproc queue list | show ID | flush | delete ID  [--json]                      (mailproc/queue.ts)
//   mailproc lists sync LIST --mailman URL … | --file PATH                           (mailproc/lists.ts)
//   mailproc state migrate                          the shared policy state's schema  (mailproc/state.ts)
//   mailproc policy list | show | clear | set …     a mailbox owner's policies        (mailproc/policy.ts)
//   mailproc rules list|add|remove|move|clear|test|log ADDRESS …  an owner's rules   (mailproc/rules.ts)
//   mailproc learn --spam|--ham [--forget] [--user USER] PATH…  teach SpamAssassin   (mailproc/learn.ts)
//   mailproc completion bash                        the bash completion script       (mailproc/completion.ts)
//   mailproc help [COMMAND]                         help on stdout, exit 0 (and COMMAND --help)
// policy, rules and learn parse their own options (they have many, checked
// together): commander lists them in the help and hands them the whole
// command line. Every command finds the configuration the same way
// (src/config/discover.ts): --config FILE (anywhere on the line),
// $MAILPROCD_CONFIG, /etc/mailprocd/mailprocd.yaml, else the embedded default
// under the package.
// Exit codes: 0 done, 1 errors in the input (nothing was changed) or the
// daemon refused, 64 usage (the message names the unknown command, option or
// subcommand; the command's usage follows on stderr), 69 the daemon is not
// running, 77 permission denied (another user's socket). Anything thrown
// (e.g. a bad config file) is printed as "mailproc: <message>" and exits 1.
import { Command, CommanderError } from 'commander';
import { loadDiscoveredConfig, packageVersion } from '../config/index.js';
import { completionScript } from './mailproc/completion.js';
import { runDb, runDbSync } from './mailproc/db.js';
import { runLearn } from './mailproc/learn.js';
import { runListsSync } from './mailproc/lists.js';
import { runPolicy } from './mailproc/policy.js';
import { runQueue } from './mailproc/queue.js';
import { runRules } from './mailproc/rules.js';
import { runStateMigrate } from './mailproc/state.js';
import { runStatus } from './mailproc/status.js';
import { TABLES_LINE, USAGE_OF } from './mailproc/usage.js';

/** The command line as commander will check it; `run` sets the exit code. */
export function buildProgram(argv: readonly string[], done: (code: number) => void): Command {
  const program = new Command('mailproc')
    .description('administer mailprocd: its tables, queue and status; a mailbox owner\'s policies, rules and spam training')
    .option('-c, --config <file>', 'YAML configuration (default: $MAILPROCD_CONFIG, else /etc/mailprocd/mailprocd.yaml if it exists, else the embedded default)')
    .version(`mailproc ${packageVersion()}`, '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'print the help and exit')
    .helpCommand('help [command]', 'print the help of a command and exit')
    .configureHelp({ showGlobalOptions: true, helpWidth: 80 })
    .addHelpText('after', `\nExit codes: 0 done, 1 refused or bad input, 64 usage, 69 mailprocd not running, 77 not your socket.\n${TABLES_LINE}`);
  const config = (): ReturnType<typeof loadDiscoveredConfig> => loadDiscoveredConfig(program.opts<{ config?: string }>().config);
  const usage = (cmd: Command, block: string): Command => cmd.addHelpText('after', `\nUsage lines:\n${block.replace(/^/gm, '  ')}`);

  const db = program.command('db').description("the administrator's tables: compile their sources, show a key");
  db.command('compile').description('compile the table sources into the tables the daemon reads (all or nothing)')
    .argument('[table...]', TABLES_LINE)
    .action(async (tables: string[]) => done(await runDb(config(), 'compile', tables)));
  db.command('show').description('print what a key maps to (reads the compiled tables, creates nothing)')
    .argument('<table>').argument('<key>')
    .action(async (table: string, key: string) => done(await runDb(config(), 'show', [table, key])));
  db.command('sync').description('compile the tables from a central PostgreSQL instead of the sources (all or nothing); --watch follows its changes')
    .requiredOption('--from <url>', 'postgresql://USER@HOST/DB (the password from PGPASSWORD or ~/.pgpass, not the command line)')
    .option('--watch', 'keep running: sync on every change (LISTEN mailprocd_tables) and every --interval')
    .option('--interval <duration>', 'with --watch, sync at least this often', '60s')
    .option('--init', 'first create the central tables and their change triggers where missing')
    .action(async (o: { from: string; watch?: boolean; interval?: string; init?: boolean }) => done(await runDbSync(config(), o)));
  db.command('transport-map').description('write the nodes table as a Postfix transport_maps source (stdout, or --output FILE atomically)')
    .option('-o, --output <file>', 'write here (replaced whole), then run postmap on it')
    .action(async (o: { output?: string }) => done(await runDb(config(), 'transport-map', o.output === undefined ? [] : [o.output])));
  usage(db, USAGE_OF.db);

  program.command('status').description('what the running daemon is doing: workers, load, spam checkers, queue, delivery delay')
    .option('--json', 'the daemon\'s reply as JSON, for tools')
    .allowExcessArguments()
    .action(async (o: { json?: boolean }) => done(await runStatus(config(), o.json === true)));

  const queue = program.command('queue').description('the durable queue of the running daemon');
  const queueVerb = (name: string, description: string, id: boolean): void => {
    const c = queue.command(name).description(description).option('--json', 'the daemon\'s reply as JSON, for tools').allowExcessArguments();
    if (id) c.argument('<id>', 'the queue ID (from queue list)');
    c.action(async (...a: unknown[]) => {
      const o = (id ? a[1] : a[0]) as { json?: boolean };
      done(await runQueue(config(), id ? [name, a[0] as string] : [name], o.json === true));
    });
  };
  queueVerb('list', 'each message with the recipients still to go and its last error', false);
  queueVerb('show', 'one message: envelope, times, attempts, and its header block', true);
  queueVerb('flush', 'schedule every message for delivery now', false);
  queueVerb('delete', 'remove one message from the queue', true);
  usage(queue, USAGE_OF.queue);

  const lists = program.command('lists').description("mailing lists' subscribers");
  lists.command('sync').description("refresh a list's subscribers; a sync that fails keeps the old ones")
    .argument('<list>')
    .option('--mailman <url>', 'the Mailman 3 REST API')
    .option('--user <user>', 'the Mailman REST user (default restadmin)')
    .option('--password-file <file>', 'the Mailman REST password (else $MAILMAN_PASSWORD)')
    .option('--file <path>', 'a file of addresses, one a line')
    .action(async (list: string, o: { mailman?: string; user?: string; passwordFile?: string; file?: string }) => {
      done(await runListsSync(list, { config: program.opts<{ config?: string }>().config, mailman: o.mailman, user: o.user, 'password-file': o.passwordFile, file: o.file }));
    });
  usage(lists, USAGE_OF.lists);

  const state = program.command('state').description('the policy state shared by several nodes (state.backend: PostgreSQL, Redis)');
  state.command('migrate').description('create or update its schema (versioned; safe to run again)')
    .action(async () => done(await runStateMigrate(config())));
  usage(state, USAGE_OF.state);

  // These three parse their own options from the whole command line.
  const own = (name: 'policy' | 'rules' | 'learn', description: string, args: string, run: (argv: string[]) => Promise<number>): void => {
    const c = program.command(name).description(description).argument(args).allowUnknownOption().allowExcessArguments()
      .action(async () => done(await run([...argv])));
    usage(c, USAGE_OF[name]);
  };
  own('policy', "a mailbox owner's sender policies for their own addresses", '[verb-and-options...]', runPolicy);
  own('rules', "a mailbox owner's own rules: list, edit, try on a message (test), see where mail went (log)", '[verb-and-options...]', runRules);
  own('learn', "teach a user's own SpamAssassin with a Maildir folder, an mbox or message files", '[options-and-paths...]', runLearn);

  program.command('completion').description('print the bash completion script (source it, or install it as /etc/bash_completion.d/mailproc)')
    .argument('<shell>', 'bash')
    .action((shell: string) => {
      if (shell !== 'bash') {
        process.stderr.write(`mailproc completion: unknown shell "${shell}" (only bash)\n`);
        done(64);
        return;
      }
      process.stdout.write(completionScript(program));
      done(0);
    });
  return program;
}

/** "mailproc queue" for the queue command. */
function pathOf(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c !== null; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function allCommands(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(allCommands)];
}

async function main(argv: string[]): Promise<number> {
  let code = 0;
  const program = buildProgram(argv, (c) => {
    code = c;
  });
  // Each command reports its own errors here, so that the message names it.
  let failed: Command = program;
  for (const c of allCommands(program)) {
    c.exitOverride().configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s),
      outputError: () => {
        failed = c;
      },
    });
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    if (err.exitCode === 0) return 0;
    // A command with subcommands given none: commander printed its help on stderr already.
    if (err.code === 'commander.help') return 64;
    const word = /'([^']*)'/.exec(err.message)?.[1] ?? '';
    const why = err.code === 'commander.unknownCommand'
      ? `unknown ${failed === program ? 'command' : 'subcommand'} "${word}"`
      : err.code === 'commander.unknownOption' ? `unknown option "${word}"` : err.message.replace(/^error: /, '');
    process.stderr.write(`${pathOf(failed)}: ${why}\n${failed.helpInformation()}`);
    return 64;
  }
  return code;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`mailproc: ${(err as Error).message}\n`);
  process.exit(1);
});
