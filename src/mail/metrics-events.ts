// The events the daemon counts for its Prometheus endpoint, as one small
// interface the places where they happen call through an optional `metrics`
// dependency: absent (tests, `mailproc`), nothing is counted and nothing else
// changes. Implemented by src/metrics (the registry); the gauges — queue
// depth, workers, memory — are read there on scrape instead, so nothing here
// runs for them on the delivery path.
//
// Exports: MetricsEvents, RecipientEvent. Implementations never throw.
import type { DeliveryTiming } from './outcome.js';

/** One recipient's delivery attempt, from the record its log line is made from (src/local/delivery-log.ts). */
export interface RecipientEvent {
  /** The final status code, "2.0.0" / "4.2.2" / "5.4.7". */
  readonly code: string;
  /** The outcome's destination kinds ("maildir", "maildir+pipe", "forward", "list", "none"). */
  readonly relay: string;
  readonly timing?: DeliveryTiming | undefined;
  /** Arrival to now, ms: the log line's delay=. */
  readonly delayMs: number;
}

export interface MetricsEvents {
  /** A message taken in after DATA (the intake line); protocol as the envelope says, "LMTP" or "ESMTP". */
  messageAccepted(protocol: string): void;
  /** A delivery log line was written. */
  recipientLogged(e: RecipientEvent): void;
  /** A policy request answered: the plugin that decided (undefined: nobody objected), the action, seconds spent. */
  policyDecided(plugin: string | undefined, action: string, seconds: number): void;
  /** The daemon compiled its table sources (at start or SIGHUP); ok = false: a source had errors. */
  tablesCompiled(ok: boolean): void;
  /** A connection turned away by a limit: listener "lmtp" / "smtp" / "policy", limit its config key. */
  connectionRefused(listener: string, limit: string): void;
  /** The shared policy state engine ("postgresql", "redis") became unreachable: one per outage (src/state/engine-guard.ts). */
  stateEngineDown?(engine: string): void;
  /** A call to it was refused during an outage (its plugin answered its failure action). */
  stateEngineRefused?(engine: string): void;
}
