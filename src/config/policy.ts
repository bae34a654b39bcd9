// The `policy:` section of the configuration file, every plugin's options
// included (dnsbl and spf too: config/ owns every schema), embedded by
// schema.ts as `policy: policyConfigSchema`. Its defaults ARE the embedded
// default: listen on unix:./var/run/policy.sock and 127.0.0.1:10040, chain
// [lists, userpolicy]. Every key is documented here and in src/policy/NOTES.md.
//
// Exports: policyConfigSchema, PolicyConfig (parsed), PolicyConfigInput,
// RateRuleConfig, DnsblOptions, SpfOptions, PLUGIN_NAMES, PluginName,
// RATE_KEYS, accessActionSchema. Pure; validation problems are zod issues
// whose path names the key.
//
import { isIP } from 'node:net';
import { z } from 'zod';
import { listenAddress, socketOptions } from './listen.js';
import { duration, size } from './units.js';

const positiveDuration = duration.refine((ms) => ms > 0, { message: 'must be more than 0' });

/** One line of reply text: Postfix would take a newline as the end of the reply. */
const replyText = z.string().trim().min(1).refine((s) => !/[\r\n]/.test(s), { message: 'must be one line (no line breaks)' });

// Actions Postfix's access(5) understands; a typo here would make Postfix log
// "unknown action" and answer the client 451 for every request that hits it.
const ACTION_RE = /^(?:OK|DUNNO|REJECT|DEFER|DEFER_IF_PERMIT|DEFER_IF_REJECT|[45]\d\d|HOLD|DISCARD|WARN|INFO|FILTER|PREPEND|REDIRECT|BCC|HANGUP)(?:\s|$)/i;
const action = replyText.refine((s) => ACTION_RE.test(s), {
  message: 'expected an access(5) action such as "REJECT 5.7.1 text", "DEFER_IF_PERMIT 4.7.1 text" or "451 4.7.1 text"',
});
/** The same check for any other access(5) action a schema takes. */
export const accessActionSchema = action;

/**
 * A plugin's `on_error`: what the chain answers when the plugin fails (throws
 * or its database does). Left out: the plugin's own declaration (types.ts) —
 * lists and userpolicy fail closed ("DEFER_IF_PERMIT 4.3.0 Temporary lookup
 * failure, try again later"), greylist, ratelimit, dnsbl and spf fail open (DUNNO).
 */
const onError = action.optional();

/** Plugins a chain may name. */
export const PLUGIN_NAMES = ['lists', 'userpolicy', 'greylist', 'ratelimit', 'dnsbl', 'spf'] as const;
export type PluginName = (typeof PLUGIN_NAMES)[number];

/** Request attributes a rate limit may count by. */
export const RATE_KEYS = ['sasl_username', 'sasl_sender', 'client_address', 'client_name', 'sender', 'recipient'] as const;

const rateRule = z.object({
  /** For logs; default "KEY/LIMIT/WINDOW". */
  name: z.string().min(1).optional(),
  /** The request attribute counted by; a request where it is empty is not counted by this rule. */
  key: z.enum(RATE_KEYS),
  /** Requests allowed per window; the next one gets `action`. */
  limit: z.number().int().min(1),
  window: positiveDuration,
  /** sliding: the previous window counts in proportion to its overlap (smooth); fixed: counters reset at each window boundary. */
  mode: z.enum(['sliding', 'fixed']).default('sliding'),
  /** recipients: counts RCPT requests; messages: counts END-OF-MESSAGE requests (check_policy_service in smtpd_end_of_data_restrictions). */
  count: z.enum(['recipients', 'messages']).default('recipients'),
  action: action.default('DEFER_IF_PERMIT 4.7.1 Rate limit exceeded, try again later'),
}).strict();

// ---- dnsbl (src/policy/plugins/dnsbl.ts) ----

/** A name server for the DNS-using plugins. */
export const dnsServerSchema = z.string().refine((s) => {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:]+):(\d{1,5})$/.exec(s);
  if (m) return isIP(m[1] ?? '') !== 0 && Number(m[2]) > 0 && Number(m[2]) < 65536;
  return isIP(s) !== 0;
}, { message: 'expected a name server address like "127.0.0.1", "127.0.0.1:5353" or "[::1]:53"' });

const domainName = z.string().regex(/^[a-z0-9_-]+(\.[a-z0-9_-]+)+\.?$/i, 'expected a DNS zone like "zen.example.org"')
  .transform((s) => s.toLowerCase().replace(/\.$/, ''));

const zoneSchema = z.object({
  zone: domainName,
  /** ip: the client address is looked up; rhs: domain names (see targets). */
  type: z.enum(['ip', 'rhs']).default('ip'),
  /** Score when listed (policyd-weight's HIT score). */
  weight: z.number(),
  /** Score when not listed (policyd-weight's MISS score, often negative). */
  miss_weight: z.number().default(0),
  /** Label in the header and logs: IN_<name> / NOT_IN_<name>; default from the zone. */
  name: z.string().regex(/^[A-Za-z0-9_]+$/).optional(),
  /**
   * A answers that mean "listed". Default: any 127.0.0.0/8 address except
   * 127.255.255.0/24, which Spamhaus uses for "query refused" (RHSBLs such as
   * DBL list with 127.0.1.x, so 127.0.0.x alone would miss them). Other
   * 127/8 codes then mean "not listed"; 127.255.255.x and addresses outside
   * 127/8 (a resolver rewriting NXDOMAIN) are no answer at all.
   */
  answers: z.array(z.ipv4()).optional(),
  /** For rhs zones: which names to look up. */
  targets: z.array(z.enum(['sender', 'helo'])).min(1).default(['sender']),
}).strict();

const heloSchema = z.object({
  /** HELO is an address literal ([192.0.2.1], [IPv6:…], or bare) other than the client's (policyd-weight helo_numeric). */
  literal_mismatch: z.number().default(2.5),
  /** HELO is localhost, localhost.localdomain or *.localhost. */
  localhost: z.number().default(3),
  /** HELO is a name without a dot (Postfix's reject_non_fqdn_helo_hostname, as a score). */
  not_fqdn: z.number().default(1.5),
  /** The HELO name's A/AAAA records contain the client address (policyd-weight helo_score MISS). */
  address_match: z.number().default(-2),
  /** The HELO name resolves, but not to the client (helo_score HIT). */
  address_mismatch: z.number().default(1.5),
  /** The HELO name has no A/AAAA records at all. */
  no_address: z.number().default(1.5),
}).strict();

const senderSchema = z.object({
  /** Sender domain has no MX and no A/AAAA, or a null MX (policyd-weight bogus_mx). */
  no_mx_or_address: z.number().default(2.1),
  /** The client is one of the sender domain's MX hosts or addresses (helo_from_mx_eq_ip MISS). */
  client_is_mx: z.number().default(-3.1),
  /** HELO is the sender domain or under it, but does not resolve to the client (from_match_regex_failed_helo). */
  helo_claims_domain: z.number().default(2.5),
}).strict();

export const dnsblOptionsSchema = z.object({
  zones: z.array(zoneSchema).default([]),
  /** Reject when the score reaches this. */
  threshold: z.number().default(5),
  /** Text after "REJECT 5.7.1 "; {reasons}, {score}, {threshold}, {client}, {helo}, {sender} are filled in. */
  reject_text: z.string().min(1).refine((s) => !/[\r\n]/.test(s), 'must be one line')
    .default('Mail appeared to be SPAM or forged: {reasons} (score {score})'),
  /** Deadline for all lookups of one request. */
  timeout: duration.default(2000),
  /** How long answers (and, through the chain, decisions) are cached; 0 = no cache. */
  cache_ttl: duration.default(300_000),
  /** Cached DNS answers kept at most. */
  cache_size: z.number().int().min(0).default(10_000),
  /** Name servers to ask; empty = the system's. A local caching resolver is the usual choice. */
  servers: z.array(dnsServerSchema).default([]),
  /** Below the threshold, answer PREPEND <header_name>: <scores>; rate: <score>. */
  prepend_header: z.boolean().default(false),
  header_name: z.string().regex(/^[A-Za-z0-9-]+$/).default('X-policy-weight'),
  helo: heloSchema.prefault({}),
  sender: senderSchema.prefault({}),
  /** What the chain answers when the plugin fails (a bug, not DNS trouble: that is handled above); default DUNNO. */
  on_error: action.optional(),
}).strict();

export type DnsblOptions = z.output<typeof dnsblOptionsSchema>;

// ---- spf (src/policy/plugins/spf.ts) ----

/** An SPF result's access(5) action; {result} {domain} {ip} {sender} {helo} {comment} {header} are filled in. */
const spfAction = z.string().min(1).refine((s) => !/[\r\n]/.test(s), 'must be one line');

export const spfOptionsSchema = z.object({
  actions: z.object({
    pass: spfAction.default('DUNNO'),
    fail: spfAction.default('REJECT 5.7.23 SPF validation failed: {domain} does not designate {ip} as permitted sender'),
    softfail: spfAction.default('DUNNO'),
    neutral: spfAction.default('DUNNO'),
    none: spfAction.default('DUNNO'),
    permerror: spfAction.default('DUNNO'),
    temperror: spfAction.default('DUNNO'),
  }).strict().prefault({}),
  /** Per DNS query. */
  timeout: duration.default(2000),
  /** For the whole evaluation (up to 10 DNS-querying mechanisms, RFC 7208 §4.6.4); past it the result is temperror. */
  evaluation_timeout: duration.default(10_000),
  /** How long decisions are cached by the chain; 0 = no cache. */
  cache_ttl: duration.default(300_000),
  /** Name servers to ask; empty = the system's. */
  servers: z.array(dnsServerSchema).default([]),
  /** The receiving host named in the result's comment and Received-SPF header; default the machine's name. */
  hostname: z.string().min(1).optional(),
  /** What the chain answers when the plugin fails (a bug: DNS trouble is temperror above); default DUNNO. */
  on_error: action.optional(),
}).strict();

export type SpfOptions = z.output<typeof spfOptionsSchema>;

const policySection = z.object({
  /** Where Postfix connects: check_policy_service unix:/path or inet:host:port. Relative paths are relative to the daemon's working directory. [] = no policy listener. */
  listen: z.array(listenAddress).default(['unix:./var/run/policy.sock', '127.0.0.1:10040']),
  /**
   * Mode of the unix socket: owner and group only, as the LMTP socket's.
   * Postfix's smtpd runs as "postfix": set group: postfix. (The TCP
   * listener on 127.0.0.1 is open to every local user; Postfix can use
   * either.)
   */
  socket: socketOptions.prefault({}),
  /** Moved: the policy state is part of the one writable database, paths.state_db. */
  db: z.unknown().refine((v) => v === undefined, { message: 'moved: the policy state is part of the one writable database, set paths.state_db instead' }).optional(),
  /**
   * Plugins asked in this order; the first answer other than DUNNO is the reply.
   * userpolicy (what mailbox owners set with `mailproc policy`) answers nothing
   * for addresses without a policy; without it in the chain, policies are stored but not applied.
   */
  chain: z.array(z.enum(PLUGIN_NAMES)).default(['lists', 'userpolicy']),
  limits: z.object({
    /** Largest request (all its lines); a larger one closes the connection without a reply. */
    request_size: size.refine((n) => n >= 256, { message: 'must be at least 256 bytes' }).default(32 * 1024),
    /** From a request's first byte to its blank line; past it the connection is closed without a reply. */
    request_timeout: positiveDuration.default(10_000),
    /**
     * A connection with no request for this long is closed (Postfix reconnects
     * on its next request). Postfix itself closes a cached connection idle for
     * smtpd_policy_service_max_idle (300 s).
     */
    idle_timeout: positiveDuration.default(300_000),
    /**
     * Concurrent connections per listener. Every Postfix smtpd process keeps
     * one cached connection (up to default_process_limit, 100, per smtpd
     * service), so when a listener is full the connection idle the longest
     * is closed to let the new one in; only a listener whose every
     * connection is in the middle of a request turns one away.
     */
    connections: z.number().int().min(1).default(200),
    /**
     * Concurrent TCP connections from one IP address (unix socket clients are
     * not counted); at the limit, the longest-idle connection from that
     * address makes room, as above. Above Postfix's default_process_limit
     * (100) so one smtpd service never meets it; 0 = no limit.
     */
    connections_per_client: z.number().int().min(0).default(150),
  }).strict().prefault({}),
  /** Cached answers kept per plugin (oldest dropped first). */
  cache_size: z.number().int().min(0).default(10_000),
  /** How often plugins' maintenance runs (greylist expiry, rate counters, cache sweep). */
  maintenance_interval: positiveDuration.default(300_000),
  lists: z.object({
    /** Reply text for a non-subscriber posting to a closed list (after "REJECT 5.7.1"). */
    reject_text: replyText.default('Only subscribers may post to this list'),
    /**
     * How long an answer is reused for the same recipient and sender. 0 (the
     * default): not cached, so a roster sync applies to the next request. The
     * plugin keeps each list's subscribers in memory until the next compile,
     * and a Set lookup is cheaper than the answer cache; with every sender
     * new, the cache only fills memory, and the collector's copying of it
     * showed as ~1 ms in the bench's p99.
     */
    cache_ttl: duration.default(0),
    on_error: onError,
  }).strict().prefault({}),
  userpolicy: z.object({
    on_error: onError,
  }).strict().prefault({}),
  greylist: z.object({
    /** A new triplet is deferred; a retry this long after the first attempt passes. */
    delay: duration.default(300_000),
    /** A retry later than this after the first attempt starts over (deferred again). */
    retry_window: positiveDuration.default(86_400_000),
    /** Passed triplets and whitelisted clients unused for this long are forgotten. */
    expire: positiveDuration.default(35 * 86_400_000),
    /** Triplets a client network must pass before it is no longer greylisted; 0 = never. */
    auto_whitelist: z.number().int().min(0).default(5),
    /** Reply text for a deferred attempt (after "DEFER_IF_PERMIT 4.7.1"). */
    text: replyText.default('Greylisted, please try again later'),
    /** Answer the first passing retry with "PREPEND X-Greylist: delayed N seconds by mailprocd" instead of DUNNO; plugins after greylist are then not asked for that request. */
    header: z.boolean().default(false),
    ipv4_prefix: z.number().int().min(0).max(32).default(24),
    ipv6_prefix: z.number().int().min(0).max(128).default(64),
    on_error: onError,
  }).strict().prefault({}),
  ratelimit: z.object({
    rules: z.array(rateRule).default([]),
    /** Counters kept per rule; past it the oldest key is dropped. */
    max_keys: z.number().int().min(1).default(100_000),
    on_error: onError,
  }).strict().prefault({}),
  dnsbl: dnsblOptionsSchema.prefault({}),
  spf: spfOptionsSchema.prefault({}),
}).strict();

type PolicySection = z.output<typeof policySection>;

function checkAcrossKeys(c: PolicySection, ctx: z.core.$RefinementCtx<PolicySection>): void {
  const seen = new Set<string>();
  c.chain.forEach((name, i) => {
    if (seen.has(name)) ctx.addIssue({ code: 'custom', path: ['chain', i], message: `plugin "${name}" is in the chain twice` });
    seen.add(name);
  });
  if (c.greylist.retry_window <= c.greylist.delay) {
    ctx.addIssue({ code: 'custom', path: ['greylist', 'retry_window'], message: 'must be longer than greylist.delay' });
  }
  if (c.chain.includes('ratelimit') && c.ratelimit.rules.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['ratelimit', 'rules'], message: 'ratelimit is in the chain but has no rules' });
  }
}

export const policyConfigSchema = policySection.superRefine(checkAcrossKeys).prefault({});

export type PolicyConfig = z.output<typeof policyConfigSchema>;
/** What the config file may say under `policy:` (every key optional). */
export type PolicyConfigInput = NonNullable<z.input<typeof policyConfigSchema>>;
export type RateRuleConfig = PolicyConfig['ratelimit']['rules'][number];
