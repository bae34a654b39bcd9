// Shared round trips to a state engine whose connections serve one statement
// at a time (PostgreSQL through node-postgres): at most `slots` statements
// are in flight; calls that arrive while every slot is busy wait in their
// lane, and when a slot frees, all the calls waiting in the lane that has
// waited longest go out together as one statement (up to `maxBatch`). Under
// light load a call is sent at once, alone, as before; under load, where
// one round trip per call would keep every engine connection busy with
// per-statement overhead, the waiting calls share one — the engine does the
// same work with far fewer round trips, commits and context switches.
//
// Each call's own answer comes from its lane's `send`, which takes the args
// in arrival order and must resolve with one result per arg in that order;
// a send that rejects (or answers with the wrong count) rejects every call
// in that batch with its error. What a batch means for the engine —
// atomicity, lock order — is the lane's business (postgres.ts).
//
// Exports: RoundTrips. Pure scheduling: no timers, no I/O of its own; the
// deadline of a call is its caller's (engine-guard.ts wraps each call).

interface Waiting<A, R> {
  readonly arg: A;
  readonly seq: number;
  resolve(r: R): void;
  reject(err: unknown): void;
}

interface Lane<A, R> {
  readonly send: (args: readonly A[]) => Promise<readonly R[]>;
  readonly maxBatch: number;
  readonly queue: Waiting<A, R>[];
}

export class RoundTrips {
  private inFlight = 0;
  private seq = 0;
  // Each lane has its own argument and result types; the scheduler never looks inside them.
  private readonly lanes: Lane<unknown, unknown>[] = [];

  constructor(private readonly slots: number) {
    if (!Number.isInteger(slots) || slots < 1) throw new RangeError(`round trip slots must be a positive integer, got ${slots}`);
  }

  /** Statements in flight now (tests, status). */
  get busy(): number {
    return this.inFlight;
  }

  /** A lane: the returned function sends its arg, alone or batched with others of this lane. */
  lane<A, R>(send: (args: readonly A[]) => Promise<readonly R[]>, maxBatch = 64): (arg: A) => Promise<R> {
    const lane: Lane<A, R> = { send, maxBatch: Math.max(1, maxBatch), queue: [] };
    this.lanes.push(lane as unknown as Lane<unknown, unknown>);
    return (arg) => new Promise<R>((resolve, reject) => {
      lane.queue.push({ arg, seq: this.seq++, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.slots) {
      let next: Lane<unknown, unknown> | undefined;
      for (const l of this.lanes) {
        const head = l.queue[0];
        if (head !== undefined && (next === undefined || head.seq < (next.queue[0] as Waiting<unknown, unknown>).seq)) next = l;
      }
      if (next === undefined) return;
      this.dispatch(next, next.queue.splice(0, next.maxBatch));
    }
  }

  private dispatch(lane: Lane<unknown, unknown>, batch: Waiting<unknown, unknown>[]): void {
    this.inFlight++;
    let sent: Promise<readonly unknown[]>;
    try {
      sent = lane.send(batch.map((w) => w.arg));
    } catch (err) {
      sent = Promise.reject(err);
    }
    sent.then(
      (results) => {
        if (results.length !== batch.length) {
          const err = new Error(`state engine answered ${results.length} results for ${batch.length} calls`);
          for (const w of batch) w.reject(err);
          return;
        }
        batch.forEach((w, i) => w.resolve(results[i]));
      },
      (err: unknown) => {
        for (const w of batch) w.reject(err);
      },
    ).finally(() => {
      this.inFlight--;
      this.pump();
    });
  }
}
