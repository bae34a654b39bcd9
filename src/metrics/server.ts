// The metrics endpoint: HTTP on the metrics.listen addresses, `GET /metrics`
// (or HEAD) answers the registry in Prometheus text format, every other path
// 404, another method on /metrics 405. Loopback only by default; any other
// address is served as written and logged with a warning at start (the
// scrape names owners and counts mail). One line per address at start,
// "metrics on http://HOST:PORT/metrics", with the bound port (port 0: the
// kernel's choice).
//
// Exports: startMetricsServer, MetricsServer.
// Failure contract: an address that cannot be bound is logged as an error and
// skipped — mail is delivered without metrics rather than not at all; a
// scrape that fails is answered 500 and logged. close() never rejects.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isLoopbackListen } from '../config/index.js';
import type { Logger } from '../log.js';
import type { Metrics } from './registry.js';

export interface MetricsServer {
  /** The addresses served, with their bound ports. */
  readonly listening: readonly { readonly host: string; readonly port: number }[];
  close(): Promise<void>;
}

function hostPort(spec: string): { host: string; port: number } {
  const cut = spec.lastIndexOf(':');
  return { host: spec.slice(0, cut).replace(/^\[(.*)\]$/, '$1'), port: Number(spec.slice(cut + 1)) };
}

export async function startMetricsServer(listen: readonly string[], metrics: Metrics, log: Logger): Promise<MetricsServer> {
  const servers: Server[] = [];
  const listening: { host: string; port: number }[] = [];
  for (const spec of listen) {
    const { host, port } = hostPort(spec);
    if (!isLoopbackListen(spec)) log.warn(`metrics.listen ${spec} is not a loopback address: anyone who can reach it reads the queue's owners and mail counts`);
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?', 1)[0];
      if (path !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found: the metrics are at /metrics\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
        return;
      }
      metrics.registry.metrics().then((text) => {
        res.writeHead(200, { 'Content-Type': metrics.registry.contentType }).end(req.method === 'HEAD' ? undefined : text);
      }, (err: unknown) => {
        log.error(`metrics scrape failed: ${(err as Error).stack ?? String(err)}`);
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end('scrape failed; see the log\n');
      });
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port }, () => { server.off('error', reject); resolve(); });
      });
    } catch (err) {
      log.error(`metrics: cannot listen on ${spec}: ${(err as Error).message}; no metrics served there (metrics.listen)`);
      continue;
    }
    server.on('error', (err) => log.warn(`metrics ${spec}: ${err.message}`));
    const bound = (server.address() as AddressInfo).port;
    servers.push(server);
    listening.push({ host, port: bound });
    log.info(`metrics on http://${host.includes(':') ? `[${host}]` : host}:${bound}/metrics`);
  }
  return {
    listening,
    async close() {
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      })));
    },
  };
}
