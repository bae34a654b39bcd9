// docs/postfix.md promises that test/e2e/postfix.test.ts runs exactly its
// main.cf lines against a real Postfix. This holds it to that: every setting
// in the doc's main.cf block is in the main.cf the e2e helper writes, with
// the same value once the doc's paths and domain are the test's, so the doc
// and the tested configuration cannot drift apart.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { mainCf } from '../helpers/postfix.js';

const DOC = readFileSync(join(process.cwd(), 'docs', 'postfix.md'), 'utf8');

/** The `key = value` lines of the first code block after "## main.cf". */
function docMainCf(): Map<string, string> {
  const section = DOC.slice(DOC.indexOf('## main.cf'));
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  const settings = new Map<string, string>();
  for (const line of block.split('\n')) {
    const m = /^([a-z0-9_]+) = (.*)$/.exec(line);
    if (m !== null) settings.set(m[1] as string, m[2] as string);
  }
  return settings;
}

test('every main.cf line of docs/postfix.md is in the e2e tests\' main.cf, paths and domain aside', () => {
  const doc = docMainCf();
  assert.ok(doc.size >= 5, `found ${doc.size} settings in docs/postfix.md's main.cf block`);
  const t = '/t';
  const written = mainCf({
    dir: t, configDir: `${t}/etc`, queueDir: `${t}/q`, dataDir: `${t}/d`, maillog: `${t}/log`, daemonDir: '/usr/lib/postfix/sbin',
    shlibDir: '/usr/lib/postfix', metaDir: '/etc/postfix', commandDir: '/usr/sbin',
    lmtpSocket: `${t}/lmtp.sock`, policySocket: `${t}/policy.sock`, domains: ['example.org'], extra: '',
  });
  const tested = new Map([...written.matchAll(/^([a-z0-9_]+) = ?(.*)$/gm)].map((m) => [m[1] as string, m[2] as string]));
  for (const [key, value] of doc) {
    const asTested = value
      .replace('/run/mailprocd/lmtp', `${t}/lmtp.sock`)
      .replace('/run/mailprocd/policy', `${t}/policy.sock`)
      .replace('hash:/etc/postfix/', `hash:${t}/etc/`);
    assert.equal(tested.get(key), asTested, `${key}: docs/postfix.md says "${value}"`);
  }
});
