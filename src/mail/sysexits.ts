// The one exit-status → Status table for commands we run (pipe deliveries,
// Mailman 2 wrappers). Like src/mail/errno.ts for system calls: whether a
// command's failure is worth retrying is decided here and nowhere else.
//
// Exports: SYSEXITS_TABLE (read-only, for docs and tests); statusFromExit(code,
// what, unknownExit) and statusFromSignal(signal, what) → Status; UnknownExit.
// Pure; never throws for any integer exit code.
//
// Rows: sysexits.h 64–78 with Postfix's DSN codes (src/global/sys_exits.c);
// qmail-command(8)'s 99 / 100 / 111. Choices that differ from Postfix:
// - an exit code in no row is TEMPORARY 4.3.0 by default (qmail's and
//   Courier's choice; Postfix bounces it as 5.3.0). "Unknown means temporary":
//   the retry is bounded by the queue lifetime, after which the message bounces
//   anyway, while a wrong bounce loses mail at once. `unknownExit: 'permanent'`
//   restores Postfix's behaviour.
// - 99 (qmail "success, ignore further lines") is delivered. The "stop" half
//   has no meaning here: the plan decided the destinations before any ran.
// - 100 (qmail hard error) is 5.3.0 and 111 (qmail soft error) is 4.3.0, so
//   qmail-style filters work unchanged.
// A command killed by a signal is 4.3.0, as in Postfix.
import { constants } from 'node:os';
import { status, type EnhancedCode, type Status } from './status.js';

export interface ExitRow {
  /** The sysexits.h name, or the convention the code comes from. */
  readonly name: string;
  readonly code: EnhancedCode;
  /** What the code means, for the status text. */
  readonly text: string;
}

export const SYSEXITS_TABLE: Readonly<Record<number, ExitRow>> = Object.freeze({
  0: { name: 'EX_OK', code: '2.0.0', text: 'success' },
  64: { name: 'EX_USAGE', code: '5.3.0', text: 'command line usage error' },
  65: { name: 'EX_DATAERR', code: '5.6.0', text: 'data format error' },
  66: { name: 'EX_NOINPUT', code: '5.3.0', text: 'cannot open input' },
  67: { name: 'EX_NOUSER', code: '5.1.1', text: 'addressee unknown' },
  68: { name: 'EX_NOHOST', code: '5.1.2', text: 'host name unknown' },
  69: { name: 'EX_UNAVAILABLE', code: '5.3.0', text: 'service unavailable' },
  70: { name: 'EX_SOFTWARE', code: '5.3.0', text: 'internal software error' },
  71: { name: 'EX_OSERR', code: '4.3.0', text: 'system error' },
  72: { name: 'EX_OSFILE', code: '5.3.0', text: 'critical OS file missing' },
  73: { name: 'EX_CANTCREAT', code: '5.2.0', text: "can't create output file" },
  74: { name: 'EX_IOERR', code: '5.3.0', text: 'input/output error' },
  75: { name: 'EX_TEMPFAIL', code: '4.3.0', text: 'temporary failure' },
  76: { name: 'EX_PROTOCOL', code: '5.5.0', text: 'remote error in protocol' },
  77: { name: 'EX_NOPERM', code: '5.7.0', text: 'permission denied' },
  78: { name: 'EX_CONFIG', code: '5.3.5', text: 'local configuration error' },
  99: { name: 'qmail 99', code: '2.0.0', text: 'success, stop' },
  100: { name: 'qmail 100', code: '5.3.0', text: 'permanent failure' },
  111: { name: 'qmail 111', code: '4.3.0', text: 'temporary failure' },
});

/** What an exit code in no row of the table means. */
export type UnknownExit = 'temporary' | 'permanent';

const UNKNOWN_CODE: Readonly<Record<UnknownExit, EnhancedCode>> = { temporary: '4.3.0', permanent: '5.3.0' };

/**
 * The Status for a command that exited with `exitCode`. `what` names the
 * command ("command /usr/bin/procmail"). A row of the table: "<what> exited
 * with status 75 (EX_TEMPFAIL: temporary failure)"; any other code: "<what>
 * died with status N" (Postfix's words), its class per `unknownExit`.
 */
export function statusFromExit(exitCode: number, what: string, unknownExit: UnknownExit = 'temporary'): Status {
  const row = SYSEXITS_TABLE[exitCode];
  if (row === undefined) return status(UNKNOWN_CODE[unknownExit], `${what} died with status ${exitCode}`);
  return status(row.code, `${what} exited with status ${exitCode} (${row.name}: ${row.text})`);
}

/** A command killed by a signal: temporary, whatever the signal (Postfix does the same). */
export function statusFromSignal(signal: string | number, what: string): Status {
  const number = typeof signal === 'number' ? signal : (constants.signals as Record<string, number | undefined>)[signal];
  const name = typeof signal === 'string' ? signal : Object.entries(constants.signals).find(([, n]) => n === signal)?.[0];
  const label = name !== undefined && number !== undefined ? `${number} (${name})` : String(name ?? number);
  return status('4.3.0', `${what} was killed by signal ${label}`);
}
