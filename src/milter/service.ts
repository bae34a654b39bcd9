// startMilterService: the `milter:` section (src/config/milter.ts) → the
// listeners of server.ts with the filters handed in, in order (built-ins
// first, then users' filters — composed by src/main.ts). Logs one line with
// where it listens.
//
// Exports: startMilterService, MilterService, MilterServiceOptions.
//
// Fails (rejects) when an address cannot be listened on, naming it, or when
// milter.socket's owner/group does not exist, naming the key; nothing is left
// listening then. close() never rejects.
import type { MilterConfig } from '../config/index.js';
import { parseListen } from '../config/index.js';
import type { Logger } from '../log.js';
import type { MetricsEvents } from '../mail/metrics-events.js';
import type { MilterFilterFactory } from './api.js';
import { MilterServer, type BoundListener } from './server.js';
import type { NamedFilter } from './session.js';

export interface MilterServiceOptions {
  readonly config: MilterConfig;
  readonly log: Logger;
  /** Relative unix socket paths are resolved against it (the daemon's working directory). */
  readonly baseDir: string;
  /**
   * Asked in this order on every connection. A bare factory is named after
   * its function name in log lines ("filter 2" when it has none).
   */
  readonly filters: readonly (MilterFilterFactory | NamedFilter)[];
  readonly metrics?: MetricsEvents | undefined;
}

export interface MilterService {
  readonly listening: readonly BoundListener[];
  /** Stops listening, ends the connections (filters get abort/close). */
  close(): Promise<void>;
}

function named(f: MilterFilterFactory | NamedFilter, index: number): NamedFilter {
  if (typeof f !== 'function') return f;
  return { name: f.name !== '' ? f.name : `filter ${index + 1}`, create: f };
}

export async function startMilterService(o: MilterServiceOptions): Promise<MilterService> {
  const c = o.config;
  const filters = o.filters.map(named);
  const server = new MilterServer({
    listen: c.listen.map((spec) => parseListen(spec, o.baseDir)),
    socket: c.socket,
    limits: { connections: c.limits.connections, packetSize: c.limits.packet_size, idleTimeoutMs: c.limits.idle_timeout },
    filters,
    filterTimeoutMs: c.filter_timeout,
    onFilterError: c.on_filter_error,
    log: o.log,
    metrics: o.metrics,
  });
  await server.start();
  o.log.info(`milter service listening on ${server.listening.map((l) => (l.kind === 'unix' ? `unix:${l.path}` : l.spec.replace(/:\d+$/, `:${l.port}`))).join(', ') || '(nothing)'}`, {
    filters: filters.map((f) => f.name).join(',') || '(none)',
  });
  let closed: Promise<void> | undefined;
  return {
    listening: server.listening,
    close: () => {
      closed ??= server.close().catch((err: unknown) => o.log.error(`milter service close: ${(err as Error).message}`));
      return closed;
    },
  };
}
