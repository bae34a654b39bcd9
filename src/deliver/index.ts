// Public surface of the delivery leaves: one function per destination kind,
// each taking a MessageCopy and returning one Delivery (a Status and the file
// written), never throwing for I/O. Callers run them as the recipient's user.
export type { Delivery, MessageCopy } from './types.js';
export { deliverMaildir, type MaildirOptions } from './maildir.js';
export { deliverMbox, type MboxOptions } from './mbox.js';
export { deliverPipe, type PipeOptions } from './pipe.js';
// fsync of a directory, for the master's per-user directories under the mail root (workers/mail-root.ts).
export { syncDirectory } from './fs-helpers.js';
