// One probe: sent through the MTA with nodemailer, then looked for in
// mailprocd's records over the administrator's control socket
// ({"cmd":"probe","id":ID}, src/control/server.ts) until it is there or the
// deadline passes. Why the control socket and not the state store opened
// read-only: the daemon is the one reader and writer of its LMDB
// environment (its layout, maxDbs and lmdb's version stay its own business),
// the socket's mode (0600, the daemon's user) already says who may ask, and a
// daemon that is down is seen as such instead of as old records.
//
// Exports: sendProbe, awaitProbe, probeOnce, ProbeOutcome, ProbeStages,
// ProbeTarget, STAGES. Never throws: every failure is an outcome.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { createTransport } from 'nodemailer';
import { formatProbeHeader, PROBE_HEADER } from '../../mail/probe-token.js';
import { askDaemon } from '../mailproc/control-client.js';

/** Where a probe's time went, seconds; the order is the message's path. */
export const STAGES = ['mta', 'before', 'slot', 'transfer', 'work'] as const;
export type Stage = (typeof STAGES)[number];
export type ProbeStages = Readonly<Record<Stage | 'total', number>>;

export interface ProbeTarget {
  readonly to: string;
  /** Envelope sender; "" = the null sender (no bounce of a lost probe reaches anyone). */
  readonly from: string;
  readonly host: string;
  readonly port: number;
  readonly key: string;
  /** <run>/control.sock of the mailprocd that delivers to `to`. */
  readonly controlSocket: string;
  /** How long to wait, from the send, for the arrival (ms). */
  readonly thresholdMs: number;
  /** Between two looks at the control socket (ms). */
  readonly pollMs?: number;
}

export type ProbeOutcome = (
  | { readonly result: 'arrived'; readonly stages: ProbeStages; readonly queueId: string }
  /** The MTA did not take it (refused, unreachable): it cannot arrive. */
  | { readonly result: 'unsent'; readonly reason: string }
  /** Taken by the MTA but not recorded within the threshold. */
  | { readonly result: 'lost'; readonly reason: string }
) & {
  readonly id: string;
  readonly sentMs: number;
  /** mailprocd's counts of what its probe addresses got since it started (recorded, forged, replayed, unkeyed), when it answered. */
  readonly counts?: Readonly<Record<string, number>>;
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function newProbeId(): string {
  return `${Date.now().toString(36)}.${randomBytes(8).toString('hex')}`;
}

/** Hands one probe to the MTA; undefined when it was accepted, else why not. */
export async function sendProbe(t: ProbeTarget, id: string, sentMs: number): Promise<string | undefined> {
  const timeout = Math.max(1000, t.thresholdMs);
  const transport = createTransport({
    host: t.host, port: t.port, secure: false,
    // Opportunistic STARTTLS, unverified (Postfix's "may"): a probe carries nothing secret.
    tls: { rejectUnauthorized: false },
    name: hostname(), connectionTimeout: timeout, greetingTimeout: timeout, socketTimeout: timeout,
  });
  try {
    await transport.sendMail({
      envelope: { from: t.from, to: [t.to] },
      from: `mailmond <mailmond@${hostname()}>`,
      to: t.to,
      subject: `mailmond probe ${id}`,
      headers: { [PROBE_HEADER]: formatProbeHeader(t.key, id, sentMs), 'Auto-Submitted': 'auto-generated' },
      text: `A delivery-delay probe from mailmond on ${hostname()}, sent ${new Date(sentMs).toISOString()}.\nmailprocd records its arrival and keeps no mail.\n`,
    });
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    transport.close();
  }
}

interface ProbeRecordReply {
  readonly sentMs: number;
  readonly doneMs: number;
  readonly mtaMs: number;
  readonly beforeMs: number;
  readonly slotMs: number;
  readonly transferMs: number;
  readonly workMs: number;
  readonly queueId: string;
}

/** Looks for the probe until it is recorded or `deadline` (epoch ms) passes. */
export async function awaitProbe(t: ProbeTarget, id: string, sentMs: number, deadline: number): Promise<ProbeOutcome> {
  let reason = 'not recorded by mailprocd';
  let counts: Record<string, number> | undefined;
  for (;;) {
    try {
      const r = await askDaemon(t.controlSocket, { cmd: 'probe', id }, Math.max(1000, deadline - Date.now()));
      if (r.counts !== null && typeof r.counts === 'object') counts = r.counts as Record<string, number>;
      if (r.ok !== true) reason = `mailprocd: ${String(r.error)}`;
      else if (r.probe !== null && typeof r.probe === 'object') {
        const p = r.probe as ProbeRecordReply;
        const s = (ms: number): number => ms / 1000;
        return {
          result: 'arrived', id, sentMs, queueId: p.queueId, ...(counts !== undefined ? { counts } : {}),
          stages: { total: s(p.doneMs - p.sentMs), mta: s(p.mtaMs), before: s(p.beforeMs), slot: s(p.slotMs), transfer: s(p.transferMs), work: s(p.workMs) },
        };
      } else reason = 'not recorded by mailprocd';
    } catch (err) {
      reason = `cannot reach mailprocd at ${t.controlSocket}: ${(err as Error).message}`;
    }
    const left = deadline - Date.now();
    if (left <= 0) return { result: 'lost', id, sentMs, reason: `not arrived within ${t.thresholdMs / 1000} s (${reason})`, ...(counts !== undefined ? { counts } : {}) };
    await sleep(Math.min(t.pollMs ?? 250, left));
  }
}

/** Sends one probe and waits for it, within the threshold from the send. */
export async function probeOnce(t: ProbeTarget): Promise<ProbeOutcome> {
  const id = newProbeId();
  const sentMs = Date.now();
  const deadline = sentMs + t.thresholdMs;
  const refused = await sendProbe(t, id, sentMs);
  if (refused !== undefined) return { result: 'unsent', id, sentMs, reason: `${t.host}:${t.port} did not take the probe: ${refused}` };
  return awaitProbe(t, id, sentMs, deadline);
}
