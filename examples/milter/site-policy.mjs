// site-policy.mjs — an example milter filter for mailprocd: a site's house
// rules, applied before Postfix queues a message.
//
//   * refuses mail to addresses that never receive any (noreply@…), at RCPT,
//     with 550 5.1.1 — the sender's server bounces, we never do;
//   * refuses a message from outside without exactly one From: header (550
//     5.7.1): two From headers are a known way to show one sender to the
//     reader and another to DMARC (local programs' mail, cron's for one, is
//     left to Postfix, which adds a missing From);
//   * on mail from outside the internal networks: tags the Subject with
//     "[EXTERNAL]" and appends a short warning to plain-text bodies;
//   * refuses a message from outside with an executable attachment (.exe,
//     .js, …) with 550 5.7.1 at the end of the message; from inside, puts it
//     on hold in Postfix's hold queue (`postqueue -p` shows it, `postsuper -H`
//     releases it) and says why in a header;
//   * sends a copy of every message to an archive address, and delivers mail
//     for retired addresses to their successors;
//   * stamps every message with an X-Site-Policy header (what was decided, the
//     body's SHA-256) so that a user can see the filter saw it, after
//     deleting any X-Site-Policy headers the sender wrote himself.
//
// Load it (mailprocd.yaml), then restart mailprocd:
//
//   milter:
//     filters: [/etc/mailprocd/filters/site-policy.mjs]
//     filter_timeout: 10s        # one call longer than this is a failure
//     on_filter_error: tempfail  # then: 451 4.7.1, the client retries
//
// and in Postfix's main.cf (docs/milter.md: sockets, milter_default_action):
//
//   smtpd_milters = unix:private/mailprocd-milter
//   milter_default_action = tempfail
//
// The API, every method and action: docs/milter-api.md.
//
// A filter module's default export is a factory: mailprocd calls it once per
// MTA connection, so the variables in it are that connection's state. Each
// method gets the session (macros, sender, recipients) and the event's data,
// and returns a verdict or nothing (= continue). Modifications are made in
// eom only. console.log lines go to mailprocd's log, prefixed with the
// filter's name.
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';

/* global console */

// ---- The settings: edit these. ---------------------------------------------

/** Clients whose address starts with one of these are internal (no tag, no warning). */
const INTERNAL = ['127.', '::1', '10.', '192.168.', 'unix:'];
/** Recipients that never receive mail (compared without case). */
const REFUSE = ['noreply@example.test', 'no-reply@example.test'];
/** Every message gets a copy here; '' for none. */
const ARCHIVE = 'archive@example.test';
/** Retired address → the one that receives its mail now (lower case). A Map: a recipient named "constructor" finds nothing. */
const RETIRED = new Map([['old-sales@example.test', 'sales@example.test']]);
const TAG = '[EXTERNAL]';
const WARNING = 'This message came from outside example.test. Do not open links or attachments you did not expect.';
/** Attachment file name extensions refused from outside and held from inside. */
const HOLD_EXTENSIONS = ['exe', 'scr', 'com', 'pif', 'bat', 'cmd', 'js', 'jse', 'vbs', 'wsf', 'jar', 'msi', 'hta'];
/**
 * Body bytes kept to append the warning to; a longer body is left as it is.
 * Per connection in progress: the worker holds this for every one at once.
 */
const MAX_KEEP = 256 * 1024;

// ---- The filter. ---------------------------------------------------------

// filename="invoice.exe", name=run.js, filename*=…: the last extension counts.
// The name is bounded ({0,200}) so that a hostile body full of "name=" cannot
// make the match quadratic (and the filter slow enough to time out).
const ATTACHMENT = new RegExp(`\\b(?:file)?name\\*?=\\s*"?([^";\\r\\n]{0,200}\\.(?:${HOLD_EXTENSIONS.join('|')}))"?\\s*(?:;|\\r?\\n)`, 'i');

export default function sitePolicy() {
  // State of this connection; reset per message in envfrom (one connection may carry several).
  let external = true;
  const newMessage = () => ({ fromCount: 0, forged: { 'x-site-policy': 0, 'x-site-policy-hold': 0 }, subject: undefined, textPlain: true, body: [], kept: 0, tail: '', hash: createHash('sha256'), hold: undefined });
  let message = newMessage();

  return {
    connect(_s, info) {
      const where = info.family === 'unix' ? `unix:${info.address}` : info.address;
      external = !INTERNAL.some((prefix) => where.startsWith(prefix));
    },

    envfrom() {
      message = newMessage();
    },

    envrcpt(_s, recipient) {
      if (REFUSE.includes(recipient.toLowerCase())) {
        return { result: 'reject', code: '550', xcode: '5.1.1', text: `<${recipient}> does not receive mail` };
      }
      return 'continue';
    },

    header(_s, name, value) {
      const n = name.toLowerCase();
      if (n === 'from') message.fromCount++;
      else if (n === 'x-site-policy' || n === 'x-site-policy-hold') message.forged[n]++;
      // value is the header's bytes read as latin1 (one char per byte): prefixing the
      // tag and writing it back as latin1 keeps a UTF-8 or encoded-word Subject intact.
      else if (n === 'subject' && message.subject === undefined) message.subject = value.replace(/^[ \t]+/, '');
      // Only a single plain-text part, not base64 or quoted-printable, gets the warning appended.
      else if (n === 'content-type' && !/^\s*text\/plain\b/i.test(value)) message.textPlain = false;
      else if (n === 'content-transfer-encoding' && !/^\s*(7bit|8bit)\s*$/i.test(value)) message.textPlain = false;
    },

    eoh() {
      if (external && message.fromCount !== 1) {
        return { result: 'reject', code: '550', xcode: '5.7.1', text: `The message has ${message.fromCount} From: header fields; exactly one is required (RFC 5322)` };
      }
      return 'continue';
    },

    body(_s, chunk) {
      message.hash.update(chunk);
      if (message.kept + chunk.length <= MAX_KEEP) message.body.push(chunk);
      message.kept += chunk.length;
      // Attachment names may straddle two chunks: look at the end of the last one too.
      const text = message.tail + chunk.toString('latin1');
      const m = ATTACHMENT.exec(text);
      // The name goes into a reply, a header and the log: printable ASCII only (no NUL, no 8-bit).
      if (m !== null && message.hold === undefined) message.hold = m[1].replace(/[^\x20-\x7e]/g, '?');
      message.tail = text.slice(-300);
    },

    eom(s) {
      const decided = [];
      if (message.hold !== undefined && external) {
        return { result: 'reject', code: '550', xcode: '5.7.1', text: `Executable attachments (${message.hold}) are not accepted here` };
      }
      // Ours are the only ones: the sender's go first, last to first, before ours are added,
      // so that no index can point at a header this filter added.
      for (const [name, count] of [['X-Site-Policy', message.forged['x-site-policy']], ['X-Site-Policy-Hold', message.forged['x-site-policy-hold']]]) {
        for (let i = count; i >= 1; i--) s.changeHeader(name, i, null);
      }
      if (message.hold !== undefined) {
        s.quarantine(`executable attachment ${message.hold}`);
        s.addHeader('X-Site-Policy-Hold', `executable attachment ${message.hold}`);
        decided.push('held');
        console.log(`holding a message from <${s.sender}>: executable attachment ${message.hold}`);
      }
      if (external) {
        const subject = message.subject ?? '';
        if (!subject.startsWith(TAG)) {
          if (message.subject === undefined) s.addHeader('Subject', TAG);
          else s.changeHeader('Subject', 1, Buffer.from(`${TAG} ${subject}`, 'latin1'));
          decided.push('tagged');
        }
        if (message.textPlain && message.kept <= MAX_KEEP) {
          s.replaceBody(Buffer.concat([...message.body, Buffer.from(`\r\n-- \r\n${WARNING}\r\n`)]));
          decided.push('warned');
        }
      }
      for (const rcpt of s.recipients) {
        const successor = RETIRED.get(rcpt.toLowerCase());
        if (successor !== undefined) {
          s.deleteRecipient(rcpt);
          s.addRecipient(successor);
          decided.push(`${rcpt}->${successor}`);
        }
      }
      if (ARCHIVE !== '' && !s.recipients.includes(ARCHIVE)) s.addRecipient(ARCHIVE);
      // First, as a trace header is: it says what happened before any other filter or MTA added theirs.
      s.insertHeader(0, 'X-Site-Policy', `${external ? 'external' : 'internal'}; ${decided.join(', ') || 'unchanged'}; body-sha256=${message.hash.digest('hex')}`);
      return 'continue';
    },
  };
}
