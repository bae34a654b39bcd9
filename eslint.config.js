// Lint: the recommended JavaScript and type-aware TypeScript rules. Floating
// promises are errors: an un-awaited delivery is a message nobody answers for.
// And the floors (STYLE.md habit 14): a file under src/ imports only from its
// own folder, from lower floors, never from a higher floor or a sibling on the
// same floor — the queue does not import smtp; both import mail/.
import { dirname, relative, resolve, sep } from 'node:path';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * src/'s top-level folders (and files) from the bottom floor up. Types flow
 * down: a floor may use every floor below it. A new folder must be placed here.
 */
const FLOORS = [
  ['mail', 'os', 'log.ts'], // the message, the envelope, statuses, patterns; the host's users; the log
  ['config'], // every schema
  ['net', 'state'], // listening sockets; the one writable store
  ['classify'], // the rule model and the pure planner
  ['db'], // compiled admin tables
  ['deliver'], // the leaves a worker runs
  ['relay'], // SMTP/LMTP outward
  ['workers'], // spawner, pool, scheduler, IPC
  ['queue'], // spool and queue manager
  ['local'], // the recipient layer
  ['smtp', 'policy', 'milter', 'metrics'], // the listeners
  ['control'], // admin and per-user control sockets
  ['main.ts'], // composition
  ['cli'], // commands
];

const SRC = resolve(import.meta.dirname, 'src');
const floorOf = (top) => FLOORS.findIndex((f) => f.includes(top));
const topOf = (file) => relative(SRC, file).split(sep)[0].replace(/\.js$/, '.ts');

export const floors = {
  meta: { type: 'problem', schema: [], messages: {
    up: '{{from}} (floor {{a}}) must not import {{to}} (floor {{b}}): a lower floor never imports a higher one (eslint.config.js FLOORS)',
    sibling: '{{from}} must not import {{to}}: folders on the same floor do not know each other (eslint.config.js FLOORS)',
    unknown: 'src/{{top}} has no floor: add it to FLOORS in eslint.config.js',
  } },
  create(context) {
    const file = context.filename;
    if (!file.startsWith(SRC + sep)) return {};
    const from = topOf(file);
    const check = (node) => {
      const spec = node.source?.value;
      if (typeof spec !== 'string' || !spec.startsWith('.')) return;
      const target = resolve(dirname(file), spec);
      if (!target.startsWith(SRC + sep)) return;
      const to = topOf(target);
      if (to === from) return;
      const a = floorOf(from);
      const b = floorOf(to);
      if (a < 0) return context.report({ node, messageId: 'unknown', data: { top: from } });
      if (b < 0) return context.report({ node, messageId: 'unknown', data: { top: to } });
      if (b > a) context.report({ node, messageId: 'up', data: { from, to, a, b } });
      else if (b === a) context.report({ node, messageId: 'sibling', data: { from, to } });
    };
    return { ImportDeclaration: check, ExportNamedDeclaration: check, ExportAllDeclaration: check, ImportExpression: check };
  },
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'var/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.ts', 'test/**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { mailprocd: { rules: { floors } } },
    rules: {
      // node:test's test()/describe() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }],
      }],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'mailprocd/floors': 'error',
    },
  },
  {
    files: ['scripts/**/*.mjs', 'eslint.config.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', URL: 'readonly', Buffer: 'readonly' } },
  },
);
