// The smtp-server version guard (src/smtp/library-patches.ts): the patches
// reach the library's private members, so the daemon starts only on the
// exact version they were written for, and says so clearly otherwise. The
// "other version" is made with a module resolve hook that points
// smtp-server/package.json at a copy with another version number, so the
// real library stays as it is.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { checkSmtpServerVersion, installedSmtpServerVersion, SMTP_SERVER_VERSION } from '../../src/smtp/library-patches.js';
import { DAEMON, makeTestDir } from '../helpers/daemon.js';

test('the guard accepts exactly the version the patches were written for', () => {
  assert.equal(checkSmtpServerVersion(SMTP_SERVER_VERSION), undefined);
  for (const other of ['3.21.7', '3.21.5', '3.22.0', '4.0.0', undefined]) {
    const why = checkSmtpServerVersion(other);
    assert.ok(why !== undefined, `${other} refused`);
    assert.ok(why.includes(`smtp-server ${other ?? '(version unknown)'} is installed`) && why.includes(`exactly ${SMTP_SERVER_VERSION}`), why);
  }
});

test('package.json pins smtp-server to that exact version, and it is the one installed', () => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> };
  assert.equal(pkg.dependencies['smtp-server'], SMTP_SERVER_VERSION);
  assert.equal(installedSmtpServerVersion(), SMTP_SERVER_VERSION);
});

test('mailprocd refuses to start on another smtp-server version: exit 1, a message naming both versions, no socket bound', { timeout: 60_000 }, async () => {
  const dir = makeTestDir();
  try {
    const fake = join(dir, 'smtp-server-package.json');
    writeFileSync(fake, JSON.stringify({ name: 'smtp-server', version: '3.22.0' }));
    const hooks = `export async function resolve(specifier, context, next) {
      if (specifier === 'smtp-server/package.json') return { url: ${JSON.stringify(pathToFileURL(fake).href)}, shortCircuit: true };
      return next(specifier, context);
    }`;
    const register = join(dir, 'register.mjs');
    writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});\n`);
    mkdirSync(join(dir, 'db'));
    for (const table of ['rules', 'uid', 'gid', 'lists']) writeFileSync(join(dir, 'db', table), '');
    const socket = join(dir, 'lmtp.sock');
    const config = join(dir, 'mailprocd.yaml');
    writeFileSync(config, stringify({
      paths: { state: join(dir, 'state'), sources: join(dir, 'db'), mail: join(dir, 'mail') },
      lmtp: { listen: [`unix:${socket}`, '127.0.0.1:0'] },
      smtp: { listen: ['127.0.0.1:0'] },
      policy: { listen: [] },
      milter: { listen: [] },
    }));
    const child = spawn(process.execPath, ['--import', pathToFileURL(register).href, DAEMON, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 1, out);
    assert.match(out, /cannot start: smtp-server 3\.22\.0 is installed, but mailprocd's patches to it \(src\/smtp\/library-patches\.ts\) were written for exactly 3\.21\.6/);
    assert.doesNotMatch(out, / ready /);
    assert.equal(existsSync(socket), false, 'no LMTP socket was made');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
