// The fair scheduler: one FIFO per user (delivery identity), a cap on how
// many of a user's deliveries run at once, a global cap, and round robin
// across the users that have work. A user with a thousand messages behind a
// slow filter occupies only their own slots; everyone else's next message
// starts as soon as any slot is free. Pure bookkeeping, no I/O: a task is a
// function returning a promise; it is started when a slot is free and its
// slot is released when the promise settles (a rejection is the caller's bug
// and is passed to onError, never lost).

export interface SchedulerLimits {
  /** Most tasks of one key running at once. */
  readonly perKey: (key: string) => number;
  /** Most tasks running at once overall. */
  readonly global: number;
}

type Task = () => Promise<void>;

export class FairScheduler {
  private readonly queues = new Map<string, Task[]>();
  private readonly running = new Map<string, number>();
  /** Keys with queued tasks, in the order they get their next turn. */
  private ring: string[] = [];
  private total = 0;

  constructor(private readonly limits: SchedulerLimits, private readonly onError: (err: unknown) => void = () => undefined) {}

  submit(key: string, task: Task): void {
    const q = this.queues.get(key);
    if (q) q.push(task);
    else {
      this.queues.set(key, [task]);
      this.ring.push(key);
    }
    this.pump();
  }

  /** Queued (not yet started) tasks of a key, or of all keys. */
  queued(key?: string): number {
    if (key !== undefined) return this.queues.get(key)?.length ?? 0;
    let n = 0;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }

  /** Per key with work: queued and running tasks. */
  snapshot(): { key: string; queued: number; active: number }[] {
    const keys = new Set([...this.queues.keys(), ...this.running.keys()]);
    return [...keys].sort().map((key) => ({ key, queued: this.queues.get(key)?.length ?? 0, active: this.running.get(key) ?? 0 }));
  }

  active(key?: string): number {
    return key === undefined ? this.total : this.running.get(key) ?? 0;
  }

  private pump(): void {
    while (this.total < this.limits.global) {
      const i = this.ring.findIndex((k) => (this.running.get(k) ?? 0) < this.limits.perKey(k));
      if (i < 0) return;
      const key = this.ring[i] as string;
      const q = this.queues.get(key) as Task[];
      const task = q.shift() as Task;
      // Round robin: the key that just got a slot goes to the back of the line.
      this.ring.splice(i, 1);
      if (q.length > 0) this.ring.push(key);
      else this.queues.delete(key);
      this.running.set(key, (this.running.get(key) ?? 0) + 1);
      this.total++;
      void task().catch(this.onError).finally(() => {
        const n = (this.running.get(key) ?? 1) - 1;
        if (n === 0) this.running.delete(key);
        else this.running.set(key, n);
        this.total--;
        this.pump();
      });
    }
  }
}
