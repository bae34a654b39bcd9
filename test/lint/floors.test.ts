// The floors rule (eslint.config.js, STYLE.md habit 14) that `npm test`'s lint
// step enforces over src/: a lower floor never imports a higher one, siblings
// on a floor do not import each other, and a folder without a floor is named.
// Run here on probe files through ESLint's own Linter, so a rule that stopped
// reporting would fail this test rather than pass the lint silently.
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Linter, type Rule } from 'eslint';
import tseslint from 'typescript-eslint';

const ROOT = resolve(fileURLToPath(new URL('../../../', import.meta.url)));
const { floors } = (await import(join(ROOT, 'eslint.config.js'))) as { floors: Rule.RuleModule };

function lint(file: string, code: string): string[] {
  const linter = new Linter({ configType: 'flat', cwd: ROOT });
  const messages = linter.verify(code, [{
    files: ['**/*.ts'],
    languageOptions: { parser: tseslint.parser as never },
    plugins: { mailprocd: { rules: { floors } } },
    rules: { 'mailprocd/floors': 'error' },
  }], { filename: join(ROOT, file) });
  return messages.map((m) => m.message);
}

const cases: { name: string; file: string; code: string; want: RegExp[] }[] = [
  { name: 'the queue importing smtp is an arrow up', file: 'src/queue/probe.ts', code: "import type { IntakeHandlers } from '../smtp/server.js';\n", want: [/queue \(floor 8\) must not import smtp \(floor 10\)/] },
  { name: 'a leaf importing the workers is an arrow up, also as a re-export', file: 'src/deliver/probe.ts', code: "export type { LeafOptions } from '../workers/ipc.js';\n", want: [/deliver .* must not import workers/] },
  { name: 'smtp importing policy: siblings on a floor do not know each other', file: 'src/smtp/probe.ts', code: "import { policyRequest } from '../policy/index.js';\nvoid policyRequest;\n", want: [/smtp must not import policy: folders on the same floor/] },
  { name: 'a folder without a floor is named', file: 'src/gadgets/probe.ts', code: "import type { Status } from '../mail/status.js';\n", want: [/src\/gadgets has no floor/] },
  { name: 'the recipient layer importing lower floors and its own folder is fine', file: 'src/local/probe.ts', code: "import type { Status } from '../mail/status.js';\nimport type { QueueManager } from '../queue/manager.js';\nimport { foldCopies } from './fold.js';\nvoid foldCopies;\n", want: [] },
  { name: 'main.ts composes every floor below it', file: 'src/main.ts', code: "import { Listener } from './smtp/server.js';\nimport { createIntake } from './local/index.js';\nvoid Listener; void createIntake;\n", want: [] },
  { name: 'a package import is not a floor question', file: 'src/mail/probe.ts', code: "import { z } from 'zod';\nvoid z;\n", want: [] },
];

for (const c of cases) {
  test(`floors: ${c.name}`, () => {
    const got = lint(c.file, c.code);
    assert.equal(got.length, c.want.length, got.join('\n'));
    c.want.forEach((re, i) => assert.match(got[i] ?? '', re));
  });
}
