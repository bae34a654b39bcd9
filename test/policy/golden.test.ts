// Golden protocol pairs: test/policy/golden/NAME.in holds the raw bytes a
// client sends on one connection (then half-closes), NAME.out exactly the
// bytes the real server must send back before it closes. Run over TCP and
// over the unix socket. To add a case, add both files; an empty .out means
// "closed without a reply".
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PolicyClient, startTestService, TEST_LISTS, type TestService } from './policy-peer.js';

const GOLDEN = fileURLToPath(new URL('../../../test/policy/golden/', import.meta.url));
const cases = readdirSync(GOLDEN).filter((f) => f.endsWith('.in')).map((f) => f.slice(0, -3)).sort();

async function exchange(target: { port: number } | { path: string }, input: Buffer): Promise<Buffer> {
  const c = await PolicyClient.open(target);
  c.write(input);
  c.end();
  return c.closed();
}

describe('golden request/response pairs', () => {
  let svc: TestService;
  before(async () => {
    svc = await startTestService(undefined, {
      lists: `${TEST_LISTS}\nintl@example.test closed subscribers=åsa@example.test\n`,
      config: { limits: { request_size: '1k' } },
    });
  });
  after(() => svc.close());

  test('there are golden cases, each with its .out', () => {
    assert.ok(cases.length >= 20, `only ${cases.length} cases in ${GOLDEN}`);
    for (const name of cases) assert.doesNotThrow(() => readFileSync(join(GOLDEN, `${name}.out`)), `${name}.out missing`);
  });

  for (const name of cases) {
    test(`${name}: the server answers exactly the golden bytes`, async () => {
      const input = readFileSync(join(GOLDEN, `${name}.in`));
      const want = readFileSync(join(GOLDEN, `${name}.out`)).toString('utf8');
      assert.equal((await exchange({ port: svc.port }, input)).toString('utf8'), want, 'over TCP');
      assert.equal((await exchange({ path: svc.socketPath }, input)).toString('utf8'), want, 'over the unix socket');
    });
  }
});
