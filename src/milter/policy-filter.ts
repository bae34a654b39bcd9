// The policy chain through the milter: at RCPT, the same decision the policy
// endpoint gives Postfix's check_policy_service — one decision code path, two
// transports. The filter builds the attributes Postfix would have sent for
// that recipient (SMTPD_POLICY_README, protocol_state=RCPT) from what the
// milter protocol tells us (connect info, HELO, envelope, the MTA's macros),
// asks `decide` (src/main.ts adapts the policy service's chain to it: this
// folder does not import src/policy, a sibling on the same floor), and maps
// the access(5) action back as Postfix's smtpd would have applied it.
//
// Exports: createPolicyFilter, POLICY_FILTER_OBSERVES, PolicyFilterOptions,
// policyAttributes, PolicyFacts, mapPolicyAction, MappedAction.
//
// Macros (Postfix's defaults, MILTER_README, are enough for the built-in
// plugins): connect info gives client_address, client_name, client_port;
// milter_mail_macros' {auth_type} {auth_authen} {auth_author} give
// sasl_method, sasl_username, sasl_sender; milter_helo_macros' {tls_version}
// {cipher} {cipher_bits} {cert_subject} {cert_issuer} give encryption_* and
// ccert_*; "i" gives queue_id (empty at the first RCPT while Postfix has not
// opened the queue file yet — as in a policy request with
// smtpd_delay_open_until_valid_rcpt). Not sent by default, used when there:
// {client_ptr} (reverse_client_name, else client_name), {daemon_port}
// (server_port), {client_name} (overrides the connect info's name). Add them
// to milter_connect_macros when a plugin needs them. protocol_name is not
// told to a milter: "ESMTP" when MAIL FROM carried ESMTP parameters, else
// "SMTP". recipient_count is 0 at RCPT, as Postfix sends it.
//
// Failure contract: never throws into the server. decide() throwing or
// rejecting (the chain itself never does; this guards a broken adapter) is
// answered like a failing access check: 451 4.3.0 for that recipient
// (tempfail), logged.
// An action we cannot apply through a milter (FILTER, REDIRECT, BCC, a
// restriction name, a malformed PREPEND) is logged at warn and the
// recipient goes on, as Postfix warns and goes on for an unknown action.
import type { Logger } from '../log.js';
import type { EomSession, MilterEvent, MilterFilter, MilterFilterFactory, MilterSession, NormalizedVerdict } from './api.js';

/** The events the filter only reads (it answers continue to them): the server asks the MTA not to wait for a reply. */
export const POLICY_FILTER_OBSERVES: ReadonlySet<MilterEvent> = new Set<MilterEvent>(['connect', 'helo', 'envfrom']);

export interface PolicyFilterOptions {
  /** The policy chain's answer (an access(5) action) for one request's attributes. */
  readonly decide: (attrs: ReadonlyMap<string, string>) => string | Promise<string>;
  readonly log: Logger;
}

/** What the milter knows when a recipient is asked about. */
export interface PolicyFacts {
  readonly connect?: { readonly hostname: string; readonly family: string; readonly address: string; readonly port: number } | undefined;
  readonly helo?: string | undefined;
  readonly sender: string;
  readonly senderArgs: readonly string[];
  readonly recipient: string;
  /** The MTA's macros (MilterSession.macro). */
  readonly macro: (name: string) => string | undefined;
  /** Correlates the requests of one message (Postfix's "instance"). */
  readonly instance: string;
}

/** How an action applies: a verdict for this recipient, and what waits for end of message. */
export interface MappedAction {
  readonly verdict: NormalizedVerdict;
  /** HOLD: put the message in the MTA's hold queue at end of message, with this reason. */
  readonly hold?: string;
  /** PREPEND: this header goes on top of the message at end of message (value without the leading space). */
  readonly prepend?: { readonly name: string; readonly value: string };
  /** Why the action was not applied (logged at warn). */
  readonly ignored?: string;
}

const CONTINUE: NormalizedVerdict = Object.freeze({ result: 'continue' });
/** Postfix's defaults: access_map_reject_code, access_map_defer_code (and defer_code for DEFER_IF_PERMIT). */
const REJECT_CODE = '554';
const DEFER_CODE = '450';
/** What Postfix answers when one of its own lookups fails: the policy chain's FAIL_CLOSED too. */
const LOOKUP_FAILED: NormalizedVerdict = Object.freeze({ result: 'tempfail', code: '451', xcode: '4.3.0', text: 'Temporary lookup failure, try again later' });

/** A header name as RFC 5322 allows it (printable ASCII but colon and space). */
const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
const DSN = /^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)/;

/** The Postfix policy attributes for one RCPT, as check_policy_service would send them. */
export function policyAttributes(f: PolicyFacts): Map<string, string> {
  const m = (name: string): string => f.macro(name) ?? '';
  const c = f.connect;
  const inet = c !== undefined && (c.family === 'inet' || c.family === 'inet6');
  // Sendmail writes IPv6 addresses "IPv6:…"; Postfix's policy attribute is the bare address.
  const address = (m('{client_addr}') || (inet ? c.address : '')).replace(/^IPv6:/i, '');
  // An MTA that could not name the client sends "[address]" (Sendmail) or "unknown"; Postfix's attribute is "unknown".
  const rawName = m('{client_name}') || (c?.hostname ?? '');
  const clientName = rawName === '' || rawName.startsWith('[') ? 'unknown' : rawName;
  const size = f.senderArgs.map((a) => /^SIZE=(\d+)$/i.exec(a)?.[1]).find((s) => s !== undefined) ?? '';
  return new Map<string, string>([
    ['request', 'smtpd_access_policy'],
    ['protocol_state', 'RCPT'],
    ['protocol_name', f.senderArgs.length > 0 ? 'ESMTP' : 'SMTP'],
    ['helo_name', f.helo ?? ''],
    ['queue_id', m('i')],
    ['sender', f.sender],
    ['recipient', f.recipient],
    ['recipient_count', '0'],
    ['client_address', address],
    ['client_name', clientName],
    ['reverse_client_name', m('{client_ptr}') || clientName],
    ['client_port', m('{client_port}') || (inet && c.port > 0 ? String(c.port) : '')],
    ['instance', f.instance],
    ['sasl_method', m('{auth_type}')],
    ['sasl_username', m('{auth_authen}')],
    ['sasl_sender', m('{auth_author}')],
    ['size', size],
    ['ccert_subject', m('{cert_subject}')],
    ['ccert_issuer', m('{cert_issuer}')],
    ['ccert_fingerprint', ''],
    ['ccert_pubkey_fingerprint', ''],
    ['encryption_protocol', m('{tls_version}')],
    ['encryption_cipher', m('{cipher}')],
    ['encryption_keysize', m('{cipher_bits}')],
    ['etrn_domain', ''],
    ['stress', ''],
    ['server_address', m('{daemon_addr}')],
    ['server_port', m('{daemon_port}')],
    ['policy_context', ''],
  ]);
}

/** Postfix: "<rcpt>: Recipient address rejected: text". Reply text is one line; a client's bytes are printable here. */
function rejectText(recipient: string, text: string): string {
  const clean = (s: string): string => s.replace(/[^\x20-\x7e]/g, '?');
  return `<${clean(recipient)}>: Recipient address rejected: ${clean(text)}`;
}

/**
 * A code, the optional enhanced code at the start of the text (its class
 * made to agree with the code, as Postfix does), and the rest of the text.
 */
function refuse(code: string, rest: string, fallbackText: string, recipient: string): NormalizedVerdict {
  const m = DSN.exec(rest);
  const cls = code[0] as string;
  const xcode = m !== null ? `${cls}.${m[2]}.${m[3]}` : `${cls}.7.1`;
  const text = (m !== null ? rest.slice(m[0].length) : rest).trim() || fallbackText;
  return { result: cls === '5' ? 'reject' : 'tempfail', code, xcode, text: rejectText(recipient, text) };
}

/** Maps one access(5) action to what the milter does for this recipient, as Postfix's smtpd would apply it. */
export function mapPolicyAction(action: string, recipient: string): MappedAction {
  const trimmed = action.trim();
  const space = trimmed.search(/\s/);
  const word = (space < 0 ? trimmed : trimmed.slice(0, space)).toUpperCase();
  const rest = space < 0 ? '' : trimmed.slice(space + 1).trim();
  if (/^[45]\d\d$/.test(word)) return { verdict: refuse(word, rest, word[0] === '5' ? 'Access denied' : 'Try again later', recipient) };
  // An all-numerical answer is an old way to say OK (access(5)).
  if (/^\d+$/.test(word)) return { verdict: CONTINUE };
  switch (word) {
    case '':
    case 'OK':
    case 'DUNNO':
    case 'DEFER_IF_REJECT': // no restriction comes after the milter that could reject: nothing to act on
      return { verdict: CONTINUE };
    case 'REJECT':
      return { verdict: refuse(REJECT_CODE, rest, 'Access denied', recipient) };
    case 'DEFER':
    case 'DEFER_IF_PERMIT':
      return { verdict: refuse(DEFER_CODE, rest, 'Service unavailable', recipient) };
    case 'DISCARD':
      return { verdict: { result: 'discard' } };
    case 'HOLD':
      return { verdict: CONTINUE, hold: rest || 'held by policy' };
    case 'PREPEND': {
      const colon = rest.indexOf(':');
      const name = colon > 0 ? rest.slice(0, colon) : '';
      if (!HEADER_NAME.test(name)) return { verdict: CONTINUE, ignored: `PREPEND without a valid "Name: value" header: ${JSON.stringify(rest.slice(0, 80))}` };
      return { verdict: CONTINUE, prepend: { name, value: rest.slice(colon + 1).replace(/^[ \t]+/, '') } };
    }
    case 'WARN':
    case 'INFO':
      return { verdict: CONTINUE, ignored: `${word} ${rest}` };
    default:
      return { verdict: CONTINUE, ignored: `action ${JSON.stringify(trimmed.slice(0, 80))} cannot be applied through the milter` };
  }
}

let instances = 0;

/** The filter factory: one filter per MTA connection. */
export function createPolicyFilter(o: PolicyFilterOptions): MilterFilterFactory {
  return () => {
    let connect: PolicyFacts['connect'];
    let helo: string | undefined;
    let sender = '';
    let senderArgs: readonly string[] = [];
    let instance = '';
    let holds: string[] = [];
    let prepends: { name: string; value: string }[] = [];
    const reset = (): void => {
      holds = [];
      prepends = [];
    };
    const fields = (attrs: ReadonlyMap<string, string>, to: string): Record<string, string | undefined> =>
      ({ client: attrs.get('client_address'), from: sender, to, queue_id: attrs.get('queue_id') || undefined });
    const filter: MilterFilter = {
      connect(_s, info) {
        connect = info;
      },
      helo(_s, name) {
        helo = name;
      },
      envfrom(_s, from, args) {
        reset();
        sender = from;
        senderArgs = args;
        instance = `${process.pid.toString(16)}.${(++instances).toString(16)}`;
      },
      envrcpt(s: MilterSession, recipient: string) {
        const attrs = policyAttributes({ connect, helo, sender, senderArgs, recipient, macro: (n) => s.macro(n), instance });
        const failed = (err: unknown): NormalizedVerdict => {
          o.log.error(`milter policy check failed for ${recipient}, answered 451 4.3.0: ${err instanceof Error ? err.message : String(err)}`);
          return LOOKUP_FAILED;
        };
        const apply = (action: string): NormalizedVerdict => {
          const mapped = mapPolicyAction(action, recipient);
          if (mapped.ignored !== undefined) o.log.warn(`milter policy: ${mapped.ignored}`, fields(attrs, recipient));
          else if (mapped.verdict.result !== 'continue' || mapped.hold !== undefined || mapped.prepend !== undefined) {
            if (o.log.enabled('info')) o.log.info(`milter policy: action=${action}`, fields(attrs, recipient));
          }
          if (mapped.hold !== undefined) holds.push(mapped.hold);
          if (mapped.prepend !== undefined) prepends.push(mapped.prepend);
          return mapped.verdict;
        };
        // The chain answers at once when no plugin waits for a shared engine: so does the filter.
        let action: string | Promise<string>;
        try {
          action = o.decide(attrs);
        } catch (err) {
          return failed(err);
        }
        return action instanceof Promise ? action.then(apply, failed) : apply(action);
      },
      eom(s: EomSession) {
        // Several recipients may each have asked: in the order asked, each header on top (the last asked ends up first, as Postfix prepends).
        for (const p of prepends) s.insertHeader(0, p.name, p.value);
        if (holds.length > 0) s.quarantine(holds.join('; '));
        reset();
      },
      abort() {
        reset();
      },
    };
    return filter;
  };
}
