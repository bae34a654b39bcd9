// The Prometheus metrics of the daemon (docs/metrics.md lists every series):
// createMetrics makes the registry and the event sink the rest of the daemon
// calls through src/mail/metrics-events.ts; startMetricsServer serves it.
export { createMetrics, TOP_OWNERS, type Metrics, type MetricsSources } from './registry.js';
export { startMetricsServer, type MetricsServer } from './server.js';
export { histogramQuantile, summarisePercentiles, type DelaySummary, type Percentiles } from './quantile.js';
