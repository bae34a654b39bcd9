// The "dnsbl" policy plugin: policyd-weight-style weighted scoring at the
// RCPT stage (policyd-weight scores there "to keep multirecipient mail
// intact"). A request's score is the sum of
//   - DNSBL zones (type ip): the client address, reversed-octet IPv4 or
//     nibble IPv6 (RFC 5782 §2.1, §2.4), under the zone; listed → weight,
//     not listed → miss_weight (policyd-weight's negative "MISS score");
//   - RHSBL zones (type rhs): the sender domain (and, if configured, the
//     HELO name) under the zone, scored the same way;
//   - HELO checks: an address literal that is not the client's, "localhost",
//     a name without a dot, and whether the name's A/AAAA records contain the
//     client address (match, mismatch, no address at all);
//   - MAIL FROM checks: a sender domain with neither MX nor address records
//     (or a null MX, RFC 7505), the client being one of the sender domain's
//     MX hosts or addresses, a HELO that claims the sender's domain but does
//     not resolve to the client.
// This is a documented subset of policyd-weight 0.1.15's checks, with its
// default weights where it has one; dial-up heuristics, random-sender and
// multipart-domain scores and the RHSBL penalty factors are left out.
// A score that reaches the threshold (score >= threshold, as policyd-weight's
// REJECTLEVEL) returns "REJECT 5.7.1 <text with the reasons>"; otherwise
// undefined, or "PREPEND X-policy-weight: …" if prepend_header is on. Note
// that PREPEND is a decisive action for the chain (types.ts isDecisive).
//
// Exports: DnsblDeps, createDnsblPlugin (options: the config's policy.dnsbl,
// src/config/policy.ts).
//
// Failure contract: never throws for DNS trouble. All lookups of a request
// run concurrently and share one deadline (options.timeout, so a request
// takes at most that long); a lookup that times out, SERVFAILs or is refused
// contributes nothing and is logged at debug. A DNS failure never makes a
// REJECT: a request is rejected only if it would still reach the threshold
// had every failed lookup given its most favourable answer. Answers
// (including NXDOMAIN) are cached for cache_ttl; failures are not. Should
// the plugin throw all the same (a bug), the chain answers its onError:
// `on_error`, default fail open (DUNNO) — a DNSBL is a filter on top of the
// mail server's own checks, and its outage must not stop all mail.
import type { DnsblOptions } from '../../config/index.js';
import type { Logger } from '../../log.js';
import { FAIL_OPEN, type PolicyPlugin, type PolicyRequest } from '../types.js';
import {
  createDnsLookup,
  createDnsResolver,
  normalizeIp,
  parseHeloLiteral,
  reverseIpQuery,
  type DnsLookup,
  type DnsResolver,
  type LookupResult,
} from './dns-lookup.js';


type Zone = DnsblOptions['zones'][number];

export interface DnsblDeps {
  log: Logger;
  /** Used instead of a resolver built from options.servers (tests, shared resolvers). */
  resolver?: DnsResolver;
  /** Clock for the answer cache; Date.now by default. */
  now?: () => number;
}

/** One scored finding; reason is shown in the REJECT text when score > 0. */
interface Score {
  code: string;
  score: number;
  reason?: string;
}

/** A check that got no answer: it counts 0, and best is what it could at most have subtracted. */
interface Unknown {
  code: string;
  best: number;
}

interface Tally {
  scores: Score[];
  unknowns: Unknown[];
}

/** What the HELO name's addresses say about the client. */
type HeloVerdict = 'match' | 'mismatch' | 'unknown' | 'not-checked';

const MAX_MX_HOSTS = 5;
const MAX_REJECT_TEXT = 400;
const round = (n: number): number => Math.round(n * 100) / 100;
const best = (...weights: number[]): number => Math.min(0, ...weights);
const oneLine = (s: string): string => s.replace(/\p{Cc}+/gu, ' ');

export function createDnsblPlugin(options: DnsblOptions, deps: DnsblDeps): PolicyPlugin {
  const now = deps.now ?? Date.now;
  const ownResolver = deps.resolver === undefined;
  const resolver = deps.resolver ?? createDnsResolver({ servers: options.servers, timeoutMs: options.timeout });
  const dns: DnsLookup = createDnsLookup({ resolver, ttlMs: options.cache_ttl, maxEntries: options.cache_size, now });
  const { log } = deps;
  const h = options.helo;
  const s = options.sender;
  const heloAddressWeights = [h.address_match, h.address_mismatch, h.no_address];
  const needHeloAddresses = heloAddressWeights.some((w) => w !== 0) || s.helo_claims_domain !== 0;

  const lookup: DnsLookup['lookup'] = async (type, name, deadlineAt) => {
    const r = await dns.lookup(type, name, deadlineAt);
    if (!r.ok) log.debug('dnsbl lookup failed', { type, name, error: r.error });
    return r;
  };

  async function checkZone(zone: Zone, req: Facts, deadlineAt: number, t: Tally): Promise<void> {
    const label = zone.name ?? zone.zone.toUpperCase().replace(/[^A-Z0-9]+/g, '_');
    const subjects: { query: string; what: string }[] = [];
    if (zone.type === 'ip') {
      const q = req.client !== undefined ? reverseIpQuery(req.client, zone.zone) : undefined;
      if (q !== undefined) subjects.push({ query: q, what: `client ${req.clientAddress}` });
    } else {
      const names = new Map<string, string>();
      if (zone.targets.includes('sender') && req.senderDomain !== undefined) names.set(req.senderDomain, 'sender domain');
      if (zone.targets.includes('helo') && req.heloName !== undefined && !names.has(req.heloName)) names.set(req.heloName, 'HELO');
      for (const [name, what] of names) subjects.push({ query: `${name}.${zone.zone}`, what: `${what} ${name}` });
    }
    if (subjects.length === 0) return;
    const results = await Promise.all(subjects.map((sub) => lookup('A', sub.query, deadlineAt)));
    const verdicts = results.map((r) => classifyAnswer(zone, r));
    const listed = subjects.filter((_, i) => verdicts[i] === 'listed');
    if (listed.length > 0) {
      t.scores.push({ code: `IN_${label}`, score: zone.weight, reason: `${listed.map((l) => l.what).join(', ')} listed in ${zone.zone}` });
    } else if (verdicts.every((v) => v === 'clean')) {
      if (zone.miss_weight !== 0) t.scores.push({ code: `NOT_IN_${label}`, score: zone.miss_weight });
    } else {
      t.unknowns.push({ code: `${label}_UNKNOWN`, best: best(zone.weight, zone.miss_weight) });
    }
  }

  async function checkHelo(req: Facts, deadlineAt: number, t: Tally): Promise<HeloVerdict> {
    const helo = req.helo;
    if (helo === '') return 'not-checked';
    const literal = parseHeloLiteral(helo);
    if (literal !== undefined) {
      if (req.client !== undefined && normalizeIp(literal) !== req.client && h.literal_mismatch !== 0) {
        t.scores.push({ code: 'HELO_LITERAL_MISMATCH', score: h.literal_mismatch, reason: `HELO ${helo} is not the client's address` });
      }
      return 'not-checked';
    }
    if (helo === 'localhost' || helo === 'localhost.localdomain' || helo.endsWith('.localhost')) {
      if (h.localhost !== 0) t.scores.push({ code: 'HELO_LOCALHOST', score: h.localhost, reason: `HELO ${helo}` });
      return 'not-checked';
    }
    if (req.heloName === undefined) {
      if (h.not_fqdn !== 0) t.scores.push({ code: 'HELO_NOT_FQDN', score: h.not_fqdn, reason: `HELO ${helo} is not a fully qualified name` });
      return 'not-checked';
    }
    if (req.client === undefined || !needHeloAddresses) return 'not-checked';
    const v6 = req.client.includes(':');
    const [own, other] = await Promise.all([
      lookup(v6 ? 'AAAA' : 'A', req.heloName, deadlineAt),
      lookup(v6 ? 'A' : 'AAAA', req.heloName, deadlineAt),
    ]);
    if (own.ok && own.records.some((a) => normalizeIp(a) === req.client)) {
      if (h.address_match !== 0) t.scores.push({ code: 'HELO_IS_CLIENT', score: h.address_match });
      return 'match';
    }
    if (own.ok && own.records.length > 0) {
      if (h.address_mismatch !== 0) {
        t.scores.push({ code: 'HELO_NOT_CLIENT', score: h.address_mismatch, reason: `HELO ${helo} does not resolve to ${req.clientAddress}` });
      }
      return 'mismatch';
    }
    if (own.ok && other.ok) {
      const code = other.records.length > 0 ? 'HELO_NOT_CLIENT' : 'HELO_NO_ADDRESS';
      const score = other.records.length > 0 ? h.address_mismatch : h.no_address;
      const reason = other.records.length > 0 ? `HELO ${helo} does not resolve to ${req.clientAddress}` : `HELO ${helo} does not resolve`;
      if (score !== 0) t.scores.push({ code, score, reason });
      return 'mismatch';
    }
    t.unknowns.push({ code: 'HELO_UNKNOWN', best: best(...heloAddressWeights) });
    return 'unknown';
  }

  async function checkSender(req: Facts, heloVerdict: Promise<HeloVerdict>, deadlineAt: number, t: Tally): Promise<void> {
    const domain = req.senderDomain;
    if (domain === undefined) return; // null sender (bounces) or no domain: nothing to judge
    const work: Promise<void>[] = [];
    if (s.no_mx_or_address !== 0 || (s.client_is_mx !== 0 && req.client !== undefined)) {
      work.push(checkSenderDns(domain, req, deadlineAt, t));
    }
    if (s.helo_claims_domain !== 0 && req.heloName !== undefined && (req.heloName === domain || req.heloName.endsWith(`.${domain}`))) {
      work.push(heloVerdict.then((v) => {
        if (v === 'mismatch') {
          t.scores.push({
            code: 'HELO_CLAIMS_SENDER_DOMAIN',
            score: s.helo_claims_domain,
            reason: `HELO ${req.helo} claims the sender's domain but is not ${req.clientAddress || 'the client'}`,
          });
        } else if (v === 'unknown') {
          t.unknowns.push({ code: 'HELO_CLAIMS_SENDER_DOMAIN_UNKNOWN', best: best(s.helo_claims_domain) });
        }
      }));
    }
    await Promise.all(work);
  }

  async function checkSenderDns(domain: string, req: Facts, deadlineAt: number, t: Tally): Promise<void> {
    const v6 = req.client?.includes(':') ?? false;
    const [mx, a, aaaa] = await Promise.all([
      lookup('MX', domain, deadlineAt),
      lookup('A', domain, deadlineAt),
      lookup('AAAA', domain, deadlineAt),
    ]);
    const nullMx = mx.ok && mx.records.length === 1 && ['', '.'].includes(mx.records[0]?.exchange ?? '');
    if (s.no_mx_or_address !== 0) {
      if (nullMx) {
        t.scores.push({ code: 'SENDER_NULL_MX', score: s.no_mx_or_address, reason: `sender domain ${domain} accepts no mail (null MX)` });
      } else if (mx.ok && mx.records.length === 0 && a.ok && aaaa.ok && a.records.length + aaaa.records.length === 0) {
        t.scores.push({ code: 'BOGUS_MX', score: s.no_mx_or_address, reason: `sender domain ${domain} has no MX or address records` });
      } else if (!(mx.ok && mx.records.length > 0) && !(mx.ok && a.ok && aaaa.ok)) {
        t.unknowns.push({ code: 'BOGUS_MX_UNKNOWN', best: best(s.no_mx_or_address) });
      }
    }
    if (s.client_is_mx === 0 || req.client === undefined || nullMx) return;
    const client = req.client;
    const own = v6 ? aaaa : a;
    if (own.ok && own.records.some((x) => normalizeIp(x) === client)) {
      t.scores.push({ code: 'CLIENT_IS_SENDER_MX', score: s.client_is_mx });
      return;
    }
    const hosts = mx.ok ? [...mx.records].sort((x, y) => x.priority - y.priority).slice(0, MAX_MX_HOSTS).map((r) => r.exchange) : [];
    const hostResults = await Promise.all(hosts.filter((x) => x !== '').map((x) => lookup(v6 ? 'AAAA' : 'A', x, deadlineAt)));
    if (hostResults.some((r) => r.ok && r.records.some((x) => normalizeIp(x) === client))) {
      t.scores.push({ code: 'CLIENT_IS_SENDER_MX', score: s.client_is_mx });
    } else if (!mx.ok || !own.ok || hostResults.some((r) => !r.ok)) {
      t.unknowns.push({ code: 'CLIENT_IS_SENDER_MX_UNKNOWN', best: best(s.client_is_mx) });
    }
  }

  return {
    name: 'dnsbl',
    cacheTtlMs: options.cache_ttl,
    onError: options.on_error ?? FAIL_OPEN,
    cacheKey(req: PolicyRequest): string | undefined {
      if (options.cache_ttl <= 0 || !atRcpt(req)) return undefined;
      const f = readFacts(req);
      return `${req.get('client_address')}|${f.helo}|${f.senderDomain ?? ''}`;
    },
    async check(req: PolicyRequest): Promise<string | undefined> {
      if (!atRcpt(req)) return undefined;
      const f = readFacts(req);
      const deadlineAt = Date.now() + options.timeout;
      const t: Tally = { scores: [], unknowns: [] };
      const helo = checkHelo(f, deadlineAt, t);
      await Promise.all([
        ...options.zones.map((z) => checkZone(z, f, deadlineAt, t)),
        helo,
        checkSender(f, helo, deadlineAt, t),
      ]);
      // Sort so that logs, headers and reasons do not depend on which answer came first.
      t.scores.sort((x, y) => y.score - x.score || x.code.localeCompare(y.code));
      const score = round(t.scores.reduce((sum, x) => sum + x.score, 0));
      const bestCase = round(score + t.unknowns.reduce((sum, x) => sum + x.best, 0));
      const codes = t.scores.map((x) => `${x.code}=${x.score}`).join(' ');
      const fields = { client: req.get('client_address'), helo: f.helo, from: req.get('sender'), score, checks: codes || undefined };
      const id = req.get('queue_id') || undefined;
      if (bestCase >= options.threshold) {
        const reasons = t.scores.filter((x) => x.score > 0 && x.reason !== undefined).map((x) => x.reason).join('; ');
        log.info('dnsbl reject', fields, id);
        return `REJECT 5.7.1 ${renderText(options.reject_text, {
          reasons,
          score: String(score),
          threshold: String(options.threshold),
          client: req.get('client_address'),
          helo: f.helo,
          sender: req.get('sender'),
        })}`;
      }
      if (score >= options.threshold) {
        log.info('dnsbl not rejected: over the threshold only because lookups failed', {
          ...fields,
          unanswered: t.unknowns.map((u) => u.code).join(' '),
        }, id);
      } else {
        log.debug('dnsbl pass', fields, id);
      }
      if (options.prepend_header) return `PREPEND ${options.header_name}: ${oneLine(codes || 'no findings')}; rate: ${score}`;
      return undefined;
    },
    maintain(at: number): Promise<void> {
      dns.purge(at);
      return Promise.resolve();
    },
    close(): Promise<void> {
      if (ownResolver) resolver.cancel?.();
      return Promise.resolve();
    },
  };
}

/** The parts of a request the checks look at, normalised once. */
interface Facts {
  /** normalizeIp(client_address), for comparisons; undefined if Postfix sent none or "unknown". */
  client: string | undefined;
  /** client_address as sent, for reasons and logs. */
  clientAddress: string;
  /** helo_name, lower case, without a trailing dot; "" if none. */
  helo: string;
  /** helo when it is a dotted name (not a literal): the one to look up. */
  heloName: string | undefined;
  /** The sender's domain, lower case; undefined for the null sender. */
  senderDomain: string | undefined;
}

function readFacts(req: PolicyRequest): Facts {
  const helo = req.get('helo_name').trim().toLowerCase().replace(/\.$/, '');
  const sender = req.get('sender').trim();
  const at = sender.lastIndexOf('@');
  const domain = at >= 0 ? sender.slice(at + 1).toLowerCase().replace(/\.$/, '') : '';
  const isName = (n: string): boolean => /^[a-z0-9_-]+(\.[a-z0-9_-]+)+$/.test(n);
  return {
    client: normalizeIp(req.get('client_address')),
    clientAddress: req.get('client_address').trim(),
    helo,
    heloName: isName(helo) && parseHeloLiteral(helo) === undefined ? helo : undefined,
    senderDomain: isName(domain) ? domain : undefined,
  };
}

function atRcpt(req: PolicyRequest): boolean {
  return req.get('protocol_state').toUpperCase() === 'RCPT';
}

/**
 * listed: an A answer that means "listed" (see zoneSchema.answers). clean:
 * NXDOMAIN, or only 127.x codes the zone's answers leave out. unknown: no
 * answer, or an answer that is no listing at all — 127.255.255.x ("query
 * refused") or an address outside 127/8 (a resolver that rewrites NXDOMAIN).
 */
function classifyAnswer(zone: Zone, r: LookupResult<string>): 'listed' | 'clean' | 'unknown' {
  if (!r.ok) return 'unknown';
  const isCode = (a: string): boolean => /^127\./.test(a) && !/^127\.255\.255\./.test(a);
  if (r.records.some((a) => (zone.answers !== undefined ? zone.answers.includes(a) : isCode(a)))) return 'listed';
  return r.records.every(isCode) ? 'clean' : 'unknown';
}

function renderText(template: string, values: Record<string, string>): string {
  const text = oneLine(template.replace(/\{(\w+)\}/g, (m, k: string) => (k in values ? (values[k] ?? '') : m)));
  return text.length > MAX_REJECT_TEXT ? `${text.slice(0, MAX_REJECT_TEXT - 3)}...` : text;
}
