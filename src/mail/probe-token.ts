// mailmond's probe header, the one place it is written and read:
//   X-Mailmond-Probe: id=ID; sent=MS; mac=MAC
// ID names the probe (letters, digits, "." "_" "-", at most 64), MS is the
// sender's clock in epoch milliseconds when it handed the probe to the MTA,
// MAC is base64url(HMAC-SHA256(key, "ID\nMS")). The key is probe.key, shared
// by mailmond and mailprocd through the one config file: a probe without a
// valid MAC was not sent by mailmond and must not be counted (src/local/probe.ts).
// The earliest Received date of a message is read here too: the MTA's share
// of a probe's delay.
//
// Exports: PROBE_HEADER, formatProbeHeader, parseProbeHeader, verifyProbe,
// earliestReceived, ProbeToken. Pure; never throws (a malformed header is
// "not a probe", returned as a string saying why).
import { createHmac, timingSafeEqual } from 'node:crypto';

export const PROBE_HEADER = 'X-Mailmond-Probe';
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;
const HEADER_RE = /^\s*id=([^;\s]+)\s*;\s*sent=(\d{1,15})\s*;\s*mac=([A-Za-z0-9_-]{1,100})\s*$/;

export interface ProbeToken {
  readonly id: string;
  readonly sentMs: number;
  readonly mac: string;
}

export const isProbeId = (id: string): boolean => ID_RE.test(id);

function mac(key: string, id: string, sentMs: number): Buffer {
  return createHmac('sha256', key).update(`${id}\n${sentMs}`, 'utf8').digest();
}

/** The header's value (without the name) for a probe sent now. */
export function formatProbeHeader(key: string, id: string, sentMs: number): string {
  return `id=${id}; sent=${sentMs}; mac=${mac(key, id, sentMs).toString('base64url')}`;
}

/** The probe header's values (every one the message has): the token, or why it is not one. */
export function parseProbeHeader(values: readonly string[] | undefined): ProbeToken | string {
  if (values === undefined || values.length === 0) return `no ${PROBE_HEADER} header`;
  if (values.length > 1) return `${values.length} ${PROBE_HEADER} headers`;
  const m = HEADER_RE.exec(values[0] as string);
  if (m === null) return `malformed ${PROBE_HEADER} header`;
  const [, id = '', sent = '', given = ''] = m;
  if (!ID_RE.test(id)) return `malformed probe id in ${PROBE_HEADER}`;
  return { id, sentMs: Number(sent), mac: given };
}

/** Does the token's MAC match the key? Constant time in the MAC's bytes. */
export function verifyProbe(key: string, t: ProbeToken): boolean {
  const want = mac(key, t.id, t.sentMs);
  const got = Buffer.from(t.mac, 'base64url');
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * The earliest date among the Received headers (the text after the last
 * ";", RFC 5322 date-time: whole seconds), epoch ms; undefined when there is
 * none that parses. The first MTA to see the message wrote the earliest one.
 */
export function earliestReceived(values: readonly string[] | undefined): number | undefined {
  let earliest: number | undefined;
  for (const v of values ?? []) {
    const semi = v.lastIndexOf(';');
    if (semi < 0) continue;
    const ms = Date.parse(v.slice(semi + 1).replace(/\([^)]*\)/g, '').trim());
    if (Number.isFinite(ms) && (earliest === undefined || ms < earliest)) earliest = ms;
  }
  return earliest;
}
