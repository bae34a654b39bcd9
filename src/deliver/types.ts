// What every delivery leaf takes and returns, and the one write loop the file
// leaves share. A leaf is called by a worker that already runs as the
// recipient's uid/gid; it returns one Delivery and throws only for programmer
// errors (bad options), never for I/O.
import type { FileHandle } from 'node:fs/promises';
import type { Status } from '../mail/status.js';

/** One recipient's copy of a message, as a leaf writes it. */
export interface MessageCopy {
  /** Trace header lines for this recipient (Return-Path, Delivered-To, Received), each ending in LF. */
  readonly header: Buffer;
  /** The message as received: dot-unstuffed, line endings already normalised to LF. May lack a final LF, may contain NUL bytes and 8-bit data, may be header-only. */
  readonly body: Buffer;
  /** Envelope sender; "" is the null sender. */
  readonly sender: string;
  /** Arrival time (for the mbox From_ line and the maildir name). */
  readonly arrival: Date;
  /** The recipient this copy is for (a pipe gets it in its environment). */
  readonly recipient: CopyRecipient;
}

/** The recipient's address and its parts, as RecipientAddress in src/mail/address.ts. */
export interface CopyRecipient {
  readonly address: string;
  readonly local: string;
  readonly user: string;
  readonly extension: string;
  readonly domain: string;
}

/** The one result of a leaf. */
export interface Delivery {
  readonly status: Status;
  /** The file written (or that would have been), for logs. */
  readonly path?: string;
}

/**
 * Writes every byte of `chunks` at the file's current position (or its end,
 * under O_APPEND) without joining them. libuv's writev returns a short count
 * instead of an error when a disk fills mid-call, so we loop: the next call
 * then reports the ENOSPC/EDQUOT/EFBIG that the caller maps to a Status.
 */
export async function writeFully(fh: FileHandle, chunks: readonly Buffer[]): Promise<void> {
  let rest = chunks.filter((c) => c.length > 0);
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest);
    if (bytesWritten <= 0) throw Object.assign(new Error('write returned 0 bytes'), { code: 'EIO' });
    let skip = bytesWritten;
    let i = 0;
    while (i < rest.length && skip >= rest[i]!.length) skip -= rest[i++]!.length;
    rest = rest.slice(i);
    if (skip > 0) rest[0] = rest[0]!.subarray(skip);
  }
}
