// The site spam check through the milter: at end of message, one check by
// SpamAssassin running as the service user `milter.spam.user` (never root),
// in the same persistent checkers delivery uses for each owner
// (src/workers/spam-checkers.ts, asked through src/local's askChecker). Per-
// user verdicts stay at delivery: one pre-queue message may have many owners,
// and this check knows none of them.
//
// The message is rebuilt from the milter's events: each header as
// "Name: " + value — the session gives values without the one space after
// the colon whether or not SMFIP_HDR_LEADSPC was negotiated (session.ts), so
// it is put back — then an empty line and the body chunks; line ends LF, as
// delivery's own check sends them (the same bytes give the same score). On
// top goes the Received line the MTA writes for this hop (Postfix hides its
// own from milters): without it SpamAssassin sees a message that never
// crossed a relay and gives every one ALL_TRUSTED (-1), and its relay rules
// see nothing; delivery's check sees that line, so the two agree. Above it,
// X-Envelope-From with the envelope sender, as spamass-milter sends it
// (SpamAssassin's rules comparing envelope and From need it). Past
// `milter.limits.message_size` bytes nothing more is kept and the message is
// not checked (the body is skipped: fewer round trips).
//
// Outcomes: score at or above `milter.spam.reject_score` → 550 5.7.1, the
// message refused before Postfix queues it; below → X-Spam-Flag, X-Spam-Level
// and X-Spam-Status added as delivery adds them (src/classify/spam/headers.ts;
// Flag YES from the service user's required_score); not checked (too large,
// checker down or slow) → `X-Spam-Status: unchecked (reason)` with on_error
// continue, or 451 4.7.1 with on_error tempfail. Those three header names
// arriving with the message (forged by a sender, or left by another hop) are
// deleted first, so the X-Spam-* lines below the MTA's Received header are
// always this check's.
//
// Exports: createSpamFilter, SPAM_FILTER_OBSERVES, SpamFilterOptions, SpamFilterSettings,
// rebuildMessage, receivedHeader, spamHeaderFields.
//
// Failure contract: never throws into the server; every trouble is an
// outcome above, logged at warn with its reason. Why it is safe: the checker
// runs as the service user (the spawner refuses uid 0, and so does this
// filter, before asking); the message bytes reach it over its socket, it
// reads no file of ours; nothing the checker says reaches the client or a
// header but a score, a threshold and rule names that headers.ts checks.
import type { HeaderVerdict } from '../classify/spam/index.js';
import { spamHeaders, uncheckedHeader } from '../classify/spam/index.js';
import { askChecker, type CheckerOutcome } from '../local/index.js';
import type { Logger } from '../log.js';
import { rfc5322Date } from '../mail/trace.js';
import type { Identity } from '../os/identity.js';
import type { SpamCheckers } from '../workers/spam-checkers.js';
import type { EomSession, MilterEvent, MilterFilter, MilterFilterFactory, MilterSession, NormalizedVerdict } from './api.js';

/** The events the filter only reads (it answers continue to them): no reply needed. Not body: it may answer skip. */
export const SPAM_FILTER_OBSERVES: ReadonlySet<MilterEvent> = new Set<MilterEvent>(['connect', 'helo', 'envfrom', 'header']);

export interface SpamFilterSettings {
  /** milter.spam.reject_score */
  readonly rejectScore: number;
  /** milter.spam.on_error */
  readonly onError: 'continue' | 'tempfail';
  /** milter.limits.message_size: more bytes than this (headers and body) are not checked. */
  readonly messageSize: number;
  /**
   * The whole check, a checker start included; past it the check counts as
   * failed (on_error). Below milter.filter_timeout, so that this filter, not
   * the server's limit, answers; and well inside Postfix's
   * milter_content_timeout (300 s).
   */
  readonly timeoutMs: number;
}

export interface SpamFilterOptions {
  /** undefined: SpamAssassin is not installed (every check is a failure, per on_error). */
  readonly checkers: SpamCheckers | undefined;
  /** The service user (milter.spam.user) resolved; a string says why it cannot be (an unknown name). */
  readonly identity: () => Promise<Identity | string>;
  readonly settings: () => SpamFilterSettings;
  readonly log: Logger;
}

/** Well inside Postfix's milter_content_timeout (300 s). */
const PROGRESS_MS = 30_000;
const SPAM_HEADERS = ['X-Spam-Flag', 'X-Spam-Level', 'X-Spam-Status'] as const;
const SPAM_LOWER: ReadonlySet<string> = new Set(SPAM_HEADERS.map((n) => n.toLowerCase()));
const LF = Buffer.from('\n');
const COLON_SPACE = Buffer.from(': ');
const HUMAN = (n: number): string => (n >= 1024 * 1024 ? `${Math.round(n / 1024 / 1024)}M` : n >= 1024 ? `${Math.round(n / 1024)}k` : `${n} bytes`);
const fixed = (n: number): string => (Math.round(n * 10) / 10).toFixed(1);

interface Header {
  readonly name: string;
  readonly raw: Buffer;
}

/** CRLF → LF (bare CRs stay): the form delivery's check sends. */
function toLf(b: Buffer): Buffer {
  if (b.indexOf(13) < 0) return b;
  return Buffer.from(b.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
}

/** The message as the MTA has it, from the milter's header events and body chunks, LF line ends. */
export function rebuildMessage(headers: readonly Header[], body: readonly Buffer[], received?: Buffer): Buffer {
  const parts: Buffer[] = received !== undefined ? [received] : [];
  for (const h of headers) parts.push(Buffer.from(h.name, 'latin1'), COLON_SPACE, toLf(h.raw), LF);
  parts.push(LF, toLf(Buffer.concat(body)));
  return Buffer.concat(parts);
}

/** What the MTA knows of this hop (connect info, HELO, its macros). */
export interface HopFacts {
  readonly helo?: string | undefined;
  readonly clientName?: string | undefined;
  readonly clientAddress?: string | undefined;
  /** Macro j: the MTA's host name. */
  readonly by?: string | undefined;
  /** Macro i: the queue id. */
  readonly queueId?: string | undefined;
  readonly recipients: readonly string[];
  /** The envelope sender ("" for <>), undefined when not known. */
  readonly sender?: string | undefined;
  readonly date: Date;
}

/**
 * The Received line Postfix's cleanup writes for this hop, as far as the
 * milter knows it: "from HELO (NAME [ADDR]) by HOST (Postfix) with ESMTP id
 * QID for <RCPT>; DATE", with an X-Envelope-From line above it when the
 * sender is known. Only printable ASCII from the client goes in.
 */
export function receivedHeader(h: HopFacts): Buffer {
  const clean = (s: string | undefined, fallback: string): string => (s === undefined || s === '' ? fallback : s.replace(/[^!-~]/g, '?'));
  const addr = clean(h.clientAddress, '').replace(/^IPv6:/i, '');
  const lines = [`Received: from ${clean(h.helo, 'unknown')} (${clean(h.clientName, 'unknown')}${addr !== '' ? ` [${addr}]` : ''})`];
  lines.push(`\tby ${clean(h.by, 'localhost')} (Postfix) with ESMTP${h.queueId !== undefined && h.queueId !== '' ? ` id ${clean(h.queueId, '')}` : ''}`);
  if (h.recipients.length === 1) lines.push(`\tfor <${clean(h.recipients[0], '')}>; ${rfc5322Date(h.date)}`);
  else lines[lines.length - 1] += `; ${rfc5322Date(h.date)}`;
  // The envelope sender, as spamass-milter tells it too: SpamAssassin's EnvelopeFrom rules
  // (HEADER_FROM_DIFFERENT_DOMAINS, FREEMAIL_FORGED_FROMDOMAIN, …) need it, and a line above our
  // Received is one the sender cannot have written.
  const envelope = h.sender !== undefined ? `X-Envelope-From: <${clean(h.sender, '')}>\n` : '';
  return Buffer.from(`${envelope}${lines.join('\n')}\n`, 'latin1');
}

/** delivery's X-Spam-* block as milter header fields: names and values, folds as "\n\t" (the MTA adds the CR). */
export function spamHeaderFields(block: string): { name: string; value: string }[] {
  return block.replace(/\n$/, '').split(/\n(?![ \t])/).map((field) => {
    const colon = field.indexOf(':');
    return { name: field.slice(0, colon), value: field.slice(colon + 1).replace(/^ /, '') };
  });
}

/**
 * The check, or a timeout outcome once ms have passed (a checker that is
 * still starting: askChecker bounds only the conversation). The check left
 * behind still ends and releases its checker.
 */
function withinTime(check: Promise<CheckerOutcome>, ms: number): Promise<CheckerOutcome> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<CheckerOutcome>((resolve) => {
    timer = setTimeout(() => resolve({ error: `no verdict within ${Math.round(ms / 1000)} s (the checker is starting or slow)`, short: 'checker timed out' }), ms);
  });
  return Promise.race([check, late]).finally(() => clearTimeout(timer));
}

export function createSpamFilter(o: SpamFilterOptions): MilterFilterFactory {
  return () => {
    let client: { name: string; address: string } | undefined;
    let helo: string | undefined;
    let headers: Header[] = [];
    let body: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    /** X-Spam-* fields that came with the message, by lower-case name: counted even past the size limit, to be deleted. */
    let arrived = new Map<string, number>();
    const reset = (): void => {
      arrived = new Map();
      headers = [];
      body = [];
      size = 0;
      tooLarge = false;
    };
    const count = (n: number): boolean => {
      size += n;
      if (size > o.settings().messageSize) {
        tooLarge = true;
        headers = [];
        body = [];
      }
      return tooLarge;
    };
    const addFields = (s: EomSession, block: string): void => {
      // Without the leading space: the session puts it back when the MTA does not add it itself.
      for (const f of spamHeaderFields(block)) s.addHeader(f.name, f.value);
    };
    const unchecked = (s: EomSession, why: string, detail: string): NormalizedVerdict | undefined => {
      const cfg = o.settings();
      o.log.warn(`milter spam check not done (${cfg.onError === 'tempfail' ? 'answered 451 4.7.1' : 'accepted unchecked'}): ${detail}`, { queue_id: s.macro('i') });
      if (cfg.onError === 'tempfail') return { result: 'tempfail', code: '451', xcode: '4.7.1', text: 'Spam check unavailable, try again later' };
      addFields(s, uncheckedHeader(why));
      return undefined;
    };
    const filter: MilterFilter = {
      connect(_s, info) {
        client = { name: info.hostname.startsWith('[') ? 'unknown' : info.hostname, address: info.family === 'inet' || info.family === 'inet6' ? info.address : '' };
      },
      helo(_s, name) {
        helo = name;
      },
      envfrom() {
        reset();
      },
      header(_s: MilterSession, name: string, _value: string, raw: Buffer) {
        const lower = name.toLowerCase();
        if (SPAM_LOWER.has(lower)) {
          // Not part of what is checked either: the message goes on without it.
          arrived.set(lower, (arrived.get(lower) ?? 0) + 1);
          return;
        }
        if (tooLarge || count(name.length + raw.length + 3)) return;
        headers.push({ name, raw: Buffer.from(raw) });
      },
      body(_s: MilterSession, chunk: Buffer) {
        if (tooLarge || count(chunk.length)) return 'skip';
        body.push(Buffer.from(chunk));
        return undefined;
      },
      async eom(s: EomSession) {
        const kept = headers;
        const chunks = body;
        const large = tooLarge;
        const forged = arrived;
        reset();
        const cfg = o.settings();
        // Delete what arrived under our names, from the last one up: deleting the n-th leaves 1..n-1 where they were.
        for (const name of SPAM_HEADERS) {
          for (let i = forged.get(name.toLowerCase()) ?? 0; i >= 1; i--) s.changeHeader(name, i, null);
        }
        if (large) {
          addFields(s, uncheckedHeader(`message larger than ${HUMAN(cfg.messageSize)}`));
          return undefined;
        }
        const who = await o.identity();
        if (typeof who === 'string') return unchecked(s, 'checker not available', `milter.spam.user: ${who}`);
        if (who.uid === 0) return unchecked(s, 'checker not available', `milter.spam.user ${who.user} is root; SpamAssassin never runs as root`);
        const received = receivedHeader({
          helo, clientName: s.macro('{client_name}') ?? client?.name, clientAddress: s.macro('{client_addr}') ?? client?.address,
          by: s.macro('j'), queueId: s.macro('i'), recipients: s.recipients, sender: s.sender, date: new Date(),
        });
        // A long check (a large message, a checker starting) keeps Postfix's milter_content_timeout from running out.
        const alive = setInterval(() => s.progress(), PROGRESS_MS);
        const outcome = await withinTime(askChecker(o.checkers, who, rebuildMessage(kept, chunks, received), cfg.timeoutMs), cfg.timeoutMs)
          .finally(() => clearInterval(alive));
        if ('error' in outcome) return unchecked(s, outcome.short, outcome.error);
        const r = outcome.ok;
        if (r.score >= cfg.rejectScore) {
          if (o.log.enabled('info')) o.log.info(`milter spam check: rejected, score=${fixed(r.score)} reject_score=${fixed(cfg.rejectScore)} tests=${r.tests.join(',')}`, { queue_id: s.macro('i'), from: s.sender });
          return { result: 'reject', code: '550', xcode: '5.7.1', text: `Message refused as spam (score ${fixed(r.score)}, limit ${fixed(cfg.rejectScore)})` };
        }
        const verdict: HeaderVerdict = { isSpam: r.score >= r.required, score: r.score, required: r.required, tests: r.tests };
        addFields(s, spamHeaders(verdict));
        return undefined;
      },
      abort() {
        reset();
      },
    };
    return filter;
  };
}
