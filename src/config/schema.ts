// The configuration schema: every key, its type, its default. The defaults ARE
// the embedded default that `npm start` runs with no file: LMTP on
// ./var/run/lmtp.sock and 127.0.0.1:2424, SMTP on 127.0.0.1:2525, tables
// compiled from ./db into ./var/db, Maildirs under ./var/mail, metrics on
// http://127.0.0.1:9742/metrics.
// Exports the zod schema and the inferred Config type; load.ts validates and
// freezes. Sizes accept 10M/512k/bytes, durations 30s/5m/2h/1d/ms numbers in
// seconds, so an administrator can write what they mean.
import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { listenAddress, socketOptions } from './listen.js';
import { metricsConfigSchema } from './metrics.js';
import { milterConfigSchema } from './milter.js';
import { policyConfigSchema } from './policy.js';
import { probeConfigSchema } from './probe.js';
import { dedupeConfigSchema, relayConfigSchema } from './relay.js';
import { rulesConfigSchema } from './rules.js';
import { spamConfigSchema } from './spam.js';
import { stateConfigSchema } from './state.js';
import { duration, size } from './units.js';

export { duration, size };

/**
 * Unix sockets are reachable by their owner and group only: anyone who can
 * connect can hand us mail for any address. The owner is the daemon's user
 * (root under systemd); Postfix's lmtp client runs as "postfix", so set
 * group: postfix (README, "Reaching the unix sockets"). TCP listeners on
 * 127.0.0.1 stay reachable by every local user.
 */
const listener = z.object({
  listen: z.array(listenAddress).default([]),
  socket: socketOptions.default({ mode: 0o660 }),
}).strict();

export const configSchema = z.object({
  /** Name in the greeting, Received headers and Maildir file names. */
  hostname: z.string().min(1).optional(),
  paths: z.object({
    /** Everything the daemon writes lives under here unless set below. */
    state: z.string().default('./var'),
    /** Text sources of the tables (rules, uid, gid, lists, spam). */
    sources: z.string().default('./db'),
    /** Compiled admin tables (read-only for the daemon); default <state>/db. */
    db: z.string().optional(),
    /** The one writable database (greylist, list rosters, user policies); default <state>/state-db. */
    state_db: z.string().optional(),
    spool: z.string().optional(),
    run: z.string().optional(),
    /** Mail root; created mode 0755 if missing; the master makes each user's directory under it (src/workers/mail-root.ts). */
    mail: z.string().optional(),
  }).strict().default({ state: './var', sources: './db' }),
  lmtp: listener.extend({
    /**
     * The LMTP reply is the delivery's real outcome when it finishes within
     * this window; past it see on_timeout. Keep it well under Postfix's
     * lmtp_data_done_timeout (600 s), or Postfix retries a delivered message.
     */
    window: duration.refine((ms) => ms > 0 && ms <= 540_000, {
      message: 'must be more than 0 and at most 540s: Postfix gives up on an LMTP reply after lmtp_data_done_timeout (600 s) and retries a message we may have delivered',
    }).default(120_000),
    /** queue: fsync the message into our queue and answer 250; defer: answer 451 4.3.0 so the MTA retries. */
    on_timeout: z.enum(['queue', 'defer']).default('queue'),
  }).strict().default({ listen: ['unix:./var/run/lmtp.sock', '127.0.0.1:2424'], socket: { mode: 0o660 }, window: 120_000, on_timeout: 'queue' }),
  smtp: listener.extend({
    /**
     * STARTTLS (RFC 3207) on the SMTP listener. off: not announced, refused;
     * optional: announced, plaintext allowed; required: MAIL before STARTTLS
     * gets 530 5.7.0 (EHLO, STARTTLS, NOOP, RSET, QUIT still work). TLS 1.2
     * at least, forward-secret AEAD ciphers only (src/smtp/tls.ts). The LMTP
     * listener never offers TLS. off <-> optional/required changes on restart
     * only; optional <-> required and a new certificate on SIGHUP.
     */
    tls: z.enum(['off', 'optional', 'required']).default('off'),
    /** PEM certificate (the chain after it) for STARTTLS; needed unless tls is off. Re-read on SIGHUP. */
    tls_cert: z.string().min(1).optional(),
    /** PEM private key of tls_cert; needed unless tls is off. Re-read on SIGHUP; keep it mode 0600. */
    tls_key: z.string().min(1).optional(),
  }).strict().default({ listen: ['127.0.0.1:2525'], socket: { mode: 0o660 }, tls: 'off' }),
  limits: z.object({
    /** Announced in SIZE; larger messages get 552 5.3.4. */
    message_size: size.default(50 * 1024 * 1024),
    /** Per transaction; RFC 5321 asks for at least 100. */
    recipients: z.number().int().min(1).default(1000),
    /**
     * Waiting for the next command (RFC 5321 §4.5.3.2: at least 5 minutes),
     * or for any byte at all: past it 421 4.4.2 and the connection is closed.
     */
    client_timeout: duration.default(300_000),
    /**
     * Time spent waiting for the rest of a command line once its first byte
     * came (Postfix's smtpd_timeout with smtpd_per_request_deadline): a client
     * that trickles a line a byte at a time gets 421 4.4.2 when it runs out.
     * It is also DATA's budget, see data_min_rate.
     */
    command_timeout: duration.refine((ms) => ms > 0, { message: 'must be more than 0' }).default(300_000),
    /**
     * DATA must make progress (Postfix's smtpd_min_data_rate): DATA starts
     * with command_timeout of waiting time; time spent waiting for the client
     * is taken off, and every byte received gives back 1/data_min_rate s, up
     * to command_timeout again. Out of budget: 421 4.4.2. 0 = the whole
     * message within command_timeout of waiting.
     */
    data_min_rate: z.number().int().min(0).default(500),
    /** Concurrent client connections per listener. */
    connections: z.number().int().min(1).default(200),
    /**
     * Concurrent connections from one IP address per listener (Postfix
     * anvil's smtpd_client_connection_count_limit); one more gets 421 4.7.0.
     * Unix socket clients are not counted (their access is the socket's
     * mode). 0 = no limit. Postfix's lmtp client opens at most
     * lmtp_destination_concurrency_limit (20) to us.
     */
    connections_per_client: z.number().int().min(0).default(50),
    /**
     * Error replies to a client's commands in one session (Postfix's
     * smtpd_hard_error_limit; unknown recipients count, per-recipient
     * results after DATA do not); at the limit 421 4.7.0 and the
     * connection is closed. A delivered message starts the count afresh.
     */
    hard_error_limit: z.number().int().min(1).default(20),
    /**
     * On SIGTERM, how long a client in the middle of a transaction has to
     * finish it (its message is delivered and answered as usual); then, and at
     * once for a connection between transactions, 421 4.3.2.
     */
    shutdown_grace: duration.default(30_000),
  }).strict().default({
    message_size: 50 * 1024 * 1024, recipients: 1000, client_timeout: 300_000, command_timeout: 300_000, data_min_rate: 500,
    connections: 200, connections_per_client: 50, hard_error_limit: 20, shutdown_grace: 30_000,
  }),
  delivery: z.object({
    /** Where mail goes when no rule matches (or the address has no rules). */
    default: z.string().default('maildir:./var/mail/${user}/Maildir/'),
    /** Who deliveries run as when the tables give no uid; default: nobody when root, else the invoking user. */
    user: z.string().optional(),
    group: z.string().optional(),
    recipient_delimiter: z.string().max(8).default('+'),
    /** fsync files and directories before acknowledging. Off only for throwaway test setups. */
    fsync: z.boolean().default(true),
    mbox_lock_attempts: z.number().int().min(1).default(20),
    mbox_lock_delay: duration.default(1000),
    mbox_stale_lock: duration.default(500_000),
    /** Idle worker processes exit after this long. */
    worker_idle: duration.default(60_000),
    /** Worker processes per delivery user (uid:gid). */
    user_workers: z.number().int().min(1).default(1),
    /** Deliveries of one user at once: a flood for one user occupies only these slots. */
    user_concurrency: z.number().int().min(1).default(8),
    /** Deliveries at once across all users; freed slots go round robin to users with work. */
    max_deliveries: z.number().int().min(1).default(64),
    /** Addresses (as in the tables) allowed to deliver as uid/gid 0; nobody by default. */
    allow_root: z.array(z.string()).default([]),
    /** A pipe command still running after this is killed (its process group) and the delivery deferred. */
    pipe_timeout: duration.default(1_000_000),
    /** A pipe exit code outside sysexits: temporary (retried until queue.lifetime, like qmail) or permanent (Postfix). */
    pipe_unknown_exit: z.enum(['temporary', 'permanent']).default('temporary'),
    /**
     * Workers (and so every pipe command) run with no_new_privs: no set-uid or
     * set-gid program gains privileges. Pipes that re-inject mail with
     * Postfix's sendmail (set-gid postdrop) need false; see src/workers/NOTES.md.
     */
    no_new_privs: z.boolean().default(true),
  }).strict().default({
    default: 'maildir:./var/mail/${user}/Maildir/', recipient_delimiter: '+', fsync: true,
    mbox_lock_attempts: 20, mbox_lock_delay: 1000, mbox_stale_lock: 500_000, worker_idle: 60_000,
    user_workers: 1, user_concurrency: 8, max_deliveries: 64, allow_root: [],
    pipe_timeout: 1_000_000, pipe_unknown_exit: 'temporary', no_new_privs: true,
  }),
  queue: z.object({
    /** First retry after a temporary failure; doubles up to retry_max. */
    retry_min: duration.default(60_000),
    retry_max: duration.default(3_600_000),
    /** A message still undeliverable after this long is bounced. */
    lifetime: duration.default(5 * 86_400_000),
    /** Messages being delivered from the queue at once (the rest wait their turn on disk). */
    active_limit: z.number().int().min(1).default(1000),
    /** Replaced by relay.smtp: kept only to name the new key. */
    bounce_relay: z.never({ error: 'replaced by relay.smtp, which carries bounces, forwards and vacation replies' }).optional(),
  }).strict().default({ retry_min: 60_000, retry_max: 3_600_000, lifetime: 5 * 86_400_000, active_limit: 1000 }),
  /** Where forwards, vacation replies and bounces go out: see src/config/relay.ts. */
  relay: relayConfigSchema,
  /** Duplicate suppression by Message-ID: see src/config/relay.ts. */
  dedupe: dedupeConfigSchema,
  /** Postfix policy delegation (check_policy_service): see src/config/policy.ts for every key. */
  policy: policyConfigSchema,
  /** Where the policy state lives: local LMDB (default) or a PostgreSQL / Redis every node shares; see src/config/state.ts. */
  state: stateConfigSchema,
  /** The milter endpoint (smtpd_milters): policy chain at RCPT, site spam check, user filters; see src/config/milter.ts. */
  milter: milterConfigSchema,
  /** SpamAssassin as each recipient's owner: see src/config/spam.ts for every key. */
  spam: spamConfigSchema,
  /** What mailbox owners may do with their own rules, and the decision log: see src/config/rules.ts. */
  rules: rulesConfigSchema,
  /** The Prometheus endpoint (loopback only unless written otherwise): see src/config/metrics.ts. */
  metrics: metricsConfigSchema,
  /** mailmond's probes: the key they are signed with, how long arrivals are kept (src/config/probe.ts). */
  probe: probeConfigSchema,
  log: z.object({
    format: z.enum(['text', 'json']).default('text'),
    level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
    /** Lines to this file (absolute, created 0640, reopened on SIGUSR1 for logrotate) instead of stderr. */
    file: z.string().refine((p) => isAbsolute(p), 'must be an absolute path').optional(),
  }).strict().default({ format: 'text', level: 'info' }),
}).strict();

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
