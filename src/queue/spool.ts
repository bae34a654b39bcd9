// The durable spool for mail we own (SMTP intake). A message is written to
// incoming/, fsynced, renamed into active/, and active/ is fsynced — only then
// may the listener answer 250. Each active entry is one immutable file:
//   "MAILPROC-SPOOL 1\n" + JSON envelope line + the bytes as received.
// Fields added to the envelope line since version 1 are optional (tls: the
// STARTTLS session), so entries written before them read as they always did
// and an older mailprocd reading a newer entry ignores them.
// Progress lives beside it in ID.done, one finished recipient per line,
// appended and fsynced after each final outcome, so a restart neither loses a
// recipient nor (outside the window between a delivery and its fsync, the one
// Postfix also has) delivers one twice. Fails by returning a 4.x.x Status.
import { open, readdir, readFile, rename, unlink, mkdir, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFully } from '../deliver/types.js';
import { statusFromError } from '../mail/errno.js';
import type { TlsSession } from '../mail/envelope.js';
import { ok, type Status } from '../mail/status.js';

const MAGIC = 'MAILPROC-SPOOL 1\n';

export interface SpoolEnvelope {
  readonly id: string;
  readonly sender: string;
  readonly recipients: readonly string[];
  readonly helo: string;
  readonly clientAddress: string;
  readonly protocol: 'ESMTP' | 'SMTP' | 'LMTP';
  /** ms since the epoch */
  readonly arrival: number;
  /** The TLS session the message came over; absent for plaintext and in entries written before it existed. */
  readonly tls?: TlsSession;
}

export interface SpoolEntry {
  readonly envelope: SpoolEnvelope;
  readonly raw: Buffer;
  /** Recipients already finished (delivered or bounced), lower case. */
  readonly done: ReadonlySet<string>;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class Spool {
  readonly incoming: string;
  readonly active: string;

  constructor(readonly dir: string, private readonly fsync = true) {
    this.incoming = join(dir, 'incoming');
    this.active = join(dir, 'active');
  }

  /**
   * Creates the directories (0700) and removes what a crash can leave: a
   * half-written file in incoming/ (never acknowledged) and a progress file
   * whose message was already removed (remove() unlinks the message first).
   */
  async init(): Promise<void> {
    await mkdir(this.incoming, { recursive: true, mode: 0o700 });
    await mkdir(this.active, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.incoming)) await unlink(join(this.incoming, name)).catch(() => undefined);
    const names = new Set(await readdir(this.active));
    for (const name of names) {
      if (name.endsWith('.done') && !names.has(name.slice(0, -'.done'.length))) await unlink(join(this.active, name)).catch(() => undefined);
    }
  }

  /** Durable before it returns 2.0.0. */
  async enqueue(envelope: SpoolEnvelope, raw: Buffer): Promise<Status> {
    const tmp = join(this.incoming, envelope.id);
    let fh;
    try {
      fh = await open(tmp, 'wx', 0o600);
      // Not one writev: on a filling disk it writes part and says so instead of failing, and a 250 would follow for half a message.
      await writeFully(fh, [Buffer.from(MAGIC + JSON.stringify(envelope) + '\n'), raw]);
      if (this.fsync) await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(tmp, join(this.active, envelope.id));
      if (this.fsync) await fsyncDir(this.active);
      return ok(`Ok: queued as ${envelope.id}`);
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      return statusFromError(err, `cannot write spool file ${tmp}`);
    }
  }

  async list(): Promise<string[]> {
    const names = await readdir(this.active);
    return names.filter((n) => !n.includes('.')).sort();
  }

  async read(id: string): Promise<SpoolEntry> {
    const data = await readFile(join(this.active, id));
    const nl = data.indexOf('\n', MAGIC.length);
    if (!data.subarray(0, MAGIC.length).equals(Buffer.from(MAGIC)) || nl < 0) {
      throw new Error(`spool file ${id} is not a mailprocd spool file`);
    }
    const envelope = JSON.parse(data.subarray(MAGIC.length, nl).toString('utf8')) as SpoolEnvelope;
    const doneText = await readFile(join(this.active, `${id}.done`), 'utf8').catch(() => '');
    // A torn last line (crash mid-append) has no newline and is ignored.
    const lines = doneText.split('\n');
    lines.pop();
    return { envelope, raw: data.subarray(nl + 1), done: new Set(lines.map((l) => l.toLowerCase())) };
  }

  async markDone(id: string, recipient: string): Promise<void> {
    const path = join(this.active, `${id}.done`);
    await appendFile(path, `${recipient.toLowerCase()}\n`, { mode: 0o600 });
    if (this.fsync) {
      const fh = await open(path, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  }

  /** The message first: a crash in between leaves only an orphan progress file, which init() removes. */
  async remove(id: string): Promise<void> {
    await unlink(join(this.active, id)).catch(() => undefined);
    await unlink(join(this.active, `${id}.done`)).catch(() => undefined);
  }
}
