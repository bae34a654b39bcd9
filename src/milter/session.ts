// One MTA connection's milter conversation: the state machine between the
// typed commands of protocol.ts and the filters of api.ts. The server feeds
// it one command at a time, in order, and it writes its replies through
// `send`. It knows no sockets.
//
// What it does, per api.ts's semantics:
//  - creates one instance of every filter factory for the connection (again
//    after QUIT_NC, which starts a new SMTP session on the same connection);
//  - answers OPTNEG from the union of the events the instances define: the
//    MTA does not send what nobody handles, and MAIL/RCPT come without our
//    reply when only their data is wanted (MilterSession.sender/recipients);
//  - asks the filters in order, the first verdict other than continue
//    deciding; accept takes a filter out for the rest of the message (the
//    connection at connect/helo) and is sent to the MTA only once every
//    filter has accepted; skip from body stops that filter's body (and is
//    sent as SMFIR_SKIP when every body reader has skipped and the MTA
//    knows SKIP); reject/tempfail at RCPT refuse that recipient only;
//  - keeps the macros (one-letter names bare, longer ones in braces; later
//    stages overwrite earlier values; a new message forgets the previous
//    message's), the sender and the recipients accepted so far;
//  - in eom gives each filter an EomSession; the modifications are sent, in
//    the order they were made, before the final reply (none when the
//    message is refused); progress() goes out at once;
//  - answers events no filter handles with continue, and sends nothing for
//    events negotiated without a reply (SMFIP_NR_*).
//
// Header bytes: SMFIP_HDR_LEADSPC is negotiated when offered, so the MTA
// sends what follows the colon exactly; one leading space is taken off for
// the filter (what an MTA without the extension would do), so a filter sees
// the same value either way, and a value without the space (or with a tab)
// is seen as it is. Header values a filter adds get that one space back.
//
// Failure contract: handle() never throws and never rejects. A filter that
// throws, rejects, returns something verdictOf refuses, or takes longer
// than filterTimeoutMs counts as failed: logged, and answered per
// onFilterError (tempfail: 451 4.7.1; continue: as if it had no opinion) —
// the MTA is always answered. A command out of place (anything before
// OPTNEG, an OPTNEG we cannot serve) comes back as { error } for the server
// to close the connection.
//
// Exports: MilterConversation, ConversationOptions, Step, NamedFilter.
import type { Logger } from '../log.js';
import {
  eventsOf, verdictOf,
  type ConnectInfo, type EomSession, type MilterEvent, type MilterFilter, type MilterFilterFactory, type MilterSession, type NormalizedVerdict,
} from './api.js';
import {
  encodeReply, formatReplyCode, MAX_CHUNK, negotiate, SMFIF, SMFIP, type MilterReply, type MtaCommand,
} from './protocol.js';

/** A factory with the name its log lines use. */
export interface NamedFilter {
  readonly name: string;
  readonly create: MilterFilterFactory;
  /**
   * Events this filter handles only to read them (its answer there is always
   * continue; the built-in checks use it for CONNECT, HELO, MAIL, headers).
   * When every filter that handles an event only observes it, the MTA is
   * asked not to wait for our reply (SMFIP_NR_*): one round trip less each.
   */
  readonly observes?: ReadonlySet<MilterEvent>;
}

export interface ConversationOptions {
  readonly filters: readonly NamedFilter[];
  readonly filterTimeoutMs: number;
  readonly onFilterError: 'tempfail' | 'continue';
  readonly log: Logger;
  /** For log lines: the MTA's end of the connection. */
  readonly peer: string;
  /** Writes bytes to the MTA. */
  readonly send: (bytes: Buffer) => void;
}

/** What the server does after a command: read the next, close (QUIT), or close because of a protocol error. */
export type Step = 'more' | 'quit' | { readonly error: string };

/** The events whose verdict is about the connection, not a message. */
const CONNECTION_EVENTS: ReadonlySet<MilterEvent> = new Set(['connect', 'helo']);

/** event → the NR step that means we send no reply to it. */
const NO_REPLY: Partial<Record<MilterEvent, number>> = {
  connect: SMFIP.NR_CONN, helo: SMFIP.NR_HELO, envfrom: SMFIP.NR_MAIL, envrcpt: SMFIP.NR_RCPT, data: SMFIP.NR_DATA,
  header: SMFIP.NR_HDR, eoh: SMFIP.NR_EOH, body: SMFIP.NR_BODY, unknown: SMFIP.NR_UNKN,
};

const CONTINUE: NormalizedVerdict = { result: 'continue' };
/** A failed filter's verdict per on_filter_error; compared by identity to tell a failure from an answer. */
const FAILED_CONTINUE: NormalizedVerdict = { result: 'continue' };
const FAILED_TEMPFAIL: NormalizedVerdict = { result: 'tempfail' };
const REPLY = {
  continue: encodeReply({ kind: 'continue' }),
  accept: encodeReply({ kind: 'accept' }),
  skip: encodeReply({ kind: 'skip' }),
  progress: encodeReply({ kind: 'progress' }),
} as const;

/** Postfix's texts for a bare reject/tempfail, used when a verdict sets only part of the reply. */
const DEFAULT_TEXT = { reject: 'Command rejected', tempfail: 'Service unavailable - try again later' } as const;

/** Macro names as MilterSession.macro takes them: "i", "{rcpt_addr}". */
function macroName(name: string): string {
  const inner = name.startsWith('{') && name.endsWith('}') ? name.slice(1, -1) : name;
  return inner.length === 1 ? inner : `{${inner}}`;
}

/** "<a@b>" → "a@b", "<>" → "". */
function unbracket(addr: string): string {
  return addr.startsWith('<') && addr.endsWith('>') ? addr.slice(1, -1) : addr;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** f(v) now when v is a value, after it when a promise: the conversation stays synchronous while the filters are. */
function then<T, U>(v: T | Promise<T>, f: (t: T) => U | Promise<U>): U | Promise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

const more = (v: NormalizedVerdict | Promise<NormalizedVerdict>): Step | Promise<Step> => then(v, (): Step => 'more');

class Instance {
  readonly events: ReadonlySet<MilterEvent>;
  /** Accepted the connection (connect/helo): asked nothing more until QUIT_NC. */
  connectionAccepted = false;
  /** Accepted the message: asked nothing more until the next MAIL. */
  messageAccepted = false;
  /** Skipped the body: no more body chunks this message. */
  bodySkipped = false;
  constructor(readonly name: string, readonly filter: MilterFilter, readonly observes: ReadonlySet<MilterEvent> = new Set()) {
    this.events = eventsOf(filter);
  }

  get out(): boolean {
    return this.connectionAccepted || this.messageAccepted;
  }
}

/** A filter whose factory threw: every event it is asked about fails the same way, so on_filter_error applies at connect. */
function failedFilter(err: unknown): MilterFilter {
  return {
    connect: () => {
      throw err;
    },
  };
}

export class MilterConversation {
  private instances: Instance[] = [];
  private negotiated: { actions: number; protocol: number } | undefined;
  private readonly connMacros = new Map<string, string>();
  private readonly msgMacros = new Map<string, string>();
  private sender: string | undefined;
  private recipients: string[] = [];
  private inMessage = false;
  /** A refusal at connect/helo: repeated for whatever else the MTA sends on this SMTP session. */
  private refused: MilterReply | undefined;
  private closed = false;
  private readonly view: MilterSession;

  constructor(private readonly o: ConversationOptions) {
    const msg = this.msgMacros;
    const conn = this.connMacros;
    const envelope = (): { recipients: string[]; sender: string | undefined } => ({ recipients: this.recipients, sender: this.sender });
    this.view = {
      macro: (name) => msg.get(macroName(name)) ?? conn.get(macroName(name)),
      get recipients() {
        return envelope().recipients;
      },
      get sender() {
        return envelope().sender;
      },
    };
    this.createInstances();
  }

  private createInstances(): void {
    this.instances = this.o.filters.map((f) => {
      try {
        return new Instance(f.name, f.create(), f.observes);
      } catch (err) {
        this.o.log.error(`milter ${this.o.peer}: filter ${f.name} could not be created: ${describe(err)}`);
        return new Instance(f.name, failedFilter(err));
      }
    });
  }

  /**
   * One command from the MTA: the next step at once when every filter asked
   * answered at once (no promise, no turn of the event loop: the MTA waits
   * for each reply), else a promise of it. Never throws or rejects.
   */
  handle(cmd: MtaCommand): Step | Promise<Step> {
    if (cmd.kind === 'optneg') return this.optneg(cmd);
    if (this.negotiated === undefined) return { error: `${cmd.kind.toUpperCase()} before option negotiation` };
    switch (cmd.kind) {
      case 'macro':
        this.macros(cmd.stage, cmd.macros);
        return 'more';
      case 'connect': {
        const info: ConnectInfo = { hostname: cmd.hostname, family: cmd.family, address: cmd.address, port: cmd.port };
        return more(this.event('connect', (f) => f.connect?.(this.view, info)));
      }
      case 'helo':
        return more(this.event('helo', (f) => f.helo?.(this.view, cmd.name)));
      case 'mail': {
        this.newMessage();
        this.sender = unbracket(cmd.sender);
        return more(this.event('envfrom', (f) => f.envfrom?.(this.view, this.sender ?? '', cmd.args)));
      }
      case 'rcpt': {
        const rcpt = unbracket(cmd.recipient);
        return then(this.event('envrcpt', (f) => f.envrcpt?.(this.view, rcpt, cmd.args)), (v): Step => {
          if (v.result !== 'reject' && v.result !== 'tempfail') this.recipients.push(rcpt);
          return 'more';
        });
      }
      case 'data':
        return more(this.event('data', (f) => f.data?.(this.view)));
      case 'header': {
        const leadspc = ((this.negotiated.protocol & SMFIP.HDR_LEADSPC) !== 0) && cmd.value[0] === 0x20;
        const raw = leadspc ? cmd.value.subarray(1) : cmd.value;
        const value = raw.toString('latin1');
        return more(this.event('header', (f) => f.header?.(this.view, cmd.name, value, raw)));
      }
      case 'eoh':
        return more(this.event('eoh', (f) => f.eoh?.(this.view)));
      case 'body':
        return more(this.event('body', (f) => f.body?.(this.view, cmd.chunk)));
      case 'eob':
        // Sendmail may carry a last chunk here: it is body, answered by the eom reply.
        if (cmd.chunk.length > 0) return then(this.event('body', (f) => f.body?.(this.view, cmd.chunk), false), () => this.eom());
        return this.eom();
      case 'unknown':
        return more(this.event('unknown', (f) => f.unknown?.(this.view, cmd.command)));
      case 'abort':
        return this.abort().then((): Step => 'more');
      case 'quit':
        return this.end().then((): Step => 'quit');
      case 'quit_nc':
        return this.end().then((): Step => {
          this.closed = false;
          this.connMacros.clear();
          this.refused = undefined;
          this.createInstances();
          return 'more';
        });
    }
  }

  /** The connection is gone (or being closed): abort the message in progress, close every filter. Idempotent. */
  async end(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.inMessage) await this.abort();
    for (const i of this.instances) {
      if (i.filter.close === undefined) continue;
      await this.quietly(i, 'close', () => i.filter.close?.(this.view));
    }
  }

  private optneg(cmd: MtaCommand & { kind: 'optneg' }): Step {
    const events = new Set<string>();
    for (const i of this.instances) for (const e of i.events) events.add(e);
    // The session's sender and recipients are kept for every later event.
    const later: MilterEvent[] = ['data', 'header', 'eoh', 'body', 'eom', 'abort'];
    const envelope = this.instances.some((i) => later.some((e) => i.events.has(e)));
    const modify = this.instances.some((i) => i.events.has('eom'));
    // Events every filter handling them only observes: asked without a reply where the MTA allows it.
    const quiet = new Set([...events].filter((e) => this.instances.every((i) => !i.events.has(e as MilterEvent) || i.observes.has(e as MilterEvent))));
    const answer = negotiate(cmd, { events, envelope, modify, quiet });
    if (answer.kind === 'error') return { error: answer.reason };
    this.negotiated = { actions: answer.actions, protocol: answer.protocol };
    this.o.send(encodeReply(answer));
    return 'more';
  }

  private macros(stage: string, list: readonly (readonly [string, string])[]): void {
    const into = stage === 'C' || stage === 'H' ? this.connMacros : this.msgMacros;
    // A message's macros start at MAIL (its 'M' macros come just before it).
    if (stage === 'M') this.msgMacros.clear();
    for (const [name, value] of list) into.set(macroName(name), value);
  }

  private newMessage(): void {
    this.inMessage = true;
    this.sender = undefined;
    this.recipients = [];
    for (const i of this.instances) {
      i.messageAccepted = false;
      i.bodySkipped = false;
    }
  }

  private endMessage(): void {
    this.inMessage = false;
    for (const i of this.instances) i.bodySkipped = false;
  }

  private async abort(): Promise<void> {
    if (!this.inMessage) return;
    for (const i of this.instances) {
      if (i.out || i.filter.abort === undefined) continue;
      await this.quietly(i, 'abort', () => i.filter.abort?.(this.view));
    }
    this.endMessage();
    this.sender = undefined;
    this.recipients = [];
  }

  /** abort/close: no verdict; a failure is only logged. */
  private async quietly(i: Instance, what: string, fn: () => unknown): Promise<void> {
    try {
      await this.bounded(fn());
    } catch (err) {
      this.o.log.warn(`milter ${this.o.peer}: filter ${i.name} ${what} failed: ${describe(err)}`);
    }
  }

  /** A filter's answer within filterTimeoutMs; a promise that takes longer rejects. */
  private async bounded(r: unknown): Promise<unknown> {
    if (!(r instanceof Promise)) return r;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.o.filterTimeoutMs} ms (milter.filter_timeout)`)), this.o.filterTimeoutMs);
    });
    try {
      return await Promise.race([r, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** One filter's verdict for one event, its failure turned into on_filter_error; at once when the filter answered at once. */
  private ask(i: Instance, event: MilterEvent, fn: () => unknown): NormalizedVerdict | Promise<NormalizedVerdict> {
    let r: unknown;
    try {
      r = fn();
      if (!(r instanceof Promise)) return this.judge(i, event, r);
    } catch (err) {
      return this.failed(i, event, err);
    }
    return this.bounded(r).then((x) => this.judge(i, event, x)).catch((err: unknown) => this.failed(i, event, err));
  }

  /** A filter's answer as a verdict; throws what verdictOf refuses. */
  private judge(i: Instance, event: MilterEvent, answer: unknown): NormalizedVerdict {
    const v = verdictOf(answer);
    if (v.result === 'discard' && CONNECTION_EVENTS.has(event)) {
      // The MTA cannot discard a connection (Postfix logs "DISCARD action is not allowed").
      this.o.log.warn(`milter ${this.o.peer}: filter ${i.name} returned discard at ${event}, which applies to messages only; taken as continue`);
      return CONTINUE;
    }
    return v;
  }

  private failed(i: Instance, event: MilterEvent, err: unknown): NormalizedVerdict {
    this.o.log.error(`milter ${this.o.peer}: filter ${i.name} ${event} failed: ${describe(err)}; milter.on_filter_error is ${this.o.onFilterError}`);
    return this.o.onFilterError === 'tempfail' ? FAILED_TEMPFAIL : FAILED_CONTINUE;
  }

  /**
   * Asks every filter still in, in order, and answers the MTA (unless the
   * event was negotiated without a reply, or `reply` is false). The deciding
   * verdict is returned, at once when every filter asked answered at once.
   */
  private event(event: MilterEvent, call: (f: MilterFilter) => unknown, reply = true): NormalizedVerdict | Promise<NormalizedVerdict> {
    const noReply = !reply || ((this.negotiated?.protocol ?? 0) & (NO_REPLY[event] ?? 0)) !== 0;
    if (this.refused !== undefined) {
      if (!noReply) this.o.send(encodeReply(this.refused));
      return CONTINUE;
    }
    return this.eventFrom(0, event, call, noReply);
  }

  /** event() from the k-th filter on. */
  private eventFrom(k: number, event: MilterEvent, call: (f: MilterFilter) => unknown, noReply: boolean): NormalizedVerdict | Promise<NormalizedVerdict> {
    for (; k < this.instances.length; k++) {
      const i = this.instances[k] as Instance;
      if (i.out || !i.events.has(event)) continue;
      if (event === 'body' && i.bodySkipped) continue;
      const v = this.ask(i, event, () => call(i.filter));
      if (v instanceof Promise) {
        const next = k + 1;
        return v.then((got) => {
          const decided = this.take(i, event, got);
          return decided !== undefined ? this.answer(event, decided, noReply) : this.eventFrom(next, event, call, noReply);
        });
      }
      const decided = this.take(i, event, v);
      if (decided !== undefined) return this.answer(event, decided, noReply);
    }
    return this.answer(event, CONTINUE, noReply);
  }

  /** Applies one filter's verdict (accept and skip take it out); the verdict when it decides the event, else undefined. */
  private take(i: Instance, event: MilterEvent, v: NormalizedVerdict): NormalizedVerdict | undefined {
    if (v.result === 'accept') {
      if (CONNECTION_EVENTS.has(event)) i.connectionAccepted = true;
      else i.messageAccepted = true;
      return undefined;
    }
    if (v.result === 'skip') {
      if (event === 'body') i.bodySkipped = true;
      return undefined;
    }
    return v.result !== 'continue' ? v : undefined;
  }

  private answer(event: MilterEvent, decided: NormalizedVerdict, noReply: boolean): NormalizedVerdict {
    if (!noReply) this.o.send(this.replyFor(event, decided));
    return decided;
  }

  /** The packet that answers an event after its verdict. */
  private replyFor(event: MilterEvent, v: NormalizedVerdict): Buffer {
    if (v.result === 'reject' || v.result === 'tempfail') {
      const r = this.refusal(v);
      if (CONNECTION_EVENTS.has(event)) this.refused = r;
      return encodeReply(r);
    }
    if (v.result === 'discard') return encodeReply({ kind: 'discard' });
    if (this.instances.length > 0 && this.instances.every((i) => i.out)) return REPLY.accept;
    if (event === 'body' && ((this.negotiated?.protocol ?? 0) & SMFIP.SKIP) !== 0) {
      const readers = this.instances.filter((i) => !i.out && i.events.has('body'));
      if (readers.length > 0 && readers.every((i) => i.bodySkipped)) return REPLY.skip;
    }
    return REPLY.continue;
  }

  /** reject/tempfail as the MTA gets it: the bare reply, or SMFIR_REPLYCODE when the verdict set any part of the reply. */
  private refusal(v: NormalizedVerdict): MilterReply {
    const kind = v.result as 'reject' | 'tempfail';
    if (v.code === undefined && v.xcode === undefined && v.text === undefined) return { kind };
    const code = v.code ?? (kind === 'reject' ? '550' : '451');
    return { kind: 'replycode', text: formatReplyCode(code, v.xcode, v.text ?? DEFAULT_TEXT[kind]) };
  }

  /** End of message: each filter's eom with the modification helpers; modifications, then the final reply. */
  private eom(): Step | Promise<Step> {
    if (this.refused !== undefined) {
      this.o.send(encodeReply(this.refused));
      return 'more';
    }
    return this.eomFrom(0, []);
  }

  /** eom() from the k-th filter on, with the modifications made so far. */
  private eomFrom(k: number, mods: MilterReply[]): Step | Promise<Step> {
    for (; k < this.instances.length; k++) {
      const i = this.instances[k] as Instance;
      if (i.out || !i.events.has('eom')) continue;
      const before = mods.length;
      const s = this.eomSession(i, mods);
      const v = this.ask(i, 'eom', () => i.filter.eom?.(s.session));
      if (v instanceof Promise) {
        const next = k + 1;
        return v.then((got) => {
          const decided = this.eomTake(i, s.finish, got, mods, before);
          return decided !== undefined ? this.eomAnswer(decided, mods) : this.eomFrom(next, mods);
        });
      }
      const decided = this.eomTake(i, s.finish, v, mods, before);
      if (decided !== undefined) return this.eomAnswer(decided, mods);
    }
    return this.eomAnswer(CONTINUE, mods);
  }

  /** One filter's eom verdict applied; the verdict when it decides the message, else undefined. */
  private eomTake(i: Instance, finish: () => void, v: NormalizedVerdict, mods: MilterReply[], before: number): NormalizedVerdict | undefined {
    finish();
    // A filter that failed had no opinion (on_filter_error continue), half-made changes included.
    if (v === FAILED_CONTINUE) mods.length = before;
    if (v.result === 'accept') {
      i.messageAccepted = true;
      return undefined;
    }
    return v.result !== 'continue' && v.result !== 'skip' ? v : undefined;
  }

  private eomAnswer(decided: NormalizedVerdict, mods: readonly MilterReply[]): Step {
    // The modifications and the final reply in one write: one wake-up of the MTA instead of one per packet.
    const final = decided.result === 'continue' ? REPLY.accept : this.replyFor('eom', decided);
    const kept = decided.result === 'continue' || decided.result === 'accept' ? mods : [];
    this.o.send(kept.length === 0 ? final : Buffer.concat([...kept.map((m) => encodeReply(m)), final]));
    this.endMessage();
    return 'more';
  }

  /** The EomSession one filter gets; its helpers record modifications into `mods` until finish(). */
  private eomSession(i: Instance, mods: MilterReply[]): { session: EomSession; finish: () => void } {
    let open = true;
    const actions = this.negotiated?.actions ?? 0;
    const leadspc = ((this.negotiated?.protocol ?? 0) & SMFIP.HDR_LEADSPC) !== 0;
    const need = (flag: number, what: string): void => {
      if (!open) throw new TypeError(`filter ${i.name}: ${what} called after eom returned`);
      if ((actions & flag) === 0) throw new TypeError(`filter ${i.name}: ${what} is not allowed: the MTA did not grant it in option negotiation`);
    };
    const headerName = (name: string): string => {
      if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) throw new TypeError(`filter ${i.name}: header name ${JSON.stringify(name)} is not a valid field name`);
      return name;
    };
    const headerValue = (v: string | Buffer): Buffer => {
      const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
      if (b.includes(0)) throw new TypeError(`filter ${i.name}: header value contains a NUL byte`);
      // A line break must be a fold (followed by a space or tab): anything else would start a new header
      // of the value's choosing, and values often carry text from the message or the client.
      if (/\r(?!\n)|\n(?![ \t])/.test(b.toString('latin1'))) throw new TypeError(`filter ${i.name}: header value has a line break that is not folding (CRLF or LF followed by a space or tab)`);
      return leadspc ? Buffer.concat([Buffer.from(' '), b]) : b;
    };
    const address = (a: string, what: string): string => {
      if (/[\0\r\n]/.test(a)) throw new TypeError(`filter ${i.name}: ${what} contains NUL, CR or LF`);
      return a.startsWith('<') ? a : `<${a}>`;
    };
    const args = (a: string | undefined): string | undefined => {
      if (a !== undefined && /[\0\r\n]/.test(a)) throw new TypeError(`filter ${i.name}: ESMTP arguments contain NUL, CR or LF`);
      return a === undefined || a === '' ? undefined : a;
    };
    const session: EomSession = {
      macro: (name) => this.view.macro(name),
      recipients: this.view.recipients,
      sender: this.view.sender,
      addHeader: (name, value) => {
        need(SMFIF.ADDHDRS, 'addHeader');
        mods.push({ kind: 'addheader', name: headerName(name), value: headerValue(value) });
      },
      insertHeader: (index, name, value) => {
        need(SMFIF.ADDHDRS, 'insertHeader');
        if (!Number.isInteger(index) || index < 0) throw new TypeError(`filter ${i.name}: insertHeader index ${index} must be 0 or more`);
        mods.push({ kind: 'insheader', index, name: headerName(name), value: headerValue(value) });
      },
      changeHeader: (name, index, value) => {
        need(SMFIF.CHGHDRS, 'changeHeader');
        if (!Number.isInteger(index) || index < 1) throw new TypeError(`filter ${i.name}: changeHeader index ${index} must be 1 or more`);
        // An empty value deletes: no leading space for it.
        mods.push({ kind: 'chgheader', index, name: headerName(name), value: value === null ? Buffer.alloc(0) : headerValue(value) });
      },
      addRecipient: (addr, esmtp) => {
        const a = args(esmtp);
        if (a !== undefined) {
          need(SMFIF.ADDRCPT_PAR, 'addRecipient with ESMTP arguments');
          mods.push({ kind: 'addrcpt_par', recipient: address(addr, 'recipient'), args: a });
        } else {
          need(SMFIF.ADDRCPT, 'addRecipient');
          mods.push({ kind: 'addrcpt', recipient: address(addr, 'recipient') });
        }
      },
      deleteRecipient: (addr) => {
        need(SMFIF.DELRCPT, 'deleteRecipient');
        mods.push({ kind: 'delrcpt', recipient: address(addr, 'recipient') });
      },
      changeSender: (addr, esmtp) => {
        need(SMFIF.CHGFROM, 'changeSender');
        const a = args(esmtp);
        mods.push(a !== undefined ? { kind: 'chgfrom', sender: address(addr, 'sender'), args: a } : { kind: 'chgfrom', sender: address(addr, 'sender') });
      },
      replaceBody: (chunk) => {
        need(SMFIF.CHGBODY, 'replaceBody');
        const b = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
        for (let at = 0; at < b.length; at += MAX_CHUNK) mods.push({ kind: 'replbody', chunk: b.subarray(at, at + MAX_CHUNK) });
      },
      quarantine: (reason) => {
        need(SMFIF.QUARANTINE, 'quarantine');
        if (/[\0\r\n]/.test(reason)) throw new TypeError(`filter ${i.name}: quarantine reason contains NUL, CR or LF`);
        mods.push({ kind: 'quarantine', reason });
      },
      progress: () => {
        if (!open) throw new TypeError(`filter ${i.name}: progress called after eom returned`);
        // At once: the MTA restarts its timeout when it reads it.
        this.o.send(REPLY.progress);
      },
    };
    return { session, finish: () => { open = false; } };
  }
}
