// Maildir leaf: writes one message into <maildir>/new, durably, or not at all.
//
// Exports: deliverMaildir(copy, options) → Promise<Delivery>; MaildirOptions;
// maildirFolderName(folder) (the Maildir++ name a folder maps to, or undefined
// for INBOX); redeliveryTokenOf(name) (the token a unique name carries).
//
// Steps (../shared/notes/reliability.md §1.2, Postfix local(8)): unique name; create it in tmp/
// O_EXCL 0600; one writev of header+body; fsync; close; link() into new/ (never
// rename: link fails on a name clash instead of replacing a message); unlink
// the tmp name; fsync new/ so the link itself survives a crash. Only then 2.0.0.
//
// Redelivery (src/mail/redelivery.ts): a queued copy carries a token, written
// into the unique name's middle part as `K<token>`. When the job may repeat an
// earlier attempt (`check`), new/ and then cur/ of the target folder are
// listed before anything is written; a name carrying the token means the
// earlier attempt wrote this copy and only its outcome was lost: 2.0.0
// "already delivered (NAME)", nothing written (new/ fsynced again, as the
// earlier writer may have died before its fsync). A copy the user has
// meanwhile deleted or moved to another folder is written again.
//
// Failure contract: every I/O error becomes a Status through the errno table
// (src/mail/errno.ts); nothing is left in tmp/ and nothing partial in new/. A
// maildir, folder, tmp/ or new/ that is a symlink is refused before anything is
// written (ELOOP → 5.2.0); one owned by another uid than the worker's (the
// recipient's) is refused too, 4.2.0 naming the directory and its owner, as
// Postfix's safe_open refuses a mailbox not owned by the recipient. Missing directories are created 0700 on ENOENT, then
// the delivery is retried once, so the common path does no mkdir. Throws only
// for bad options (programmer errors).
import { constants } from 'node:fs';
import { link, lstat, open, opendir, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { errnoError, statusFromError } from '../mail/errno.js';
import { isRedeliveryToken, REDELIVERY_TOKEN_LENGTH } from '../mail/redelivery.js';
import { ok, status } from '../mail/status.js';
import { ignoreErrors, isCode, makeDirectories, makeDirectory, syncDirectories } from './fs-helpers.js';
import { writeFully, type Delivery, type MessageCopy } from './types.js';

export interface MaildirOptions {
  /** Absolute path of the Maildir (the INBOX). Created, with missing parents, 0700. */
  readonly path: string;
  /** Maildir++ folder, "a/b" for nested; from user input, so it is sanitised. */
  readonly folder?: string;
  /** This host's name, for unique file names. */
  readonly hostname: string;
  /** fsync the file and new/ (default true). Only benchmarks turn it off. */
  readonly fsync?: boolean;
  /** This copy's redelivery token (src/mail/redelivery.ts), put in the unique name; check: look for it first. */
  readonly redelivery?: { readonly token: string; readonly check: boolean };
}

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_RDONLY, O_DIRECTORY } = constants;
const TMP_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;
const DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;
const NAME_TRIES = 5;

let sequence = 0;

/**
 * The Maildir++ directory name for a folder: "Foo" → ".Foo", "a/b" → ".a.b".
 * '/' and '.' both separate levels; empty, "." and ".." parts are dropped (so
 * "../../etc" → ".etc" and ".Trash" → ".Trash"), control characters become
 * '_'. Nothing can name a path outside the Maildir. undefined means the INBOX
 * (no folder, "INBOX", or nothing left after cleaning).
 */
export function maildirFolderName(folder: string | undefined): string | undefined {
  if (folder === undefined) return undefined;
  // eslint-disable-next-line no-control-regex -- control characters are exactly what we strip
  const parts = folder.split(/[/.]/).filter((p) => p !== '').map((p) => p.replace(/[\x00-\x1f\x7f]/g, '_'));
  if (parts.length === 0 || (parts.length === 1 && parts[0]!.toUpperCase() === 'INBOX')) return undefined;
  return '.' + parts.join('.');
}

/**
 * time.M<usec>P<pid>Q<seq>[K<token>].<host>,S=<size> — unique per host,
 * process and call; the token (lower-case base32, so no '.', ',', ':' or '/',
 * and no upper-case letter a reader could take for one of the maildir spec's
 * M/P/Q/R/I/V markers — R is its random number, hence K) only names the copy.
 */
function uniqueName(arrival: Date, host: string, size: number, token: string | undefined): string {
  sequence += 1;
  const usec = Math.floor((performance.timeOrigin + performance.now()) * 1000) % 1_000_000;
  return `${Math.floor(arrival.getTime() / 1000)}.M${usec}P${process.pid}Q${sequence}${token !== undefined ? `K${token}` : ''}.${host},S=${size}`;
}

const TOKEN_IN_MIDDLE = new RegExp(`K([a-z2-7]{${REDELIVERY_TOKEN_LENGTH}})$`);

/**
 * The redelivery token in a maildir file name (in new/, or in cur/ with its
 * `:2,FLAGS` info), or undefined: the middle part of `time.middle.host…` must
 * end in K<token>.
 */
export function redeliveryTokenOf(name: string): string | undefined {
  const first = name.indexOf('.');
  const second = first < 0 ? -1 : name.indexOf('.', first + 1);
  if (second < 0) return undefined;
  return TOKEN_IN_MIDDLE.exec(name.slice(first + 1, second))?.[1];
}

/**
 * The name in new/ or cur/ of `dir` that carries the token, or undefined.
 * new/ first: a reader that moves the file to cur/ while we list new/ has
 * moved it before we list cur/. A cur/ that is not there is empty. Listed in
 * batches of 1024 names (one thread-pool round trip each) and left at the
 * first match: about 2 µs a name, 0.2 s for a cur/ of 100 000 messages,
 * paid only by a repeated attempt.
 */
async function findToken(dir: string, token: string): Promise<{ sub: 'new' | 'cur'; name: string } | undefined> {
  const marker = `K${token}.`;
  for (const sub of ['new', 'cur'] as const) {
    let listing;
    try {
      listing = await opendir(join(dir, sub), { bufferSize: 1024 });
    } catch (err) {
      if (sub === 'cur' && isCode(err, 'ENOENT')) return undefined;
      throw err;
    }
    try {
      for (let entry = await listing.read(); entry !== null; entry = await listing.read()) {
        if (entry.name.includes(marker) && redeliveryTokenOf(entry.name) === token) return { sub, name: entry.name };
      }
    } finally {
      await ignoreErrors(listing.close());
    }
  }
  return undefined;
}

/** The maildir spec's escapes, so the host cannot add a path or an info part. */
function sanitiseHost(hostname: string): string {
  return hostname.replace(/\//g, '\\057').replace(/:/g, '\\072');
}

/** A directory we would write through belongs to another user: refused, as Postfix's safe_open refuses a mailbox "not owned by recipient". */
class ForeignOwnerError extends Error {
  constructor(readonly path: string, readonly owner: number) {
    super(`${path} is owned by uid ${owner}`);
  }
}

/**
 * Throws ELOOP for a symlink, ENOTDIR for anything else that is not a
 * directory, and ForeignOwnerError for a directory that is not ours (the
 * worker runs as the recipient, so "ours" is the recipient's).
 */
async function checkDirectory(path: string): Promise<void> {
  const st = await lstat(path);
  if (st.isSymbolicLink()) throw errnoError('ELOOP', path);
  if (!st.isDirectory()) throw errnoError('ENOTDIR', path);
  const self = process.geteuid?.();
  if (self !== undefined && st.uid !== self) throw new ForeignOwnerError(path, st.uid);
}

/**
 * Checks that no directory we write through is a symlink or someone else's,
 * and opens new/ (the handle is needed for its fsync anyway). The checks run
 * concurrently, so the common path costs about one round trip to the thread
 * pool.
 */
async function openMaildir(root: string, dir: string): Promise<FileHandle> {
  const newDir = join(dir, 'new');
  const checks = [checkDirectory(dir), checkDirectory(join(dir, 'tmp')), checkDirectory(newDir)];
  if (dir !== root) checks.push(checkDirectory(root));
  const [opened, ...checked] = await Promise.allSettled([open(newDir, DIR_FLAGS), ...checks]);
  // A refusal (ELOOP) outranks ENOENT, so we never create through a symlink.
  const rejected = checked.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  const failed = rejected.find((r) => !isCode(r.reason, 'ENOENT')) ?? rejected[0];
  if (opened!.status === 'fulfilled') {
    if (failed === undefined) return opened.value;
    await ignoreErrors(opened.value.close());
  }
  if (failed !== undefined) throw failed.reason;
  const reason: unknown = (opened as PromiseRejectedResult).reason;
  // O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR; say what it really is.
  if (isCode(reason, 'ENOTDIR')) await checkDirectory(newDir);
  throw reason;
}

/**
 * Creates the Maildir (parents too) and, for a folder, its Maildir++ directory
 * with its maildirfolder marker; each with cur/ new/ tmp/, all 0700. Runs only
 * after an ENOENT, and tolerates a concurrent delivery doing the same.
 */
async function createMaildir(root: string, dir: string, fsync: boolean): Promise<void> {
  const made = await makeDirectories(root);
  const subdirs = async (base: string): Promise<void> => {
    for (const d of ['cur', 'new', 'tmp']) if (await makeDirectory(join(base, d))) made.push(join(base, d));
  };
  await subdirs(root);
  if (dir !== root) {
    if (await makeDirectory(dir)) made.push(dir);
    const marker = await open(join(dir, 'maildirfolder'), O_WRONLY | O_CREAT | O_NOFOLLOW, 0o600);
    await marker.close();
    await subdirs(dir);
  }
  // A new directory is an entry in its parent; without this a crash can take
  // new/ (and the message fsynced into it) away again. The maildir's own
  // parents are synced even if a concurrent delivery made them, as it may not
  // have synced them yet. A parent we may not open (mode 0711) cannot be helped.
  if (!fsync) return;
  await syncDirectories([dirname(root), root, dirname(dir), dir, ...made.map((d) => dirname(d))]);
}

export async function deliverMaildir(copy: MessageCopy, options: MaildirOptions): Promise<Delivery> {
  const { path: root, hostname } = options;
  if (!isAbsolute(root)) throw new Error(`bug: maildir path must be absolute: ${JSON.stringify(root)}`);
  if (hostname === '') throw new Error('bug: maildir delivery needs a hostname');
  if (Number.isNaN(copy.arrival.getTime())) throw new Error('bug: message arrival time is not a valid Date');
  const token = options.redelivery?.token;
  if (token !== undefined && !isRedeliveryToken(token)) throw new Error(`bug: not a redelivery token: ${JSON.stringify(token)}`);
  const fsync = options.fsync ?? true;
  const folder = maildirFolderName(options.folder);
  const dir = folder === undefined ? root : join(root, folder);
  const host = sanitiseHost(hostname);
  const size = copy.header.length + copy.body.length;

  let newDir: FileHandle;
  let verb = 'cannot open maildir';
  try {
    try {
      newDir = await openMaildir(root, dir);
    } catch (err) {
      if (!isCode(err, 'ENOENT')) throw err;
      verb = 'cannot create maildir';
      await createMaildir(root, dir, fsync);
      verb = 'cannot open maildir';
      newDir = await openMaildir(root, dir);
    }
  } catch (err) {
    if (err instanceof ForeignOwnerError) {
      // Temporary, like Postfix: the owner or the admin fixes it and the retry delivers.
      const self = process.geteuid?.() ?? -1;
      return { status: status('4.2.0', `refusing to deliver to maildir ${dir}: ${err.path === dir ? 'it' : err.path} is owned by uid ${err.owner}, not by the recipient (uid ${self})`), path: dir };
    }
    // Name the directory that failed (new/, a symlinked tmp/, a parent), not just the maildir.
    const at = (err as NodeJS.ErrnoException | null)?.path ?? dir;
    return { status: statusFromError(err, `${verb} ${at}`), path: dir };
  }

  if (token !== undefined && options.redelivery?.check === true) {
    let what = `cannot look for an earlier copy in maildir ${dir}`;
    try {
      const found = await findToken(dir, token);
      if (found !== undefined) {
        // The earlier writer may have died between its link and its fsync of new/.
        what = `cannot sync maildir directory ${join(dir, 'new')}`;
        if (fsync && found.sub === 'new') await newDir.sync();
        await ignoreErrors(newDir.close());
        return { status: ok(`already delivered (${found.name})`), path: join(dir, found.sub, found.name) };
      }
    } catch (err) {
      await ignoreErrors(newDir.close());
      // Not knowing whether it is there, writing it could duplicate it: try again later.
      return { status: statusFromError(err, what), path: dir };
    }
  }

  let what = '';
  let tmpPath = '';
  let newPath: string | undefined;
  let file: FileHandle | undefined;
  try {
    for (let i = 0; ; i++) {
      tmpPath = join(dir, 'tmp', uniqueName(copy.arrival, host, size, token));
      what = `cannot create maildir file ${tmpPath}`;
      try {
        file = await open(tmpPath, TMP_FLAGS, 0o600);
        break;
      } catch (err) {
        // EEXIST: a clash with a leftover from a crashed process that had our
        // pid; the next sequence number differs.
        if (!isCode(err, 'EEXIST') || i + 1 >= NAME_TRIES) throw err;
      }
    }
    what = `cannot write maildir file ${tmpPath}`;
    await writeFully(file, [copy.header, copy.body]);
    if (fsync) await file.sync();
    // close() is checked: on network file systems it can report a write error.
    const closing = file;
    file = undefined;
    await closing.close();

    for (let i = 0; ; i++) {
      const candidate = join(dir, 'new', i === 0 ? tmpPath.slice(join(dir, 'tmp').length + 1) : uniqueName(copy.arrival, host, size, token));
      what = `cannot link ${tmpPath} to ${candidate}`;
      try {
        await link(tmpPath, candidate);
        newPath = candidate;
        break;
      } catch (err) {
        if (!isCode(err, 'EEXIST') || i + 1 >= NAME_TRIES) throw err;
      }
    }
    // The message is in new/ now; a leftover tmp name is harmless (readers
    // clean tmp/ after 36 hours), so a failed unlink does not fail delivery.
    await ignoreErrors(unlink(tmpPath));
    tmpPath = '';
    what = `cannot sync maildir directory ${join(dir, 'new')}`;
    if (fsync) await newDir.sync();
    return { status: ok(`delivered to maildir ${dir}`), path: newPath };
  } catch (err) {
    if (file !== undefined) await ignoreErrors(file.close());
    if (tmpPath !== '') await ignoreErrors(unlink(tmpPath));
    // Not known to be durable: take it back so the retry is not a duplicate.
    // If a reader already moved it to cur/, the unlink fails and the retry
    // duplicates — better than losing it (Postfix's choice too).
    if (newPath !== undefined) await ignoreErrors(unlink(newPath));
    return { status: statusFromError(err, what), path: newPath ?? (tmpPath !== '' ? tmpPath : dir) };
  } finally {
    await ignoreErrors(newDir.close());
  }
}
