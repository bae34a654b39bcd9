// The usage text of `mailproc`, one block per command: the blocks are what
// `mailproc help COMMAND` shows under the command's options, and USAGE (all
// of them) is what a subcommand prints on a usage error (exit 64), so that a
// mistake in one shows the others too.
import { TABLE_NAMES } from '../../classify/rules.js';

export const USAGE_OF = {
  db: `mailproc db compile [--config FILE] [TABLE...]
mailproc db show [--config FILE] TABLE KEY
mailproc db sync --from postgresql://USER@HOST/DB [--watch [--interval 60s]] [--init] [--config FILE]
mailproc db transport-map [--config FILE] [--output FILE]`,
  status: 'mailproc status [--config FILE] [--json]',
  queue: 'mailproc queue list [--json] | show ID [--json] | flush | delete ID   [--config FILE]',
  lists: `mailproc lists sync LIST (--mailman URL [--user U] [--password-file F] | --file PATH) [--config FILE]
  (the Mailman password may also come from $MAILMAN_PASSWORD)`,
  state: `mailproc state migrate [--config FILE]
  (creates or updates the schema of the shared engine state.backend names: PostgreSQL, Redis)`,
  policy: `mailproc policy list | show ADDRESS | clear ADDRESS   [--json] [--socket PATH] [--config FILE]
mailproc policy set ADDRESS [--allow GLOB]... [--no-allow] [--deny GLOB]... [--no-deny]
         [--only-allowed on|off] [--greylist on|off|default] [--max-size SIZE|none]
  (run as the mailbox owner, for their own addresses; --allow/--deny replace that list;
   GLOB is a sender pattern like *@example.org, "<>" the null sender; SIZE like 10M)`,
  rules: `mailproc rules list ADDRESS | clear ADDRESS   [--json] [--socket PATH] [--config FILE]
mailproc rules add ADDRESS 'RULE' [--at N] | remove ADDRESS N | move ADDRESS FROM TO
mailproc rules test ADDRESS [--from SENDER] [--spam] < MESSAGE
mailproc rules log ADDRESS [--last N]
  (your own rules for an address of yours, between the administrator's locked rules and
   their other rules; RULE is one quoted argument in the tables' language, e.g.
   'folder:Invoices header:Subject=Invoice* stop'; test delivers nothing, and without --from
   the sender is the null sender; root may give any address)`,
  learn: `mailproc learn --spam|--ham [--forget] PATH...   [--socket PATH] [--config FILE]
  (teach your own SpamAssassin: PATH is a Maildir folder, an mbox or message files;
   root gives --user USER to teach that user's)`,
} as const;

export const TABLES_LINE = `tables: ${TABLE_NAMES.join(', ')}`;

const indent = (block: string, first: string, rest: string): string =>
  block.split('\n').map((l, i) => `${i === 0 ? first : rest}${l}`).join('\n');

export const USAGE = `${Object.values(USAGE_OF).map((b, i) => indent(b, i === 0 ? 'usage: ' : '       ', '       ')).join('\n')}
${TABLES_LINE}
`;

/** node:util parseArgs's error, short: `unknown option "--bogus"`, `option "--at" needs a value`. */
export function describeArgError(err: Error): string {
  const unknown = /^Unknown option '([^']*)'/.exec(err.message);
  if (unknown !== null) return `unknown option "${unknown[1]}"`;
  const missing = /^Option '(?:-\w, )?([^' ]*)[^']*' argument missing/.exec(err.message);
  if (missing !== null) return `option "${missing[1]}" needs a value`;
  return err.message;
}
