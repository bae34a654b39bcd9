// A delivery the test holds: a pipe destination that records that it has
// started (its pid, one line per delivery), then waits until the test opens
// its gate, then appends the message to a file the test reads. "Still running
// when the window closes / when SIGTERM arrives / when the worker is killed"
// is then certain, whatever the machine's load, instead of a guess made with
// `sleep 1.5` against a timer. A gate nobody opens gives up after 120 s
// (exit 75, temporary) so no test run is left with a stuck process.
//
// The script lives in <dir>/gates (mode 1777, like /tmp) so the delivery
// user (nobody, or a test user) can write its markers there.
import { appendFileSync, chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './wait.js';

const SCRIPT = `#!/bin/sh
# $1: the gate's name. Started → $1.started; waits for $1.open; the message → $1.out.
d=$(dirname "$0")
echo $$ >> "$d/$1.started"
n=0
while [ ! -e "$d/$1.open" ]; do
  n=$((n + 1))
  if [ $n -gt 2400 ]; then exit 75; fi
  sleep 0.05
done
cat >> "$d/$1.out"
`;

export interface Gate {
  /** The rule's destination for deliveries held at this gate, e.g. `slow@x  ${gate.destination}`. */
  readonly destination: string;
  /** Waits until at least n deliveries have reached the gate; their pids. */
  started(n?: number, timeoutMs?: number): Promise<number[]>;
  /** How many deliveries have reached the gate so far. */
  readonly startedCount: number;
  /** Lets every held delivery (and every later one) through. */
  open(): void;
  /** What the deliveries let through wrote ("" before). */
  output(): string;
  /**
   * SIGKILLs the held deliveries by the pids they recorded (each is its own
   * process group: the pipe leaf starts commands detached). For a test that
   * killed the worker under them: nobody else ends an orphaned command.
   */
  kill(): void;
}

/** Gates in <dir>/gates; dir must exist and be reachable by the delivery user (makeTestDir's is). */
export function makeGates(dir: string): (name: string) => Gate {
  const gates = join(dir, 'gates');
  mkdirSync(gates, { recursive: true });
  chmodSync(gates, 0o1777);
  const script = join(gates, 'gate.sh');
  writeFileSync(script, SCRIPT, { mode: 0o755 });
  chmodSync(script, 0o755);
  return (name) => {
    if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`gate name ${name}: lower-case letters, digits and "-" only`);
    const file = (ext: string): string => join(gates, `${name}.${ext}`);
    const pids = (): number[] => (existsSync(file('started')) ? readFileSync(file('started'), 'utf8').split('\n').filter(Boolean).map(Number) : []);
    return {
      destination: `pipe:"/bin/sh ${script} ${name}"`,
      started: (n = 1, timeoutMs = 30_000) => waitFor(`${n} deliveries at gate ${name}`, () => {
        const p = pids();
        return p.length >= n ? p : undefined;
      }, timeoutMs),
      get startedCount() {
        return pids().length;
      },
      open: () => appendFileSync(file('open'), ''),
      output: () => (existsSync(file('out')) ? readFileSync(file('out'), 'utf8') : ''),
      kill: () => {
        for (const pid of pids()) {
          try {
            process.kill(-pid, 'SIGKILL');
          } catch {
            // gone already
          }
        }
      },
    };
  };
}
