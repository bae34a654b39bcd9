// Queue ids: 10+ upper-case hex digits, time-ordered like Postfix's long ids
// enough to sort by arrival, random enough to never collide between processes.
import { randomBytes } from 'node:crypto';

export function newQueueId(): string {
  const time = Date.now().toString(16).toUpperCase().padStart(11, '0');
  return `${time}${randomBytes(3).toString('hex').toUpperCase()}`;
}
