// A raw SMTP/LMTP client for protocol edges: writes exactly the bytes a test
// gives and reads replies one at a time (multi-line replies joined), with a
// timeout so a server that sends one reply too few fails the test instead of
// hanging it. startTls() continues the session over TLS after a 220 to
// STARTTLS (any certificate accepted: the tests compare its fingerprint).
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type PeerCertificate } from 'node:tls';

export interface Reply {
  readonly code: number;
  /** All lines' text after "NNN-" / "NNN ", joined with "\n". */
  readonly text: string;
  /** The last line as sent, e.g. "250 2.0.0 Ok". */
  readonly line: string;
}

/** Dot-stuffs a message and ends it with <CRLF>.<CRLF> (adding the last CRLF if missing), as a client sends it after DATA. */
export function dataBlock(msg: string): string {
  const body = msg.endsWith('\r\n') ? msg : `${msg}\r\n`;
  return `${body.replace(/^\./gm, '..')}.\r\n`;
}

export class RawClient {
  private buffer = '';
  private readonly waiters: (() => void)[] = [];
  private closed = false;

  private constructor(private socket: Socket) {
    this.attach(socket);
  }

  private attach(socket: Socket): void {
    socket.on('data', (d: Buffer) => {
      this.buffer += d.toString('latin1');
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
  }

  /**
   * The TLS handshake, to be called once the server answered STARTTLS with
   * 220; every later command and reply goes over it. Resolves with what was
   * negotiated and the server's certificate; rejects when the handshake fails.
   * `options` narrows what the client offers (maxVersion, ciphers …).
   */
  async startTls(timeoutMs = 10_000, options: Pick<ConnectionOptions, 'minVersion' | 'maxVersion' | 'ciphers'> = {}): Promise<{ protocol: string | null; cipher: string; certificate: PeerCertificate }> {
    if (this.buffer !== '') throw new Error(`unread plaintext before the TLS handshake: ${JSON.stringify(this.buffer)}`);
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = tlsConnect({ ...options, socket: plain, rejectUnauthorized: false });
    const timer = setTimeout(() => secure.destroy(new Error(`no TLS handshake within ${timeoutMs} ms`)), timeoutMs);
    try {
      await once(secure, 'secureConnect');
    } finally {
      clearTimeout(timer);
    }
    this.socket = secure;
    this.attach(secure);
    return { protocol: secure.getProtocol(), cipher: secure.getCipher().name, certificate: secure.getPeerCertificate() };
  }

  /** A TCP connection to 127.0.0.1, from `from` (another loopback address, e.g. 127.0.0.2: another client) if given. */
  static open(target: { port: number; from?: string } | { path: string }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = 'path' in target ? connect(target.path)
        : connect({ port: target.port, host: '127.0.0.1', ...(target.from !== undefined ? { localAddress: target.from } : {}) });
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  /** Writes one byte per write call, to split every token across reads. */
  async writeBytewise(data: string | Buffer): Promise<void> {
    const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    for (let i = 0; i < b.length; i++) {
      this.socket.write(b.subarray(i, i + 1));
      if (i % 64 === 0) await new Promise((r) => setImmediate(r));
    }
  }

  async reply(timeoutMs = 10_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:(\d{3})-[^\r\n]*\r\n)*(\d{3}) [^\r\n]*\r\n/.exec(this.buffer);
      if (m) {
        const block = m[0];
        this.buffer = this.buffer.slice(block.length);
        const lines = block.split('\r\n').filter((l) => l !== '');
        return { code: Number(lines[lines.length - 1]?.slice(0, 3)), text: lines.map((l) => l.slice(4)).join('\n'), line: lines[lines.length - 1] ?? '' };
      }
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buffer)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply within ${timeoutMs} ms; unread: ${JSON.stringify(this.buffer)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(t); resolve(); });
      });
    }
  }

  async replies(n: number, timeoutMs?: number): Promise<Reply[]> {
    const out: Reply[] = [];
    for (let i = 0; i < n; i++) out.push(await this.reply(timeoutMs));
    return out;
  }

  /** Sends a command and returns its reply. */
  async command(line: string, timeoutMs?: number): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.reply(timeoutMs);
  }

  /** True when nothing more arrives within ms (no stray extra replies). */
  async quietFor(ms: number): Promise<boolean> {
    await new Promise((r) => setTimeout(r, ms));
    return this.buffer === '';
  }

  /** Whether the server closed the connection (or close() was called). */
  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** LHLO and MAIL FROM on a new LMTP connection, then RCPT TO address: its reply code (the connection is then closed). */
export async function lmtpRcptCode(port: number, address: string): Promise<number> {
  const c = await RawClient.open({ port });
  try {
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    return (await c.command(`RCPT TO:<${address}>`)).code;
  } finally {
    c.close();
  }
}

/**
 * One message for one recipient over a new LMTP connection: the RCPT reply
 * line when it is refused, else the reply line after DATA. `message` is the
 * message as the client writes it (CRLF line ends, dot-stuffed), without the
 * final ".".
 */
export async function lmtpDeliver(port: number, rcpt: string, message = 'Subject: test\r\n\r\nbody\r\n'): Promise<string> {
  const c = await RawClient.open({ port });
  try {
    await c.reply();
    await c.command('LHLO client.test');
    await c.command('MAIL FROM:<s@remote.test>');
    const r = await c.command(`RCPT TO:<${rcpt}>`);
    if (r.code !== 250) return r.line;
    await c.command('DATA');
    c.write(`${message}.\r\n`);
    return (await c.reply()).line;
  } finally {
    c.close();
  }
}
