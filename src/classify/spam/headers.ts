// The X-Spam-* header block added to an owner's copies (pure): SpamAssassin's
// own field names and forms, so that what users already filter on (a Sieve
// `header :is "X-Spam-Flag" "YES"`, a mail client's junk filter) works:
//
//   X-Spam-Flag: YES
//   X-Spam-Level: *******
//   X-Spam-Status: Yes, score=7.2 required=5.0 tests=BAYES_99,HTML_MESSAGE,
//   	URIBL_BLOCKED
//
// A message that was not checked gets `X-Spam-Status: unchecked (REASON)`
// alone. Lines end in LF (the message body is LF-normalised; the leaves write
// LF in Maildir and mbox). Folded at 78 columns between tests; a reason is
// cut to one line of printable ASCII so nothing a checker says can start a
// header of its own.
//
// Exports: spamHeaders, uncheckedHeader.

export interface HeaderVerdict {
  readonly isSpam: boolean;
  readonly score: number;
  readonly required: number;
  readonly tests: readonly string[];
}

const MAX_STARS = 50;
const WIDTH = 78;

const fixed = (n: number): string => (Math.round(n * 10) / 10).toFixed(1);

export function spamHeaders(v: HeaderVerdict): string {
  const stars = v.score >= 1 ? '*'.repeat(Math.min(MAX_STARS, Math.floor(v.score))) : '';
  const head = `X-Spam-Status: ${v.isSpam ? 'Yes' : 'No'}, score=${fixed(v.score)} required=${fixed(v.required)} tests=`;
  const named = v.tests.filter((t) => /^[A-Za-z0-9_]+$/.test(t));
  const tests = named.length === 0 ? ['none'] : named;
  let line = head;
  const lines: string[] = [];
  tests.forEach((t, i) => {
    const word = i < tests.length - 1 ? `${t},` : t;
    if (line.length + word.length > WIDTH && line !== head && line !== '\t') {
      lines.push(line);
      line = '\t';
    }
    line += word;
  });
  lines.push(line);
  return `X-Spam-Flag: ${v.isSpam ? 'YES' : 'NO'}\nX-Spam-Level: ${stars}\n${lines.join('\n')}\n`;
}

export function uncheckedHeader(reason: string): string {
  const clean = reason.replace(/[^\x20-\x7e]+/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
  return `X-Spam-Status: unchecked (${clean})\n`;
}
