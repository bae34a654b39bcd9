// The Debian package as an administrator meets it: `npm run package` builds
// it, `dpkg -i` installs it, `mailprocd --check-config` accepts the installed
// config, the installed daemon delivers a message, `dpkg --purge` removes
// it, and `systemd-analyze verify` accepts the installed units.
//
// The install must be invisible to the tests running beside this one (two
// files at a time): an installed /etc/mailprocd/mailprocd.yaml would be found
// by their config discovery, and the daemon's default ports would meet
// theirs. So everything after the build runs in test/package/installed-run.ts
// inside private mount, network and pid namespaces (unshare), where /etc,
// /usr and /var are overlays on a tmpfs: dpkg's files and its database never
// reach the real ones, and when the namespace's first process ends, however
// it ends, its processes die and its mounts go. Here we check that the
// machine is as it was: the package unknown to the real dpkg, no
// /etc/mailprocd, no /usr/lib/mailprocd.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { requireProgram, requireRoot } from '../helpers/components.js';

const INSIDE = join(process.cwd(), 'dist/test/package/installed-run.js');

function hostState(): string {
  const q = spawnSync('dpkg-query', ['-W', '-f=${Status}', 'mailprocd'], { encoding: 'utf8' });
  return JSON.stringify({
    dpkg: q.status === 0 ? q.stdout : 'not known',
    etc: existsSync('/etc/mailprocd'),
    lib: existsSync('/usr/lib/mailprocd'),
    bin: existsSync('/usr/bin/mailprocd'),
    unit: existsSync('/lib/systemd/system/mailprocd.service'),
  });
}

/** Overlays on a tmpfs need the kernel's overlay file system; skipped (failed under CI) without it. */
function haveOverlay(t: TestContext): boolean {
  if (readFileSync('/proc/filesystems', 'utf8').split('\n').some((l) => /\toverlay$/.test(l))) return true;
  const why = 'the kernel has no overlay file system (modprobe overlay)';
  if (process.env.CI === 'true') throw new Error(why);
  t.skip(why);
  return false;
}

test('the Debian package installs, checks its config, delivers a message and purges, unseen by the rest of the machine', async (t) => {
  if (!requireRoot(t, 'dpkg -i, mount namespaces')) return;
  for (const [program, pkg] of [['dpkg-deb', 'dpkg'], ['go-md2man', 'go-md2man'], ['unshare', 'util-linux'], ['systemd-analyze', 'systemd'], ['npm', 'npm']] as const) {
    if (requireProgram(t, program, pkg) === undefined) return;
  }
  if (!haveOverlay(t)) return;
  // Depends: nodejs (>= 20): dpkg -i refuses the package unless Node came as a Debian package (README, "Install").
  const node = spawnSync('dpkg-query', ['-W', '-f=${Version}', 'nodejs'], { encoding: 'utf8' });
  if (node.status !== 0 || spawnSync('dpkg', ['--compare-versions', node.stdout, 'ge', '20'], { encoding: 'utf8' }).status !== 0) {
    const why = `the Debian package "nodejs" (>= 20) is not installed (${node.status === 0 ? node.stdout : 'none'}): README "Install" says where to get it`;
    if (process.env.CI === 'true') throw new Error(why);
    t.skip(why);
    return;
  }
  const before = hostState();
  const work = mkdtempSync(join(tmpdir(), 'mailprocd-deb-test-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));

  // The dist/ other tests run from is packaged as it is (no rebuild under them).
  const built = spawnSync(process.execPath, ['scripts/package-deb.mjs', '--no-build', '--out', join(work, 'out')], { encoding: 'utf8' });
  assert.equal(built.status, 0, `npm run package failed:\n${built.stderr}`);
  const deb = built.stdout.trim();
  assert.match(deb, /mailprocd_\d+\.\d+\.\d+_[a-z0-9]+\.deb$/);
  const info = spawnSync('dpkg-deb', ['--field', deb, 'Depends', 'Package'], { encoding: 'utf8' });
  assert.match(info.stdout, /^Depends: nodejs \(>= 20\)$/m);

  const child = spawn('unshare', ['--mount', '--net', '--pid', '--fork', '--kill-child', '--mount-proc', '--propagation', 'private', '--',
    process.execPath, INSIDE, work, deb], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString('utf8'); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString('utf8'); });
  // A hang detector, not a window: SIGKILL to unshare kills the namespace's first process (--kill-child), and with it every process inside.
  const hang = setTimeout(() => child.kill('SIGKILL'), 600_000);
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(hang);
  const lines = stdout.trim().split('\n');
  const report = JSON.parse(lines[lines.length - 1] ?? '{}') as Record<string, unknown>;
  assert.equal(code, 0, `inside the namespace:\n${stderr}\n${stdout}`);
  assert.equal(report.ok, true);
  assert.match(String(report.lmtpReply), /^250 2\.\d\.\d /);
  assert.match(String(report.deliveryLog), /status=sent/);
  assert.deepEqual(report.checkConfig, { state: '/var/lib/mailprocd', run: '/run/mailprocd', lmtp: ['unix:/run/mailprocd/lmtp'], group: 'postfix' });

  // Nothing of it outside: the real dpkg database, /etc, /usr as they were.
  assert.equal(hostState(), before);
  t.diagnostic(`installed ${String(report.version)}; delivered ${String(report.delivered)}; verify checked man pages: ${String((report.verify as { manChecked?: boolean } | undefined)?.manChecked)}`);
});
