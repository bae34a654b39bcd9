// relay.smtp = "sendmail": each message is handed to the local MTA's
// sendmail program, `SENDMAIL -i -f SENDER -- RCPT…`, the message on its
// standard input — what Postfix's local(8) does for a forward. The program
// queues it (Postfix's postdrop), so a zero exit means the MTA has it.
//
// Exports: SendmailRelay.
//
// Failure contract: send() never rejects. Exit 0 → 2.0.0 for every
// recipient; a sysexits code → its status (75 temporary, 64–78 per meaning,
// others temporary); a program that cannot be started or is killed → 4.3.0;
// past the timeout it is killed and the recipients get 4.4.7. stderr's last
// line is in the text, for the log.
import { spawn } from 'node:child_process';
import { status, type Status } from '../mail/status.js';
import { statusFromExit, statusFromSignal } from '../mail/sysexits.js';
import type { OutboundMessage, Relay } from './smtp-relay.js';

export class SendmailRelay implements Relay {
  readonly where = 'sendmail';

  constructor(private readonly program: string, private readonly timeoutMs: number) {}

  async send(m: OutboundMessage): Promise<Status[]> {
    if (m.to.length === 0) return [];
    const s = await this.run(m);
    return m.to.map(() => s);
  }

  close(): void {
    // Nothing is kept open between messages.
  }

  private run(m: OutboundMessage): Promise<Status> {
    // A recipient or sender starting with "-" would be an option: "--" ends them, and -f takes its value whole.
    const argv = ['-i', '-f', m.from, '--', ...m.to];
    return new Promise<Status>((resolve) => {
      let stderr = '';
      let timedOut = false;
      const child = spawn(this.program, argv, { stdio: ['pipe', 'ignore', 'pipe'] });
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, this.timeoutMs);
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (d: string) => {
        stderr = (stderr + d).slice(-2000);
      });
      child.stdin.on('error', () => undefined); // EPIPE: the exit status tells what happened
      child.once('error', (err) => {
        clearTimeout(timer);
        resolve(status('4.3.0', `cannot run ${this.program}: ${err.message}`));
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        const said = stderr.trim().split('\n').pop() ?? '';
        const what = `${this.program}${said !== '' ? ` (${said})` : ''}`;
        if (timedOut) resolve(status('4.4.7', `${this.program} did not finish within ${Math.round(this.timeoutMs / 1000)} s`));
        else if (signal !== null) resolve(statusFromSignal(signal, what));
        else if (code === 0) resolve(status('2.0.0', `queued by ${this.program}`));
        else resolve(statusFromExit(code ?? 75, what, 'temporary'));
      });
      child.stdin.end(m.raw);
    });
  }
}
