// The "spf" policy plugin: evaluates SPF (RFC 7208) for the client address
// and the MAIL FROM identity at the RCPT stage, with mailauth's evaluator and
// our resolver, and maps the result to a configured action. With the null
// sender (bounces) the HELO identity is checked instead, as
// postmaster@<helo> (RFC 7208 §2.3, §2.4); a null sender with an address
// literal or no HELO has no identity to check and gets result "none".
//
// Defaults: fail → "REJECT 5.7.23 …" (RFC 7372 X.7.23 "SPF validation
// failed"); every other result → DUNNO. softfail and neutral must not be
// rejected on their own (RFC 7208 §8.4, §8.5). permerror may be set to
// "REJECT 5.7.24 …" and temperror to "DEFER_IF_PERMIT 4.7.24 …" (X.7.24 "SPF
// validation error"), but by default a temperror adds nothing but a log line.
//
// Exports: SpfResult, SpfDeps, createSpfPlugin (options: the config's
// policy.spf, src/config/policy.ts).
//
// Failure contract: never throws for DNS or record trouble. A DNS timeout,
// SERVFAIL or refusal is a temperror (each query bounded by timeout, the whole
// evaluation by evaluation_timeout); a broken record is a permerror; both map
// through the action table like any other result. Should the plugin throw
// all the same (a bug), the chain answers its onError: `on_error`, default
// fail open (DUNNO), as for temperror: SPF is one signal among others.
import { hostname as osHostname } from 'node:os';
import { spf as evaluateSpf } from 'mailauth/lib/spf/index.js';
import type { SpfOptions } from '../../config/index.js';
import type { Logger } from '../../log.js';
import { FAIL_OPEN, type PolicyPlugin, type PolicyRequest } from '../types.js';
import { createDnsResolver, DnsDeadlineError, normalizeIp, parseHeloLiteral, withDeadline, type DnsResolver } from './dns-lookup.js';


export const SPF_RESULTS = ['pass', 'fail', 'softfail', 'neutral', 'none', 'permerror', 'temperror'] as const;
export type SpfResult = (typeof SPF_RESULTS)[number];


export interface SpfDeps {
  log: Logger;
  /** Used instead of a resolver built from options.servers (tests, shared resolvers). */
  resolver?: DnsResolver;
}

/** mailauth's resolver signature (rrtype-specific record shapes, as node:dns returns them). */
type MailauthResolver = (name: string, rrtype: string) => Promise<string[][] | string[]>;

export function createSpfPlugin(options: SpfOptions, deps: SpfDeps): PolicyPlugin {
  const ownResolver = deps.resolver === undefined;
  const resolver = deps.resolver ?? createDnsResolver({ servers: options.servers, timeoutMs: options.timeout });
  const mta = options.hostname ?? osHostname();
  const { log } = deps;

  // mailauth reads err.code: ENOTFOUND/ENODATA are void lookups, ETIMEOUT and
  // EREFUSED temperrors. Other errors (ESERVFAIL, …) it passes on unmarked,
  // and inside include: it then skips the mechanism as if it did not match —
  // so a SERVFAIL in an include followed by -all came out as "fail". RFC 7208
  // §5.2 says temperror; marking every error but "no such record" with
  // mailauth's own spfResult makes it so.
  const resolve: MailauthResolver = async (name, rrtype) => {
    try {
      return (await withDeadline(resolver.resolve(name, rrtype), options.timeout, `${rrtype} ${name}`)) as string[][] | string[];
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA') throw err;
      throw Object.assign(err as Error, {
        spfResult: { error: 'temperror', text: `DNS ${typeof code === 'string' ? code : 'error'} looking up ${rrtype} ${name}` },
      });
    }
  };

  return {
    name: 'spf',
    cacheTtlMs: options.cache_ttl,
    onError: options.on_error ?? FAIL_OPEN,
    cacheKey(req: PolicyRequest): string | undefined {
      if (options.cache_ttl <= 0 || !atRcpt(req)) return undefined;
      // The whole sender, not just its domain: macros (%{l}, %{s}) can depend on the local part.
      return `${req.get('client_address')}|${req.get('sender')}|${req.get('helo_name').toLowerCase()}`;
    },
    async check(req: PolicyRequest): Promise<string | undefined> {
      if (!atRcpt(req)) return undefined;
      const ip = req.get('client_address').trim();
      if (normalizeIp(ip) === undefined) return undefined; // "unknown" or missing: nothing to check against
      const helo = req.get('helo_name').trim().replace(/\.$/, '');
      const sender = req.get('sender').trim();
      const id = req.get('queue_id') || undefined;
      const values = { ip, helo, sender, domain: '', comment: '', header: '', result: '' };

      let result: SpfResult;
      if (sender === '' && (helo === '' || parseHeloLiteral(helo) !== undefined || !helo.includes('.'))) {
        result = 'none';
        values.comment = 'null sender and no HELO name to check';
      } else {
        // Null sender: the HELO identity, spelled postmaster@<helo> (RFC 7208 §2.4).
        const identity = sender !== '' ? sender : `postmaster@${helo}`;
        const r = await evaluate(identity, ip, helo);
        result = r.result;
        Object.assign(values, { domain: r.domain, comment: r.comment, header: r.header });
      }
      values.result = result;

      const fields = { result, client: ip, helo, from: sender, domain: values.domain || undefined };
      if (result === 'temperror') log.info(`spf temperror: ${values.comment}`, fields, id);
      else log.debug('spf', fields, id);

      const template = options.actions[result];
      if (template.trim().toUpperCase() === 'DUNNO') return undefined;
      return template.replace(/\{(\w+)\}/g, (m, k: string) => (k in values ? oneLine(values[k as keyof typeof values]) : m));
    },
    close(): Promise<void> {
      if (ownResolver) resolver.cancel?.();
      return Promise.resolve();
    },
  };

  async function evaluate(sender: string, ip: string, helo: string): Promise<{ result: SpfResult; domain: string; comment: string; header: string }> {
    const domain = sender.slice(sender.lastIndexOf('@') + 1).toLowerCase();
    try {
      const r = await withDeadline(
        evaluateSpf({ sender, ip, helo: helo || undefined, mta, resolver: resolve }),
        options.evaluation_timeout,
        `SPF evaluation for ${domain}`,
      );
      const result = (SPF_RESULTS as readonly string[]).includes(r.status.result) ? (r.status.result as SpfResult) : 'temperror';
      // mailauth folds the header for a message; an action is one line.
      return { result, domain: r.domain, comment: r.status.comment ?? '', header: r.header.replace(/^Received-SPF:\s*/i, '') };
    } catch (err) {
      // Our deadline, or a bug in the evaluator: either way we do not know, which is a temperror.
      if (err instanceof DnsDeadlineError) return { result: 'temperror', domain, comment: err.message, header: '' };
      log.error('spf evaluator threw', { domain, error: (err as Error).message });
      return { result: 'temperror', domain, comment: `SPF evaluation failed: ${(err as Error).message}`, header: '' };
    }
  }
}

function atRcpt(req: PolicyRequest): boolean {
  return req.get('protocol_state').toUpperCase() === 'RCPT';
}

const oneLine = (s: string): string => s.replace(/\p{Cc}+/gu, ' ').trim();
