// Will anything take the mail we send on? `mailprocd --check-config` and the
// daemon's start ask once: a relay.smtp nobody answers at, or a sendmail
// program that is not there, means bounces, forwards and vacation replies
// wait in the queue until queue.lifetime — worth a warning, not a refusal
// (the MTA may simply start after us).
//
// Exports: probeRelay. Never rejects.
import { access, constants } from 'node:fs/promises';
import { connect } from 'node:net';
import type { RelayConfig } from '../config/relay.js';
import { parseRelayTarget } from './smtp-relay.js';

const PROBE_MS = 3_000;

/** A warning naming relay.smtp (or relay.sendmail) when nothing will take mail there; undefined when something answers. */
export async function probeRelay(r: RelayConfig): Promise<string | undefined> {
  const consequence = 'bounces, forwards and vacation replies will wait in the queue';
  if (r.smtp === 'sendmail') {
    try {
      await access(r.sendmail, constants.X_OK);
      return undefined;
    } catch (err) {
      return `relay.sendmail ${r.sendmail} cannot be run (${(err as NodeJS.ErrnoException).code ?? String(err)}): ${consequence}`;
    }
  }
  const target = parseRelayTarget(r.smtp);
  if (target.path !== undefined) return undefined;
  const problem = await new Promise<string | undefined>((resolve) => {
    const s = connect({ host: target.host, port: target.port });
    const done = (why: string | undefined): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no answer within ${PROBE_MS / 1000} s`), PROBE_MS);
    s.once('connect', () => done(undefined));
    s.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
  });
  return problem === undefined ? undefined : `relay.smtp ${r.smtp}: nothing takes mail there (${problem}): ${consequence}`;
}
