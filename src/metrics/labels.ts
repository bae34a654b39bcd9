// Label values for the metrics, computed from what the events carry: pure,
// and bounded — a label never takes a value a client or a user chose (a
// policy action's text, a rule's destination), so the number of series stays
// small whatever the mail says.
//
// Exports: dsnClass, statusLabel, relayLabel, protocolLabel, policyActionLabel,
// pluginLabel, topOwners, parseVmRss. None throws.

/** "2", "4" or "5": the class of an RFC 3463 code; anything else counts as temporary ("4"), as the queue treats it. */
export function dsnClass(code: string): '2' | '4' | '5' {
  const c = code.charAt(0);
  return c === '2' || c === '5' ? c : '4';
}

/** Postfix's status= word for a code, in the words of the series: delivered, deferred, bounced. */
export function statusLabel(code: string): 'delivered' | 'deferred' | 'bounced' {
  const c = dsnClass(code);
  return c === '2' ? 'delivered' : c === '5' ? 'bounced' : 'deferred';
}

const KIND = /^[a-z][a-z0-9_-]{0,23}$/;

/**
 * The outcome's relay field as a label: its destination kinds, each once, in
 * a fixed order ("maildir+maildir+pipe" and "pipe+maildir" are both
 * "maildir+pipe"); a part that is not a plain kind name is "other".
 */
export function relayLabel(relay: string): string {
  const kinds = new Set(relay.split('+').map((k) => (KIND.test(k) ? k : 'other')));
  return [...kinds].sort().join('+') || 'none';
}

/** The envelope's protocol ("LMTP", "ESMTP") in lower case; anything unexpected is "other". */
export function protocolLabel(protocol: string): string {
  const p = protocol.toLowerCase();
  return /^[a-z]{1,12}$/.test(p) ? p : 'other';
}

/** Postfix access(5) actions a policy answer may start with. */
const ACTIONS = new Set([
  'OK', 'DUNNO', 'REJECT', 'DEFER', 'DEFER_IF_REJECT', 'DEFER_IF_PERMIT', 'PREPEND', 'HOLD', 'DISCARD',
  'FILTER', 'REDIRECT', 'WARN', 'INFO', 'BCC', 'DELAY', 'SLEEP',
]);

/**
 * A policy answer's action word: "REJECT Not a subscriber" → "REJECT",
 * "450 4.7.1 Greylisted" → "4XX", a number alone the same; anything else
 * (a restriction name, a typo) → "OTHER".
 */
export function policyActionLabel(action: string): string {
  const word = (action.trim().split(/\s+/, 1)[0] ?? '').toUpperCase();
  if (/^[45]\d\d$/.test(word)) return `${word.charAt(0)}XX`;
  return ACTIONS.has(word) ? word : 'OTHER';
}

/** The plugin that decided, or "none" for the DUNNO nobody objected to. */
export function pluginLabel(plugin: string | undefined): string {
  return plugin ?? 'none';
}

export interface OwnerLoad {
  readonly key: string;
  readonly queued: number;
  readonly active: number;
}

/** The n owners with the most deliveries waiting or running, most first; ties by key, so a scrape is stable. */
export function topOwners(load: readonly OwnerLoad[], n: number): OwnerLoad[] {
  return [...load]
    .sort((a, b) => (b.queued + b.active) - (a.queued + a.active) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .slice(0, Math.max(0, n));
}

/** Resident set size in bytes from the text of /proc/PID/status ("VmRSS:  12345 kB"); undefined when absent (a zombie, a kernel thread). */
export function parseVmRss(status: string): number | undefined {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  return m === null ? undefined : Number(m[1]) * 1024;
}
