// Polling for what a test waits on (a delivery by the queue, a spool emptied,
// a log line's effect): the probe's value once it is not undefined, or an
// error naming what did not happen within the time.

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
  diagnose: () => string = () => '',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${diagnose()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
