// The `metrics` section: where the Prometheus endpoint (src/metrics) listens.
// Embedded by schema.ts as `metrics: metricsConfigSchema`; its default IS the
// embedded default. Loopback only unless the administrator writes another
// address (the daemon then logs a warning at start: the scrape shows queue
// owners and delivery counts to whoever can reach it); `listen: []` turns the
// endpoint off. TCP only: Prometheus scrapes over HTTP on a host:port.
//
// Exports: metricsConfigSchema, MetricsConfig, DEFAULT_METRICS_LISTEN, isLoopbackListen.
import { isIP } from 'node:net';
import { z } from 'zod';
import { listenAddress } from './listen.js';

export const DEFAULT_METRICS_LISTEN = '127.0.0.1:9742';

export const metricsConfigSchema = z.object({
  /** "HOST:PORT" or "[IPv6]:PORT"; port 0 lets the kernel choose (tests). */
  listen: z.array(listenAddress.refine((s) => !s.startsWith('unix:'), 'the metrics endpoint listens on TCP only ("HOST:PORT")')).default([DEFAULT_METRICS_LISTEN]),
}).strict().default({ listen: [DEFAULT_METRICS_LISTEN] });

export type MetricsConfig = z.output<typeof metricsConfigSchema>;

/** Whether a "HOST:PORT" listen address is on the loopback interface (127.0.0.0/8, ::1, localhost). */
export function isLoopbackListen(spec: string): boolean {
  const host = spec.slice(0, spec.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || /^::ffff:127\./.test(host);
  return false;
}
