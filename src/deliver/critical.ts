// Writes that must not be cut in half by the worker's own exit. An mbox
// append is one: a worker that exits between the first and the last byte
// leaves half a message that the next append runs into (no truncate-back runs
// after process.exit). The worker's SIGTERM (the end of the shutdown grace)
// and 'disconnect' handlers wait for the sections in progress before they
// exit, and no new section starts once an exit is under way. A SIGKILL still
// cuts anything — the pool sends it 2 s after SIGTERM, far longer than an
// append of a message that was read into memory.
//
// Exports: critical(work), exitWhenSafe(code). Never throws but for work's own
// errors; critical() refuses (throws) once an exit is under way.
let active = 0;
let exiting: number | undefined;

/** Runs `work` as a section the process does not exit in the middle of. */
export async function critical<T>(work: () => Promise<T>): Promise<T> {
  if (exiting !== undefined) throw Object.assign(new Error('the worker is exiting'), { code: 'ESHUTDOWN' });
  active++;
  try {
    return await work();
  } finally {
    active--;
    if (active === 0 && exiting !== undefined) process.exit(exiting);
  }
}

/** process.exit(code) now, or as soon as the sections in progress have finished. */
export function exitWhenSafe(code: number): void {
  exiting ??= code;
  if (active === 0) process.exit(exiting);
}
