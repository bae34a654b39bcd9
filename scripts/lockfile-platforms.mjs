#!/usr/bin/env node
// Adds lock entries for the platform builds of msgpackr-extract (an optional
// dependency of msgpackr, used by lmdb) that the package registry reachable
// here does not serve. Without them `npm install` writes a lock that lists the
// packages as optional dependencies but has no entries for them, and `npm ci`
// then refuses the lock ("Missing: … from lock file"). The entries are never
// fetched on linux-x64: npm skips optional packages for other platforms.
// Run after any `npm install` that rewrites package-lock.json. Idempotent.
import { readFileSync, writeFileSync } from 'node:fs';

const LOCK = 'package-lock.json';
const lock = JSON.parse(readFileSync(LOCK, 'utf8'));
const extract = lock.packages['node_modules/msgpackr-extract'];
if (!extract) {
  console.log('lockfile-platforms: msgpackr-extract not in the lock; nothing to do');
  process.exit(0);
}
let added = 0;
for (const [name, version] of Object.entries(extract.optionalDependencies ?? {})) {
  const key = `node_modules/${name}`;
  if (lock.packages[key]) continue;
  const m = /-(darwin|linux|win32|freebsd)-(arm64|x64|arm|ia32)$/.exec(name);
  if (!m) continue;
  lock.packages[key] = { version, cpu: [m[2]], license: 'MIT', optional: true, os: [m[1]] };
  added++;
}
const sorted = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0)));
lock.packages = sorted;
writeFileSync(LOCK, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lockfile-platforms: added ${added} entries`);
