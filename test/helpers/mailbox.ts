// Reading what a delivery left on disk, the way a user would check it: the
// files in new/, their bytes, owner and mode, and what is left in tmp/.
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';

export function listDir(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

export function newFiles(maildir: string): string[] {
  return listDir(join(maildir, 'new')).map((f) => join(maildir, 'new', f));
}

/** Splits off our trace headers (Return-Path, Delivered-To, one Received with continuations). */
export function splitTrace(file: Buffer): { trace: string; rest: Buffer } {
  let pos = 0;
  const lineEnd = (from: number): number => {
    const i = file.indexOf(0x0a, from);
    return i < 0 ? file.length : i + 1;
  };
  for (const name of ['Return-Path:', 'Delivered-To:', 'Received:']) {
    if (!file.subarray(pos, pos + name.length).equals(Buffer.from(name))) throw new Error(`expected ${name} at byte ${pos}`);
    pos = lineEnd(pos);
    while (file[pos] === 0x09 || file[pos] === 0x20) pos = lineEnd(pos);
  }
  return { trace: file.subarray(0, pos).toString('utf8'), rest: file.subarray(pos) };
}

/** The single message in maildir/new: its bytes after our trace headers, plus its trace and stat. */
export function onlyMessage(maildir: string): { rest: Buffer; trace: string; uid: number; mode: number; path: string } {
  const files = newFiles(maildir);
  if (files.length !== 1) throw new Error(`expected 1 file in ${maildir}/new, found ${files.length}`);
  const path = files[0] as string;
  const st = statSync(path);
  return { ...splitTrace(readFileSync(path)), uid: st.uid, mode: st.mode & 0o777, path };
}

/** What the client sent, as we store it: CRLF → LF. */
export function stored(sent: string | Buffer): Buffer {
  const b = typeof sent === 'string' ? Buffer.from(sent, 'latin1') : sent;
  return Buffer.from(b.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
}

/** The recipient a leaf test delivers to: b@example.net, as the trace header says. */
export const TEST_RECIPIENT = { address: 'b@example.net', local: 'b', user: 'b', extension: '', domain: 'example.net' } as const;
