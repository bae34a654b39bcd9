// The deadline and the outage state of a shared state engine (PostgreSQL,
// Redis): every round trip goes through run(), which gives it `timeout` ms.
// The first failure that says the engine is gone (a refused or broken
// connection, a deadline missed) opens an outage: it is logged once (warn),
// counted (metrics stateEngineDown), and from then on every call rejects at
// once, without I/O, so a policy request is answered with its plugin's
// failure action in microseconds instead of waiting out a deadline per
// request. A timer tries the engine (probe: a connect and a trivial query)
// every `retry_interval`; the first success ends the outage, logged once
// (info) with how long it lasted and how many calls were refused meanwhile.
// An error that is not an outage (a query the engine refused: a schema too
// old, a bug) rejects as it is and changes nothing.
//
// Exports: EngineGuard, EngineGuardOptions. Never throws; run() rejects with
// StateUnavailableError during an outage or past the deadline, else with the
// engine's own error.
import type { Logger } from '../log.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import { StateUnavailableError, type StateOutage } from './policy-state.js';

export interface EngineGuardOptions {
  /** How the engine is named in logs and metrics: its URL without password. */
  readonly label: string;
  readonly kind: 'postgresql' | 'redis';
  readonly timeoutMs: number;
  readonly retryMs: number;
  readonly log: Logger;
  readonly metrics?: MetricsEvents | undefined;
  /** One trivial round trip (SELECT 1, PING); rejects while the engine is unreachable. */
  probe(): Promise<unknown>;
  /** Does this error mean the engine is unreachable (not that it refused one query)? */
  isOutage(err: unknown): boolean;
}

export class EngineGuard {
  private down: { since: number; refused: number; reason: string } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly o: EngineGuardOptions) {}

  get available(): boolean {
    return this.down === undefined;
  }

  /** The outage in progress, for `mailproc status`; undefined while the engine answers. */
  outage(): StateOutage | undefined {
    return this.down === undefined ? undefined : { ...this.down };
  }

  /** op() within the deadline; during an outage, a rejection at once. */
  run<T>(op: () => Promise<T>): Promise<T> {
    if (this.down !== undefined) {
      this.down.refused++;
      this.o.metrics?.stateEngineRefused?.(this.o.kind);
      return Promise.reject(new StateUnavailableError(`state engine ${this.o.label} unreachable since ${new Date(this.down.since).toISOString()} (${this.down.reason})`));
    }
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        const why = `no answer within ${this.o.timeoutMs} ms`;
        this.fail(why);
        reject(new StateUnavailableError(`state engine ${this.o.label}: ${why}`));
      }, this.o.timeoutMs);
      op().then(
        (v) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (!this.o.isOutage(err)) return reject(err instanceof Error ? err : new Error(String(err)));
          const why = err instanceof Error ? err.message : String(err);
          this.fail(why);
          reject(new StateUnavailableError(`state engine ${this.o.label}: ${why}`));
        },
      );
    });
  }

  /** Opens an outage (once) and starts trying the engine again. */
  private fail(reason: string): void {
    if (this.down !== undefined || this.closed) return;
    this.down = { since: Date.now(), refused: 0, reason };
    this.o.metrics?.stateEngineDown?.(this.o.kind);
    this.o.log.warn(`state engine ${this.o.label} unreachable (${reason}): greylist, ratelimit and userpolicy answer their on_error actions until it is back; trying again every ${this.o.retryMs} ms`);
    this.schedule();
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => void this.retry(), this.o.retryMs);
    // A daemon that is shutting down is not kept alive by a reconnect attempt.
    this.timer.unref();
  }

  private async retry(): Promise<void> {
    const down = this.down;
    if (down === undefined || this.closed) return;
    const ok = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), this.o.timeoutMs * 4);
      this.o.probe().then(() => {
        clearTimeout(timer);
        resolve(true);
      }, () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (this.closed) return;
    if (!ok) return this.schedule();
    this.down = undefined;
    const secs = ((Date.now() - down.since) / 1000).toFixed(1);
    this.o.log.info(`state engine ${this.o.label} reachable again after ${secs} s; ${down.refused} calls were answered with failure actions meanwhile`);
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
  }
}
