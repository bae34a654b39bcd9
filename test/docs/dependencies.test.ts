// The dependency choices issue 8 asked for, checked on the installed tree (a
// fresh `npm ci`): one copy of nodemailer, at a version with GHSA-vvjj-xcjg-gr5g
// fixed (8.0.5+) and no newer major than Node 20 supports; smtp-server pinned to
// exactly the version src/smtp/library-patches.ts was written for; the native
// builds allowed by allowScripts so a stricter npm does not skip them silently.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SMTP_SERVER_VERSION } from '../../src/smtp/library-patches.js';

const ROOT = process.cwd();
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; allowScripts?: Record<string, boolean> };

/** Every installed copy of a package: node_modules/NAME and NAME nested under other packages. */
function copies(name: string, dir = join(ROOT, 'node_modules'), out: string[] = [], scope = ''): string[] {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (e.startsWith('@') && scope === '') {
      copies(name, p, out, `${e}/`);
      continue;
    }
    if (`${scope}${e}` === name) out.push(p);
    const nested = join(p, 'node_modules');
    if (statSync(p, { throwIfNoEntry: false })?.isDirectory() && statSync(nested, { throwIfNoEntry: false })?.isDirectory()) copies(name, nested, out);
  }
  return out;
}

const version = (dir: string): string => (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
const atLeast = (v: string, min: number[]): boolean => {
  const parts = v.split('.').map(Number);
  for (let i = 0; i < min.length; i++) if ((parts[i] ?? 0) !== min[i]) return (parts[i] ?? 0) > (min[i] ?? 0);
  return true;
};

test('one nodemailer in the tree, at a version with GHSA-vvjj-xcjg-gr5g fixed', () => {
  const found = copies('nodemailer');
  assert.equal(found.length, 1, `copies: ${found.join(', ')}`);
  assert.ok(atLeast(version(found[0] as string), [8, 0, 5]), version(found[0] as string));
});

test('smtp-server is pinned to exactly the version the patches were written for, and that is what is installed', () => {
  assert.equal(pkg.dependencies['smtp-server'], SMTP_SERVER_VERSION);
  assert.equal(version(join(ROOT, 'node_modules', 'smtp-server')), SMTP_SERVER_VERSION);
});

test('the native builds are allowed explicitly (allowScripts), not left to npm\'s default', () => {
  for (const name of ['lmdb', 'msgpackr-extract', 'os-lock']) assert.equal(pkg.allowScripts?.[name], true, name);
});
