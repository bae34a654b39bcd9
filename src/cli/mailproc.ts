#!/usr/bin/env node
// mailproc: the administrator's command. This file only dispatches; each
// subcommand lives in mailproc/<name>.ts, whose header states its contract:
//   mailproc db compile [--config FILE] [TABLE…]   compile table sources into LMDB (atomic; errors name file:line)
//   mailproc db show [--config FILE] TABLE KEY      print what a key maps to                        (mailproc/db.ts)
//   mailproc status [--json]                        workers (user, uid, pid, age, messages), per-user load, queue size
//                                                                                                   (mailproc/status.ts)
//   mailproc queue list [--json] | show ID | flush | delete ID                                       (mailproc/queue.ts)
//   mailproc lists sync LIST --mailman URL [--user U] [--password-file F] | --file PATH
//                                                   refresh a list's subscribers (Mailman 3 REST roster or a file of
//                                                   addresses); a sync that fails keeps the old subscribers
//                                                                                                   (mailproc/lists.ts)
//   mailproc policy list | show ADDRESS | clear ADDRESS | set ADDRESS [OPTION…]
//                                                   a mailbox owner's policies for their own addresses
//                                                                                                   (mailproc/policy.ts)
//   mailproc rules list|add|remove|move|clear|test|log ADDRESS …
//                                                   a mailbox owner's own rules for their addresses: edit them, try
//                                                   them on a message (test), see where each message went (log)
//                                                                                                   (mailproc/rules.ts)
//   mailproc learn --spam|--ham [--forget] [--user USER] PATH…
//                                                   teach a user's own SpamAssassin (Bayes) with a Maildir folder,
//                                                   an mbox or message files, through their checker  (mailproc/learn.ts)
// Shared: the usage text (mailproc/usage.ts), the control-socket client
// (mailproc/control-client.ts), table and age formatting (mailproc/format.ts).
// status and queue talk to the running daemon over <run>/control.sock.
// policy, rules and learn are for ordinary users: they talk over the caller's own socket,
// <run>/users/<uid>/control.sock (or --socket PATH, $MAILPROC_SOCKET), where
// the daemon knows who is asking from the socket itself (rules and learn run
// as root use <run>/control.sock instead, for any address or user).
// Exit codes: 0 done, 1 errors in the input (nothing was changed) or the
// daemon refused, 64 usage, 69 the daemon is not running, 77 permission
// denied (another user's socket). Anything thrown (e.g. a bad config file)
// is printed as "mailproc: <message>" and exits 1.
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/index.js';
import { runDb } from './mailproc/db.js';
import { LEARN_OPTIONS, runLearn } from './mailproc/learn.js';
import { runListsSync } from './mailproc/lists.js';
import { POLICY_OPTIONS, runPolicy } from './mailproc/policy.js';
import { runQueue } from './mailproc/queue.js';
import { RULES_OPTIONS, runRules } from './mailproc/rules.js';
import { runStatus } from './mailproc/status.js';
import { USAGE } from './mailproc/usage.js';

/** The options of every subcommand but policy, rules and learn, which parse their own. */
const OPTIONS = {
  config: { type: 'string', short: 'c' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  mailman: { type: 'string' }, user: { type: 'string' }, 'password-file': { type: 'string' }, file: { type: 'string' },
} as const;

/** The first word of the command line, whatever options come before it (policy, rules and learn parse their own). */
function firstWord(argv: string[]): string | undefined {
  const { positionals } = parseArgs({
    args: argv, strict: false, allowPositionals: true,
    options: { ...POLICY_OPTIONS, ...LEARN_OPTIONS, ...RULES_OPTIONS, mailman: OPTIONS.mailman, 'password-file': OPTIONS['password-file'], file: OPTIONS.file },
  });
  return positionals[0];
}

async function main(argv: string[]): Promise<number> {
  const first = firstWord(argv);
  if (first === 'policy') return runPolicy(argv);
  if (first === 'rules') return runRules(argv);
  if (first === 'learn') return runLearn(argv);
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (err) {
    process.stderr.write(`mailproc: ${(err as Error).message}\n${USAGE}`);
    return 64;
  }
  const v = parsed.values;
  const [group, cmd, ...rest] = parsed.positionals;
  if (!v.help && group === 'lists' && cmd === 'sync' && rest.length === 1) return runListsSync(rest[0] as string, v);
  if (!v.help && group === 'status') return runStatus(loadConfig(v.config), v.json === true);
  if (!v.help && group === 'queue') return runQueue(loadConfig(v.config), parsed.positionals.slice(1), v.json === true);
  if (v.help || group !== 'db' || (cmd !== 'compile' && cmd !== 'show')) {
    process.stderr.write(USAGE);
    return v.help ? 0 : 64;
  }
  return runDb(loadConfig(v.config), cmd, rest);
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`mailproc: ${(err as Error).message}\n`);
  process.exit(1);
});
