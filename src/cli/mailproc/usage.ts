// The one usage text of `mailproc`, printed by the dispatcher and by every
// subcommand on a usage error (exit 64) or --help (exit 0). One text for all
// subcommands, so that a mistake in one shows the others too.
import { TABLE_NAMES } from '../../classify/rules.js';

export const USAGE = `usage: mailproc db compile [--config FILE] [TABLE...]
       mailproc db show [--config FILE] TABLE KEY
       mailproc status [--config FILE] [--json]
       mailproc queue list [--json] | show ID | flush | delete ID   [--config FILE]
       mailproc lists sync LIST (--mailman URL [--user U] [--password-file F] | --file PATH) [--config FILE]
         (the Mailman password may also come from $MAILMAN_PASSWORD)
       mailproc policy list | show ADDRESS | clear ADDRESS   [--json] [--socket PATH] [--config FILE]
       mailproc policy set ADDRESS [--allow GLOB]... [--no-allow] [--deny GLOB]... [--no-deny]
                [--only-allowed on|off] [--greylist on|off|default] [--max-size SIZE|none]
         (run as the mailbox owner, for their own addresses; --allow/--deny replace that list;
          GLOB is a sender pattern like *@example.org, "<>" the null sender; SIZE like 10M)
       mailproc rules list ADDRESS | clear ADDRESS   [--json] [--socket PATH] [--config FILE]
       mailproc rules add ADDRESS 'RULE' [--at N] | remove ADDRESS N | move ADDRESS FROM TO
       mailproc rules test ADDRESS [--from SENDER] [--spam] < MESSAGE
       mailproc rules log ADDRESS [--last N]
         (your own rules for an address of yours, between the administrator's locked rules and
          their other rules; RULE is one quoted argument in the tables' language, e.g.
          'folder:Invoices header:Subject=Invoice* stop'; test delivers nothing, and without --from
          the sender is the null sender; root may give any address)
       mailproc learn --spam|--ham [--forget] PATH...   [--socket PATH] [--config FILE]
         (teach your own SpamAssassin: PATH is a Maildir folder, an mbox or message files;
          root gives --user USER to teach that user's)
tables: ${TABLE_NAMES.join(', ')}
`;
