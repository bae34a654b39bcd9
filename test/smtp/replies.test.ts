// The one Status → SMTP/LMTP reply mapping (src/smtp/replies.ts): the reply
// number for each enhanced code, the class defaults, an explicit number
// winning, the reply text, the error / string smtp-server is handed, and what
// a client may read of a failure (no paths: clientStatus, outcomeReply).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status, type EnhancedCode } from '../../src/mail/status.js';
import { clientStatus, dataResult, outcomeReply, replyError, replyNumber, replyText } from '../../src/smtp/replies.js';

const numbers: { name: string; code: EnhancedCode; reply?: number; want: number }[] = [
  { name: 'a full mailbox for now (4.2.2) is 452', code: '4.2.2', want: 452 },
  { name: 'a full mail system (4.3.1) is 452', code: '4.3.1', want: 452 },
  { name: 'too many recipients (4.5.3) is 452', code: '4.5.3', want: 452 },
  { name: 'a full mailbox for good (5.2.2) is 552', code: '5.2.2', want: 552 },
  { name: 'a message over the administrative limit (5.2.3) is 552', code: '5.2.3', want: 552 },
  { name: 'a message too big for the system (5.3.4) is 552', code: '5.3.4', want: 552 },
  { name: 'a routing loop (5.4.6) is 554', code: '5.4.6', want: 554 },
  { name: 'success (2.0.0) defaults to 250', code: '2.0.0', want: 250 },
  { name: 'any other 2.x.x (2.1.5) defaults to 250', code: '2.1.5', want: 250 },
  { name: 'a temporary failure (4.0.0) defaults to 451', code: '4.0.0', want: 451 },
  { name: 'any other 4.x.x (4.2.0) defaults to 451', code: '4.2.0', want: 451 },
  { name: 'a 4.x.x that shares a subject with a table row (4.2.3) still defaults to 451', code: '4.2.3', want: 451 },
  { name: 'a permanent failure (5.0.0) defaults to 550', code: '5.0.0', want: 550 },
  { name: 'an unknown user (5.1.1) defaults to 550', code: '5.1.1', want: 550 },
  { name: 'a policy refusal (5.7.1) defaults to 550', code: '5.7.1', want: 550 },
  { name: 'a three-digit detail (5.7.100) defaults to 550', code: '5.7.100', want: 550 },
  { name: 'an explicit reply number wins over the table', code: '5.2.3', reply: 554, want: 554 },
  { name: 'an explicit reply number wins over the class default', code: '4.4.2', reply: 421, want: 421 },
  { name: 'an explicit reply number equal to the default is kept', code: '5.2.3', reply: 552, want: 552 },
];

for (const c of numbers) {
  test(`replyNumber: ${c.name}`, () => {
    assert.equal(replyNumber(status(c.code, 'text', c.reply)), c.want);
  });
}

const texts: { name: string; code: EnhancedCode; text: string; want: string }[] = [
  { name: 'the reply text is the enhanced code, a space and the text', code: '5.1.1', text: '<bob@example.test>: unknown user', want: '5.1.1 <bob@example.test>: unknown user' },
  { name: 'a success text starts with its code too', code: '2.0.0', text: 'Delivered', want: '2.0.0 Delivered' },
  { name: 'line breaks in the text never reach the reply', code: '4.2.0', text: 'first\r\nsecond\nthird', want: '4.2.0 first second third' },
  { name: 'an empty text still gives the code and a space', code: '5.7.1', text: '', want: '5.7.1 ' },
];

for (const c of texts) {
  test(`replyText: ${c.name}`, () => {
    assert.equal(replyText(status(c.code, c.text)), c.want);
  });
}

const errors: { name: string; code: EnhancedCode; text: string; reply?: number; want: { responseCode: number; message: string } }[] = [
  { name: 'a permanent refusal carries 550 and "5.7.1 text"', code: '5.7.1', text: 'Not here', want: { responseCode: 550, message: '5.7.1 Not here' } },
  { name: 'a size refusal carries 552 and its own 5.2.3 code', code: '5.2.3', text: 'Message too large', want: { responseCode: 552, message: '5.2.3 Message too large' } },
  { name: 'a temporary failure carries 451', code: '4.3.0', text: 'Try later', want: { responseCode: 451, message: '4.3.0 Try later' } },
  { name: 'an explicit reply number is the response code', code: '4.4.2', text: 'Timeout', reply: 421, want: { responseCode: 421, message: '4.4.2 Timeout' } },
];

for (const c of errors) {
  test(`replyError: ${c.name}`, () => {
    const err = replyError(status(c.code, c.text, c.reply));
    assert.ok(err instanceof Error);
    assert.deepEqual({ responseCode: err.responseCode, message: err.message }, c.want);
  });
}

const results: { name: string; code: EnhancedCode; text: string; want: string | { responseCode: number; message: string } }[] = [
  { name: 'a 2.x.x status is the reply text as a string', code: '2.0.0', text: 'Delivered', want: '2.0.0 Delivered' },
  { name: 'another 2.x.x status is a string as well', code: '2.1.5', text: 'OK', want: '2.1.5 OK' },
  { name: 'a 4.x.x status is an error with its reply number', code: '4.2.2', text: 'Mailbox full', want: { responseCode: 452, message: '4.2.2 Mailbox full' } },
  { name: 'a 5.x.x status is an error with its reply number', code: '5.4.6', text: 'Loop', want: { responseCode: 554, message: '5.4.6 Loop' } },
];

for (const c of results) {
  test(`dataResult: ${c.name}`, () => {
    const got = dataResult(status(c.code, c.text));
    if (typeof c.want === 'string') {
      assert.equal(got, c.want);
      return;
    }
    assert.ok(got instanceof Error, `expected an Error, got ${JSON.stringify(got)}`);
    assert.deepEqual({ responseCode: got.responseCode, message: got.message }, c.want);
  });
}

const clientTexts: { name: string; code: EnhancedCode; reply?: number; want: string; wantReply: number }[] = [
  { name: 'a locked mailbox (4.2.0) says the mailbox is unavailable, for now', code: '4.2.0', want: 'Mailbox unavailable, try again later', wantReply: 451 },
  { name: 'a full mailbox for now (4.2.2) keeps 452', code: '4.2.2', want: 'Mailbox full, try again later', wantReply: 452 },
  { name: 'a full mailbox for good (5.2.2) keeps 552', code: '5.2.2', want: 'Mailbox full', wantReply: 552 },
  { name: 'a local error (4.3.0)', code: '4.3.0', want: 'Mail system error, try again later', wantReply: 451 },
  { name: 'a full disk (4.3.1) keeps 452', code: '4.3.1', want: 'Mail system full, try again later', wantReply: 452 },
  { name: 'a configuration problem (4.3.5)', code: '4.3.5', want: 'System incorrectly configured, try again later', wantReply: 451 },
  { name: 'a refused mailbox (5.2.0)', code: '5.2.0', want: 'Mailbox unavailable', wantReply: 550 },
  { name: 'a detail not in the table falls back to its subject (5.2.9)', code: '5.2.9', want: 'Mailbox status', wantReply: 550 },
  { name: 'a pipe\'s 5.7.x refusal', code: '5.7.1', want: 'Security or policy status', wantReply: 550 },
  { name: 'an explicit reply number is kept', code: '4.4.2', reply: 421, want: 'Network and routing status, try again later', wantReply: 421 },
];
for (const c of clientTexts) {
  test(`clientStatus: ${c.name}`, () => {
    const got = clientStatus(status(c.code, 'cannot open mailbox /var/mail/bob/mbox: Permission denied', c.reply));
    assert.deepEqual({ code: got.code, text: got.text, reply: replyNumber(got) }, { code: c.code, text: c.want, reply: c.wantReply });
  });
}

test('clientStatus leaves a success as it is', () => {
  const s = status('2.0.0', 'Saved');
  assert.equal(clientStatus(s), s);
});

const outcomes: { name: string; status: ReturnType<typeof status>; detail?: string; want: string }[] = [
  { name: 'a leaf\'s failure (with detail) is sent with the code\'s standard text', status: status('4.2.0', 'mailbox /home/bob/mbox is locked'), detail: 'mailbox /home/bob/mbox is locked', want: '4.2.0 Mailbox unavailable, try again later' },
  { name: 'a rule\'s own reject text (no detail) is sent as it is', status: status('5.7.1', 'No mail from your domain, says bob'), want: '5.7.1 No mail from your domain, says bob' },
  { name: 'our loop refusal (no detail) is sent as it is', status: status('5.4.6', 'mail forwarding loop for bob@example.test'), want: '5.4.6 mail forwarding loop for bob@example.test' },
  { name: 'a success keeps its own text; the detail is for the log', status: status('2.0.0', 'Saved'), detail: '/home/bob/Maildir/new/123.x', want: '2.0.0 Saved' },
];
for (const c of outcomes) {
  test(`outcomeReply: ${c.name}`, () => {
    assert.equal(replyText(outcomeReply({ status: c.status, ...(c.detail !== undefined ? { detail: c.detail } : {}) })), c.want);
  });
}
