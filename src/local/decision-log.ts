// The decision log: for each message delivered (or refused by a rule), which
// rule placed each copy and where — what `mailproc rules log ADDRESS` shows
// the owner. Written only by logDelivery (delivery-log.ts), from the same
// outcome record as the delivery log line (STYLE.md habit 13), and only for
// final outcomes (a temporary failure is retried and recorded then).
// Kept in the state store (rules-log) under the recipient's address without
// extension; bounded per address by rules.log_entries and rules.log_max_age:
// an address is trimmed on its first record after start and every
// TRIM_EVERY records after, and prune() (the daemon's hourly maintenance)
// drops what is older than the age everywhere.
//
// Exports: createDecisionLog, DecisionLog, decisionKey. Writes are
// asynchronous and never throw to the caller (a failure is logged: losing a
// log record never touches the mail).
import type { RulesConfig } from '../config/index.js';
import type { Logger } from '../log.js';
import type { Decision } from '../mail/outcome.js';
import { fitsKey, type DecisionRecord, type StateStore } from '../state/index.js';

export interface DecisionLog {
  /** Resolves once written (or the failure logged); never rejects, and no caller needs to wait. */
  record(queueId: string, recipient: string, code: string, decision: Decision, at?: Date): Promise<void>;
  /** The newest `last` records for the address (without extension), oldest first. */
  read(address: string, last: number): DecisionRecord[];
  /** Drops records older than rules.log_max_age. */
  prune(now?: number): Promise<number>;
}

const TRIM_EVERY = 64;
const timeKey = (ms: number): string => String(Math.max(0, Math.floor(ms))).padStart(15, '0');

/**
 * An array key (lmdb-js orders arrays element by element): a string key
 * with NULs in it comes back from LMDB as an array once it is 64 characters
 * or longer, so a "\0"-joined prefix range would miss it.
 */
export const decisionKey = (address: string, ms: number, queueId: string, recipient: string): DecisionKey => [address, timeKey(ms), queueId, recipient];
type DecisionKey = [address: string, time: string, queueId: string, recipient: string];
/** Past every time key of the address: digits sort before it. */
const AFTER = '\uffff';
const range = (address: string): { start: DecisionKey | [string]; end: [string, string] } => ({ start: [address], end: [address, AFTER] });
const fits = (k: DecisionKey): boolean => fitsKey(k.join('\0'));

export function createDecisionLog(state: StateStore, config: () => RulesConfig, log: Logger): DecisionLog {
  const db = state.rulesLog;
  const writes = new Map<string, number>();

  const trim = async (address: string): Promise<void> => {
    const { log_entries: keep, log_max_age: age } = config();
    const oldest = timeKey(Date.now() - age);
    const keys = [...db.getKeys(range(address))];
    const drop = keys.filter((k, i) => i < keys.length - keep || k[1] < oldest);
    if (drop.length === 0) return;
    await db.transaction(() => {
      for (const k of drop) void db.remove(k);
    });
  };

  return {
    record(queueId, recipient, code, decision, at = new Date()) {
      const address = decision.address;
      const key = decisionKey(address, at.getTime(), queueId, recipient.toLowerCase());
      if (config().log_entries === 0 || !fits(key) || state.isClosed()) return Promise.resolve();
      const value: DecisionRecord = {
        time: at.toISOString(), queueId, recipient, sender: decision.sender, subject: decision.subject.slice(0, 500), status: code, copies: decision.copies,
      };
      const n = writes.get(address) ?? 0;
      if (writes.size > 100_000) writes.clear();
      writes.set(address, n + 1);
      return db.put(key, value)
        .then(() => (n % TRIM_EVERY === 0 && !state.isClosed() ? trim(address) : undefined))
        .catch((err: unknown) => log.error(`rules log for ${address}: ${(err as Error).message}`, {}, queueId));
    },
    read(address, last) {
      if (!fitsKey(address)) return [];
      const out: DecisionRecord[] = [];
      // Reversed, a range runs from its upper bound down (lmdb-js).
      const { start, end } = range(address);
      for (const { value } of db.getRange({ start: end, end: start, reverse: true, limit: last })) out.push(value);
      return out.reverse();
    },
    async prune(now = Date.now()) {
      const oldest = timeKey(now - config().log_max_age);
      const drop: DecisionKey[] = [];
      for (const k of db.getKeys()) if (k[1] < oldest) drop.push(k);
      if (drop.length > 0) {
        await db.transaction(() => {
          for (const k of drop) void db.remove(k);
        });
      }
      return drop.length;
    },
  };
}
