// The milter endpoint in the real daemon (the compiled CLI): started with the
// listeners of test/helpers/daemon.ts (a unix socket in the test directory
// and 127.0.0.1:0), named in the ready line, answering an MTA on both, and
// off with milter.listen: [].
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { SMFIP } from '../../src/milter/index.js';
import { startDaemon } from '../helpers/daemon.js';
import { MilterClient } from '../helpers/milter-client.js';

test('the daemon serves milters on its unix socket and TCP port; with no filters every event is switched off and mail is accepted', { timeout: 120_000 }, async () => {
  const d = await startDaemon();
  try {
    assert.ok(d.milterPort > 0, 'the ready line names the milter TCP port');
    await d.waitForLog(/milter service listening on unix:\S+milter\.sock, 127\.0\.0\.1:\d+/);
    for (const to of [{ path: d.milterSocket }, { port: d.milterPort }]) {
      const c = await MilterClient.connect(to);
      const neg = await c.negotiate();
      const off = SMFIP.NOCONNECT | SMFIP.NOHELO | SMFIP.NOMAIL | SMFIP.NORCPT | SMFIP.NODATA | SMFIP.NOHDRS | SMFIP.NOEOH | SMFIP.NOBODY | SMFIP.NOUNKNOWN;
      assert.equal(neg.protocol & off, off, JSON.stringify(neg));
      assert.equal(neg.actions, 0);
      assert.deepEqual(await c.decision({ kind: 'eob', chunk: Buffer.alloc(0) }), { kind: 'accept' });
      c.send({ kind: 'quit' });
      await c.closed();
    }
  } finally {
    await d.stop();
    d.cleanup();
  }
});

test('milter.listen: [] starts no milter listener', { timeout: 120_000 }, async () => {
  const d = await startDaemon({ config: { milter: { listen: [] } } });
  try {
    assert.equal(d.milterPort, 0);
    assert.equal(existsSync(d.milterSocket), false);
    assert.ok(!d.logs.some((l) => /milter service listening/.test(l)), d.logs.join('\n'));
  } finally {
    await d.stop();
    d.cleanup();
  }
});
