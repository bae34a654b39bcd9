// The input side of an SMTP/LMTP session, in place of smtp-server's
// SMTPStream (library-patches.ts installs it through SMTPConnection's
// _createParser): the socket is piped in; command lines go to `oncommand`,
// one at a time; in DATA the bytes go through our DataDecoder
// (data-decoder.ts) into the message stream; and the deadlines smtp-server
// lacks are kept here.
//
// Command lines end at LF (a CR before it is dropped), as smtp-server's
// parser had it; a line longer than maxCommandLength ends the session.
//
// Deadlines, after Postfix's smtpd_per_request_deadline and
// smtpd_min_data_rate. "Waiting" is only time when we are ready for more
// input and the client has not sent it: time in our own command handlers, or
// while the message's reader has not drained, is ours and not counted.
//   - A command line: once its first byte came, at most commandTimeoutMs of
//     waiting for the rest. A client that trickles a byte every few seconds
//     no longer keeps the session forever (smtp-server's idle timer restarts
//     at every byte).
//   - DATA: a budget of commandTimeoutMs. Waiting is taken off it; every
//     byte received adds 1000/dataMinRate ms, up to commandTimeoutMs again.
//     dataMinRate 0: the whole message within commandTimeoutMs of waiting.
// Running out destroys the stream with an InputError; the connection
// answers 421 with its code and closes. The wait for the next command
// (before a line's first byte) stays smtp-server's idle timeout
// (limits.client_timeout).
//
// The members SMTPConnection uses — oncommand, startDataMode, continue,
// dataBytes, isClosed and _dataMode — keep smtp-server 3.21.6's names and
// meaning (src/smtp/NOTES.md). `inCommand` is ours: true from a command's
// dispatch until its handler calls back, so a reply sent meanwhile is the
// answer to a client's command (library-patches.ts counts those errors).
// The clock is injected for the tests.
import { PassThrough, Writable } from 'node:stream';
import { DataDecoder } from './data-decoder.js';

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = Buffer.alloc(0);
/** Pipelined commands dispatched in one go before yielding to the event loop, as smtp-server did. */
const MAX_SYNC_COMMANDS = 100;

export interface InputClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realClock: InputClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface InputOptions {
  /** Longest command line in bytes, CRLF not counted; smtp-server's default is 16 KiB (AUTH lines). */
  readonly maxCommandLength?: number | undefined;
  /** Waiting allowed for the rest of a command line, and DATA's budget; Infinity = none. */
  readonly commandTimeoutMs: number;
  /** Bytes per second that earn DATA its waiting time back; 0 = none. */
  readonly dataMinRate: number;
  readonly clock?: InputClock;
}

/** Why the input gave up. `code` is the enhanced code of the 421 that ends the session. */
export class InputError extends Error {
  constructor(message: string, readonly code: '4.4.2' | '4.5.0') {
    super(message);
  }
}

/** The message stream handed to the onData handler, with smtp-server's two extra fields. */
export interface MessageStream extends PassThrough {
  byteLength: number;
  sizeExceeded: boolean;
}

export class InputStream extends Writable {
  /** Set by SMTPConnection: handles one command line, calls `next` when the next may come. */
  oncommand: (line: Buffer, next?: () => void) => void = () => {
    throw new Error('bug: InputStream.oncommand is not set');
  };
  /** Set by SMTPConnection when the session ends: nothing more is dispatched. */
  isClosed = false;
  /** Message bytes decoded so far in this DATA. */
  dataBytes = 0;
  /** In DATA (the name SMTPConnection reads). */
  _dataMode = false;
  /** A command is being handled (see the header). */
  inCommand = false;

  private readonly maxCommandLength: number;
  private readonly commandTimeoutMs: number;
  private readonly dataMinRate: number;
  private readonly clock: InputClock;
  private message: MessageStream | null = null;
  private decoder: DataDecoder | undefined;
  private maxBytes = Infinity;
  /** The start of a command line whose end has not come. */
  private remainder: Buffer = EMPTY;
  /** What runs when the application calls continue() after DATA (or true: it already did). */
  private continueWith: (() => void) | boolean = false;
  /** When we last became ready for input; undefined while the time is ours. */
  private readyAt: number | undefined;
  private lineWaitMs = 0;
  private dataBudgetMs = 0;
  private timer: unknown;

  constructor(o: InputOptions) {
    super();
    this.maxCommandLength = o.maxCommandLength ?? 16 * 1024;
    this.commandTimeoutMs = o.commandTimeoutMs;
    this.dataMinRate = o.dataMinRate;
    this.clock = o.clock ?? realClock;
    // The socket ended: a last line without its LF is still a command, as smtp-server had it.
    this.on('finish', () => {
      this.takeWait();
      if (this.remainder.length > 0 && !this.isClosed) {
        const line = this.remainder;
        this.remainder = EMPTY;
        this.oncommand(line);
      }
    });
    this.on('close', () => this.takeWait());
  }

  /** DATA begins: returns the stream the message is written to (unstuffed, without the terminator). */
  startDataMode(maxBytes?: number): MessageStream {
    this._dataMode = true;
    this.maxBytes = (maxBytes !== undefined && Number(maxBytes)) || Infinity;
    this.dataBytes = 0;
    this.decoder = new DataDecoder();
    this.dataBudgetMs = this.commandTimeoutMs;
    const s = new PassThrough() as MessageStream;
    s.byteLength = 0;
    s.sizeExceeded = false;
    this.message = s;
    return s;
  }

  /** The application has answered the message: what the client sent after it may be read. */
  continue(): void {
    if (typeof this.continueWith === 'function') {
      const f = this.continueWith;
      this.continueWith = false;
      f();
    } else {
      this.continueWith = true;
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, next: (err?: Error | null) => void): void {
    this.take(chunk, next);
  }

  /** One chunk from the socket (or, after DATA, what followed the message). */
  private take(chunk: Buffer, next: (err?: Error | null) => void): void {
    const waited = this.takeWait();
    if (this.isClosed) return next();
    if (chunk.length === 0) return this.ready(next);
    if (this._dataMode) {
      this.dataBudgetMs -= waited;
      if (this.dataBudgetMs < 0) return next(new InputError('timeout exceeded (DATA made too little progress)', '4.4.2'));
      return this.feedData(chunk, next);
    }
    if (this.remainder.length > 0) {
      this.lineWaitMs += waited;
      if (this.lineWaitMs > this.commandTimeoutMs) return next(new InputError('timeout exceeded (command line not finished)', '4.4.2'));
    }
    const data = this.remainder.length > 0 ? Buffer.concat([this.remainder, chunk]) : chunk;
    this.remainder = EMPTY;
    this.readCommands(data, next);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.takeWait();
    cb(err);
  }

  /** Dispatches the complete lines in `data`, one at a time; keeps a partial last line. */
  private readCommands(data: Buffer, next: (err?: Error | null) => void): void {
    let pos = 0;
    let busy = false;
    let again = false;
    let processed = 0;
    const readLine = (): void => {
      // A handler may call back synchronously (NOOP): loop instead of recursing.
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        for (;;) {
          again = false;
          // The session went away while this chunk was being read: nothing pipelined after it runs.
          if (this.isClosed) return next();
          if (this._dataMode) return this.feedData(data.subarray(pos), next);
          const lf = data.indexOf(LF, pos);
          if (lf < 0) {
            // No line end: the rest is the start of a line (the same one as before when pos is 0).
            if (pos > 0) this.lineWaitMs = 0;
            this.remainder = pos < data.length ? Buffer.from(data.subarray(pos)) : EMPTY;
            if (this.remainder.length > this.maxCommandLength) return next(new InputError('command line too long', '4.5.0'));
            return this.ready(next);
          }
          const end = lf > pos && data[lf - 1] === CR ? lf - 1 : lf;
          const line = Buffer.from(data.subarray(pos, end));
          pos = lf + 1;
          this.lineWaitMs = 0;
          if (line.length > this.maxCommandLength) return next(new InputError('command line too long', '4.5.0'));
          this.inCommand = true;
          this.oncommand(line, () => {
            this.inCommand = false;
            readLine();
          });
          if (!again) return; // the handler answers later and calls back
          // Yield now and then: a chunk full of pipelined commands must not starve other sessions.
          if (++processed >= MAX_SYNC_COMMANDS) {
            processed = 0;
            setImmediate(readLine);
            return;
          }
        }
      } finally {
        busy = false;
      }
    };
    readLine();
  }

  /** One chunk of DATA: decoded into the message stream; at the terminator, back to commands. */
  private feedData(chunk: Buffer, next: (err?: Error | null) => void): void {
    const decoder = this.decoder as DataDecoder;
    const out = this.message as MessageStream;
    const { body, rest } = decoder.push(chunk);
    if (this.dataMinRate > 0) this.dataBudgetMs = Math.min(this.commandTimeoutMs, this.dataBudgetMs + (chunk.length * 1000) / this.dataMinRate);
    this.count(body.length);
    if (rest !== undefined) return this.endData(body, rest, next);
    if (body.length === 0 || !out.writable) return this.ready(next);
    if (out.write(body) || out.destroyed) return this.ready(next);
    // Take no more from the socket until the application has read this; a destroyed stream only closes.
    const resume = (): void => {
      out.removeListener('drain', resume);
      out.removeListener('close', resume);
      this.ready(next);
    };
    out.once('drain', resume);
    out.once('close', resume);
  }

  private count(n: number): void {
    this.dataBytes += n;
    const out = this.message;
    if (out === null) return;
    out.byteLength = this.dataBytes;
    if (this.dataBytes > this.maxBytes) out.sizeExceeded = true;
  }

  /**
   * The end of the message. What followed the terminator is read only once
   * the application has answered (continue()) and, if it is still reading,
   * has read the whole message.
   */
  private endData(body: Buffer, rest: Buffer, next: (err?: Error | null) => void): void {
    const out = this.message as MessageStream;
    const resume = (): void => this.take(rest, next);
    let resumeNow = false;
    if (this.continueWith === true) {
      this.continueWith = false;
      if (out.destroyed || out.readableEnded) resumeNow = true;
      else out.once('end', resume);
    } else {
      this.continueWith = resume;
    }
    out.byteLength = this.dataBytes;
    out.sizeExceeded = this.dataBytes > this.maxBytes;
    if (body.length > 0 && out.writable) out.end(body);
    else out.end();
    this._dataMode = false;
    this.message = null;
    this.decoder = undefined;
    if (resumeNow) resume();
  }

  /** Ready for the client's next bytes: from now on, waiting counts against a pending line or DATA. */
  private ready(next: (err?: Error | null) => void): void {
    this.readyAt = this.clock.now();
    const left = this._dataMode ? this.dataBudgetMs : this.remainder.length > 0 ? this.commandTimeoutMs - this.lineWaitMs : Infinity;
    if (Number.isFinite(left) && !this.isClosed) this.timer = this.clock.setTimeout(() => this.expire(), Math.max(0, left));
    next();
  }

  /** Time waited since ready(), and stops the deadline timer. */
  private takeWait(): number {
    if (this.timer !== undefined) {
      this.clock.clearTimeout(this.timer);
      this.timer = undefined;
    }
    const waited = this.readyAt === undefined ? 0 : this.clock.now() - this.readyAt;
    this.readyAt = undefined;
    return waited;
  }

  private expire(): void {
    this.timer = undefined;
    if (this.isClosed || this.destroyed) return;
    this.readyAt = undefined;
    this.destroy(new InputError(this._dataMode ? 'timeout exceeded (DATA made too little progress)' : 'timeout exceeded (command line not finished)', '4.4.2'));
  }
}
