#!/usr/bin/env node
// `npm run package`: builds the Debian package mailprocd_VERSION_ARCH.deb with
// dpkg-deb, the way an administrator installs Postfix or Dovecot:
//   /usr/lib/mailprocd                 the built dist/src, libexec/, package.json and the
//                                      production node_modules (npm prune --omit=dev, offline)
//   /usr/bin/{mailprocd,mailproc,mailmond}   symlinks to the CLIs (Node runs them by their real path,
//                                      so config discovery finds /usr/lib/mailprocd/package.json)
//   /etc/mailprocd/mailprocd.yaml      conffile: docs/mailprocd.yaml, the commented real install
//   /etc/mailprocd/db/                 conffiles: the table sources, made from db/ with every
//                                      entry commented out (examples only: nothing is delivered
//                                      by an example address on a real host)
//   /etc/default/mailmond              conffile: MAILMOND_OPTS for mailmond.service
//   /etc/default/mailprocd-db-sync     conffile: DB_SYNC_URL for mailprocd-db-sync.service
//   /lib/systemd/system/               docs/mailprocd.service, mailmond.service, mailprocd-db-sync.service, as they are
//   /usr/share/man/                    mailprocd(8), mailproc(1), mailmond(8), mailprocd.yaml(5)
//                                      from docs/man/*.md (go-md2man: one markdown source each)
//   /usr/share/bash-completion/completions/mailproc   `mailproc completion bash`
//   /usr/share/doc/mailprocd/          README.md, docs/*.md, db/README.md, copyright
// Depends: nodejs (>= 20). Architecture: this machine's (lmdb ships a native addon).
//
// Usage: node scripts/package-deb.mjs [--no-build] [--out DIR]   (default out: dist/deb)
// --no-build packages the dist/ that is there (the install test uses it: rebuilding
// dist/ under other tests running from it would pull files from under them).
// Prints the path of the .deb on stdout. Fails (exit 1, one line naming what is
// missing) without dpkg-deb, go-md2man (Debian package go-md2man) or a build.
// Writes only into a temp directory (removed at the end) and --out.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const COMMANDS = ['mailprocd', 'mailproc', 'mailmond'];
const MAN_PAGES = ['mailprocd.8', 'mailproc.1', 'mailmond.8', 'mailprocd.yaml.5'];
const DOCS = ['README.md', 'docs/postfix.md', 'docs/mailmond.md', 'docs/metrics.md', 'docs/operating.md', 'docs/upgrading.md', 'docs/milter.md', 'docs/scale-out.md'];
const TABLES = ['rules', 'uid', 'gid', 'lists', 'spam', 'nodes'];

function fail(message) {
  process.stderr.write(`package-deb: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const opts = { build: true, out: join(ROOT, 'dist', 'deb') };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--no-build') opts.build = false;
    else if (argv[i] === '--out' && argv[i + 1] !== undefined) opts.out = resolve(argv[++i]);
    else fail(`unknown option "${argv[i]}" (usage: package-deb.mjs [--no-build] [--out DIR])`);
  }
  return opts;
}

function need(program, debianPackage) {
  try {
    execFileSync('sh', ['-c', `command -v ${program}`], { stdio: 'pipe' });
  } catch {
    fail(`${program} not found: install the Debian package "${debianPackage}"`);
  }
}

/** A step's stdout; a step that fails ends the build with one line naming it and what it said. */
function run(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  } catch (err) {
    if (cmd === 'git') throw err;
    fail(`${cmd} ${args.join(' ')} failed: ${String(err.stderr ?? err.message).trim()}`);
  }
}

function write(root, path, text, mode = 0o644) {
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  chmodSync(file, mode);
}

/** A table source for /etc: db/<table> with its entries commented out and the checkout's paths made a real host's. */
function etcTable(table) {
  const lines = readFileSync(join(ROOT, 'db', table), 'utf8').split('\n');
  const body = lines.map((line) => (line === '' || line.startsWith('#') ? line : `#${line}`))
    .join('\n')
    .replaceAll('./var/mail/', '/var/mail/')
    .replace(/(^|[^/])db\/README\.md/gm, '$1/usr/share/doc/mailprocd/db/README.md');
  return `# /etc/mailprocd/db/${table}: the examples below are commented out; write your own
# entries, then run "mailproc db compile" (or reload mailprocd).
${body}`;
}

/** Directories 0755, files 0644 unless executable (0755): the modes do not depend on the builder's umask. */
function normaliseModes(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isSymbolicLink()) continue;
    if (st.isDirectory()) {
      chmodSync(path, 0o755);
      normaliseModes(path);
    } else {
      chmodSync(path, (st.mode & 0o111) !== 0 ? 0o755 : 0o644);
    }
  }
}

function duKilobytes(dir) {
  return Number(run('du', ['-sk', '--apparent-size', dir]).split('\t')[0]);
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  need('dpkg-deb', 'dpkg');
  need('go-md2man', 'go-md2man');
  if (opts.build) execFileSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });
  if (!existsSync(join(ROOT, 'dist', 'src', 'cli', 'mailprocd.js'))) fail('dist/src/cli/mailprocd.js is missing: run "npm run build" first');

  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  const arch = run('dpkg', ['--print-architecture']).trim();
  // The last commit's date (the same for every build of one commit), else today's.
  let date;
  try {
    date = run('git', ['log', '-1', '--format=%cs'], { cwd: ROOT }).trim();
  } catch {
    date = '';
  }
  if (!/^\d{4}-\d{2}-\d{2}$/.test(date)) date = new Date().toISOString().slice(0, 10);
  const stage = mkdtempSync(join(tmpdir(), 'mailprocd-deb-'));
  try {
    const root = join(stage, 'root');
    const lib = join(root, 'usr/lib/mailprocd');
    mkdirSync(lib, { recursive: true });
    for (const f of ['package.json', 'package-lock.json']) copyFileSync(join(ROOT, f), join(lib, f));
    // Only what src/ still compiles to: tsc never deletes the output of a source that is gone.
    const distSrc = join(ROOT, 'dist', 'src');
    const current = (file) => !file.endsWith('.map') && (!file.endsWith('.js') || existsSync(join(ROOT, 'src', relative(distSrc, file).replace(/\.js$/, '.ts'))));
    cpSync(distSrc, join(lib, 'dist', 'src'), { recursive: true, filter: current });
    mkdirSync(join(lib, 'libexec'));
    copyFileSync(join(ROOT, 'libexec', 'spam-checker.pl'), join(lib, 'libexec', 'spam-checker.pl'));
    cpSync(join(ROOT, 'node_modules'), join(lib, 'node_modules'), { recursive: true, verbatimSymlinks: true });
    // Offline: the versions are the lock's, already in node_modules; only the dev tools go.
    run('npm', ['prune', '--omit=dev', '--ignore-scripts', '--offline', '--no-audit', '--no-fund'], { cwd: lib });
    normaliseModes(root);
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    for (const c of COMMANDS) {
      chmodSync(join(lib, 'dist/src/cli', `${c}.js`), 0o755);
      symlinkSync(`../lib/mailprocd/dist/src/cli/${c}.js`, join(root, 'usr/bin', c));
    }

    // /etc: conffiles. The config may hold probe.key and relay secrets: not world-readable.
    write(root, 'etc/mailprocd/mailprocd.yaml', readFileSync(join(ROOT, 'docs', 'mailprocd.yaml'), 'utf8'), 0o640);
    for (const t of TABLES) write(root, `etc/mailprocd/db/${t}`, etcTable(t));
    write(root, 'etc/default/mailmond', `# Options for mailmond.service (mailmond(8)): at least --to, the probe address
# (a "probe" rule in /etc/mailprocd/db/rules). mailmond.service starts only once
# enabled: systemctl enable --now mailmond
MAILMOND_OPTS="--to mailmond@example.org --smtp 127.0.0.1:25 --interval 60s --threshold 60s"
`);

    write(root, 'etc/default/mailprocd-db-sync', `# Options for mailprocd-db-sync.service: the central PostgreSQL this host's tables
# follow (db/README.md, "Tables from a central PostgreSQL"). No password in the URL:
# put it in ~root/.pgpass, or PGPASSWORD=... here (this file is 0600).
# It starts only once enabled: systemctl enable --now mailprocd-db-sync
DB_SYNC_URL="postgresql://mailprocd@db.example.org/mail"
DB_SYNC_OPTS="--interval 60s"
`, 0o600);

    for (const unit of ['mailprocd.service', 'mailmond.service', 'mailprocd-db-sync.service']) write(root, `lib/systemd/system/${unit}`, readFileSync(join(ROOT, 'docs', unit), 'utf8'));

    for (const page of MAN_PAGES) {
      const section = page.slice(page.lastIndexOf('.') + 1);
      // The title line gets the date and the version, so `man` shows which release it documents.
      const md = readFileSync(join(ROOT, 'docs', 'man', `${page}.md`), 'utf8').replace(/^(% \S+ \d) "" "mailprocd"/, `$1 "${date}" "mailprocd ${pkg.version}"`);
      const roff = run('go-md2man', [], { input: md, stdio: ['pipe', 'pipe', 'pipe'] });
      write(root, `usr/share/man/man${section}/${page}.gz`, gzipSync(roff, { level: 9 }));
    }

    const completion = run(process.execPath, [join(ROOT, 'dist/src/cli/mailproc.js'), 'completion', 'bash']);
    write(root, 'usr/share/bash-completion/completions/mailproc', completion);

    const doc = 'usr/share/doc/mailprocd';
    for (const d of DOCS) write(root, `${doc}/${d.replace(/^docs\//, '')}`, readFileSync(join(ROOT, d), 'utf8'));
    write(root, `${doc}/db/README.md`, readFileSync(join(ROOT, 'db', 'README.md'), 'utf8'));
    write(root, `${doc}/examples/mailprocd.yaml`, readFileSync(join(ROOT, 'docs', 'mailprocd.yaml'), 'utf8'));
    write(root, `${doc}/copyright`, `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mailprocd

Files: *
License: ${pkg.license}

Files: usr/lib/mailprocd/node_modules/*
Comment: third-party Node.js modules, each under the license in its own directory
`);

    const conffiles = ['/etc/mailprocd/mailprocd.yaml', ...TABLES.map((t) => `/etc/mailprocd/db/${t}`), '/etc/default/mailmond', '/etc/default/mailprocd-db-sync'];
    const control = join(root, 'DEBIAN');
    write(root, 'DEBIAN/control', `Package: mailprocd
Version: ${pkg.version}
Architecture: ${arch}
Maintainer: mailprocd maintainers <postmaster@localhost>
Installed-Size: ${duKilobytes(root)}
Depends: nodejs (>= 20)
Recommends: postfix | mail-transport-agent, spamassassin
Suggests: swaks
Section: mail
Priority: optional
Description: mail delivery, classification and filtering server behind Postfix
 mailprocd takes mail from Postfix (or any MTA) over LMTP or SMTP, decides
 per recipient what happens from rules in LMDB tables, checks it with
 SpamAssassin as the recipient, and delivers to Maildir, mbox, a pipe or a
 forward in a worker running as that user. It answers Postfix's policy
 delegation protocol (closed lists, users' sender policies, greylisting).
 mailmond measures delivery delay with signed probe messages.
`);
    write(root, 'DEBIAN/conffiles', `${conffiles.join('\n')}\n`);
    for (const script of ['postinst', 'prerm', 'postrm']) {
      write(root, `DEBIAN/${script}`, readFileSync(join(ROOT, 'scripts', 'package', script), 'utf8'), 0o755);
    }
    chmodSync(control, 0o755);

    mkdirSync(opts.out, { recursive: true });
    const deb = join(opts.out, `mailprocd_${pkg.version}_${arch}.deb`);
    run('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', root, deb]);
    process.stdout.write(`${deb}\n`);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

main();
