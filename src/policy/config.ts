// The `policy:` section of the configuration file: a zod fragment the lead's
// config schema embeds as `policy: policyConfigSchema`. Its defaults ARE the
// embedded default: listen on unix:./var/run/policy.sock and 127.0.0.1:10040,
// chain [lists, userpolicy]. Every key is documented here and in NOTES.md.
//
// Exports: policyConfigSchema, policyConfigSchemaWith (the same plus keys for
// plugins built elsewhere), PolicyConfig (parsed), PolicyConfigInput,
// PLUGIN_NAMES, RATE_KEYS, parseListenSpec, accessActionSchema. Pure; validation problems are zod issues
// whose path names the key.
//
import { resolve } from 'node:path';
import { z } from 'zod';
import { duration, size } from '../config/units.js';

const positiveDuration = duration.refine((ms) => ms > 0, { message: 'must be more than 0' });

/** "unix:/path", "unix:./relative", "127.0.0.1:10040", "[::1]:10040". */
const listenAddress = z.string().refine((s) => /^unix:.+$/.test(s) || /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(s), {
  message: 'expected "unix:PATH" or "HOST:PORT"',
  abort: true,
}).refine((s) => s.startsWith('unix:') || Number(s.slice(s.lastIndexOf(':') + 1)) <= 65535, { message: 'port out of range' });

const octalMode = z.union([z.string().regex(/^0?[0-7]{3,4}$/, 'expected an octal mode like "0660"'), z.number().int()])
  .transform((v) => (typeof v === 'number' ? v : parseInt(v, 8)));

/** One line of reply text: Postfix would take a newline as the end of the reply. */
const replyText = z.string().trim().min(1).refine((s) => !/[\r\n]/.test(s), { message: 'must be one line (no line breaks)' });

// Actions Postfix's access(5) understands; a typo here would make Postfix log
// "unknown action" and answer the client 451 for every request that hits it.
const ACTION_RE = /^(?:OK|DUNNO|REJECT|DEFER|DEFER_IF_PERMIT|DEFER_IF_REJECT|[45]\d\d|HOLD|DISCARD|WARN|INFO|FILTER|PREPEND|REDIRECT|BCC|HANGUP)(?:\s|$)/i;
const action = replyText.refine((s) => ACTION_RE.test(s), {
  message: 'expected an access(5) action such as "REJECT 5.7.1 text", "DEFER_IF_PERMIT 4.7.1 text" or "451 4.7.1 text"',
});
/** The same check for plugin option schemas built beside this file (dnsbl, spf: their `on_error`). */
export const accessActionSchema = action;

/**
 * A plugin's `on_error`: what the chain answers when the plugin fails (throws
 * or its database does). Left out: the plugin's own declaration (types.ts) —
 * lists and userpolicy fail closed ("DEFER_IF_PERMIT 4.3.0 Temporary lookup
 * failure, try again later"), greylist, ratelimit, dnsbl and spf fail open (DUNNO).
 */
const onError = action.optional();

/** Plugins a chain may name. dnsbl and spf are built outside this folder and handed to startPolicyService. */
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

const policySection = z.object({
  /** Where Postfix connects: check_policy_service unix:/path or inet:host:port. Relative paths are relative to the daemon's working directory. [] = no policy listener. */
  listen: z.array(listenAddress).default(['unix:./var/run/policy.sock', '127.0.0.1:10040']),
  socket: z.object({
    /**
     * Mode of the unix socket: owner and group only, as the LMTP socket's.
     * Postfix's smtpd runs as "postfix": set group: postfix. (The TCP
     * listener on 127.0.0.1 is open to every local user; Postfix can use
     * either.)
     */
    mode: octalMode.default(0o660),
    owner: z.string().optional(),
    group: z.string().optional(),
  }).strict().prefault({}),
  /** LMDB environment for greylist and list-roster state; default <paths.state>/policy-db. */
  db: z.string().min(1).optional(),
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

/**
 * The section with more keys beside the built-in ones, e.g. the dnsbl and spf
 * plugins' option schemas: `policyConfigSchemaWith({ dnsbl: dnsblOptionsSchema.prefault({}) })`.
 * Those schemas must not import src/config either (see the header).
 */
export function policyConfigSchemaWith<E extends z.ZodRawShape>(extra: E) {
  // The casts only hide zod's generic extend() types from the shared check, which reads the built-in keys alone.
  return policySection
    .extend(extra)
    .superRefine((c, ctx) => checkAcrossKeys(c as unknown as PolicySection, ctx as unknown as z.core.$RefinementCtx<PolicySection>))
    .prefault({} as never);
}

export const policyConfigSchema = policyConfigSchemaWith({});

export type PolicyConfig = z.output<typeof policyConfigSchema>;
/** What the config file may say under `policy:` (every key optional). */
export type PolicyConfigInput = NonNullable<z.input<typeof policyConfigSchema>>;
export type RateRuleConfig = PolicyConfig['ratelimit']['rules'][number];

export interface ListenSpec {
  readonly kind: 'unix' | 'tcp';
  /** Absolute socket path for unix; "" for tcp. */
  readonly path: string;
  readonly host: string;
  readonly port: number;
  /** As written, for logs. */
  readonly spec: string;
}

/** Same reading as the LMTP listeners' (src/config): a relative unix path is relative to baseDir. */
export function parseListenSpec(spec: string, baseDir: string): ListenSpec {
  if (spec.startsWith('unix:')) return { kind: 'unix', path: resolve(baseDir, spec.slice(5)), host: '', port: 0, spec };
  const cut = spec.lastIndexOf(':');
  const host = spec.slice(0, cut).replace(/^\[(.*)\]$/, '$1');
  return { kind: 'tcp', path: '', host, port: Number(spec.slice(cut + 1)), spec };
}
