// mailmond's probes arriving at a `probe` address (a rule's destination):
// a probe signed with probe.key (src/mail/probe-token.ts) has its arrival
// and where its time went recorded in the state store (`probes`, read back
// by mailmond over the control socket); nothing is written anywhere else and
// the recipient is answered 250. Anything else sent to a probe address — no
// header, a bad signature, a replayed id, or any probe while probe.key is
// not set — is ignored: answered 250 (a refusal would make the MTA bounce to
// whoever forged it), logged, counted, never recorded. A forged probe must
// never pass for mail that arrived.
//
// Stages, all on this host's clock (sentMs is mailmond's, the same clock
// when mailmond runs here): mta = arrival − max(earliest Received date,
// sentMs); before = arrival → dispatch (lookups, the owner's spam check,
// planning); slot = waiting for one of the owner's delivery slots, as a real
// copy would; transfer and work = 0 (no worker is asked: nothing is
// written). mta + before + slot = done − max(Received, sent) ≤ done − sent,
// the total.
//
// Exports: createProbeLedger, ProbeLedger, ProbeCounts. receive() never
// throws for mail trouble; a store that cannot be written defers (4.3.0).
import type { Logger } from '../log.js';
import type { Envelope } from '../mail/envelope.js';
import type { ParsedMessage } from '../mail/message.js';
import type { RecipientOutcome } from '../mail/outcome.js';
import { earliestReceived, parseProbeHeader, PROBE_HEADER, verifyProbe } from '../mail/probe-token.js';
import { ok, status } from '../mail/status.js';
import type { ProbeRecord, StateStore } from '../state/index.js';

/** What became of messages to probe addresses since the daemon started. */
export interface ProbeCounts {
  recorded: number;
  /** No probe header, a malformed one, or a signature that does not hold. */
  forged: number;
  /** An id recorded before: a copy of a real probe sent again. */
  replayed: number;
  /** probe.key is not set: no probe can be verified. */
  unkeyed: number;
}

export interface ProbeLedger {
  /** A message for `recipient`, whose rules made it a probe address; `inSlot` runs work in the owner's delivery slots. */
  receive(env: Envelope, message: ParsedMessage, recipient: string, inSlot: (work: () => Promise<number>) => Promise<number>): Promise<RecipientOutcome>;
  /** A recorded probe, by id. */
  find(id: string): ProbeRecord | undefined;
  counts(): Readonly<ProbeCounts>;
}

export function createProbeLedger(o: { store: Pick<StateStore, 'probes'>; key: () => string | undefined; log: Logger }): ProbeLedger {
  const counts: ProbeCounts = { recorded: 0, forged: 0, replayed: 0, unkeyed: 0 };
  return {
    async receive(env, message, recipient, inSlot) {
      const ignore = (why: string, counter: Exclude<keyof ProbeCounts, 'recorded'>): RecipientOutcome => {
        counts[counter]++;
        o.log.warn(`probe to ${recipient} ignored: ${why}`, { reason: counter, [`probes_${counter}`]: counts[counter] }, env.queueId);
        return { status: ok('Probe ignored'), detail: `probe ignored (${counter}): ${why}`, relay: 'probe' };
      };
      const key = o.key();
      if (key === undefined) return ignore('probe.key is not set in the configuration, so no probe can be verified', 'unkeyed');
      const token = parseProbeHeader(message.headers.get(PROBE_HEADER.toLowerCase()));
      if (typeof token === 'string') return ignore(token, 'forged');
      if (!verifyProbe(key, token)) return ignore(`probe ${token.id}: bad signature (forged, or signed with another probe.key)`, 'forged');
      if (o.store.probes.get(token.id) !== undefined) return ignore(`probe ${token.id} was recorded before (a replay)`, 'replayed');

      const arrivalMs = env.arrival.getTime();
      const dispatchMs = Math.max(arrivalMs, Date.now());
      const doneMs = Math.max(dispatchMs, await inSlot(async () => Date.now()));
      const mtaStart = Math.max(earliestReceived(message.headers.get('received')) ?? token.sentMs, token.sentMs);
      const record: ProbeRecord = {
        sentMs: token.sentMs, arrivalMs, doneMs, mtaMs: Math.max(0, arrivalMs - mtaStart),
        beforeMs: dispatchMs - arrivalMs, slotMs: doneMs - dispatchMs, transferMs: 0, workMs: 0,
        queueId: env.queueId, recipient,
      };
      try {
        await o.store.probes.put(token.id, record);
      } catch (err) {
        return { status: status('4.3.0', `probe ${token.id} could not be recorded: ${(err as Error).message}`), detail: 'probe record failed', relay: 'probe' };
      }
      counts.recorded++;
      return {
        status: ok('Probe recorded'), detail: `probe ${token.id} recorded, total ${((doneMs - token.sentMs) / 1000).toFixed(3)} s`, relay: 'probe',
        timing: { beforeMs: record.beforeMs, slotMs: record.slotMs, transferMs: 0, workMs: 0 },
      };
    },
    find: (id) => o.store.probes.get(id),
    counts: () => ({ ...counts }),
  };
}
