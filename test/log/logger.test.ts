// The log line formats, table-driven: the journal's form (a syslog priority,
// no time, no name) and the plain one (time, name[pid]), text and JSON.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger, type Level } from '../../src/log.js';

function capture(format: 'text' | 'json', journal: boolean): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger({ format, level: 'debug', journal, write: (l) => lines.push(l) }) };
}

test('on the journal each line starts with its syslog priority and has no time or name of ours', () => {
  const cases: { level: Level; want: string }[] = [
    { level: 'error', want: '<3>error: broken\n' },
    { level: 'warn', want: '<4>warn: broken\n' },
    { level: 'info', want: '<6>broken\n' },
    { level: 'debug', want: '<7>debug: broken\n' },
  ];
  for (const c of cases) {
    const { lines, log } = capture('text', true);
    log.log(c.level, 'broken');
    assert.deepEqual(lines, [c.want], c.level);
  }
});

test('on the journal a delivery line keeps the Postfix fields after the priority', () => {
  const { lines, log } = capture('text', true);
  log.info('Saved', { to: 'alice@example.test', relay: 'maildir', dsn: '2.0.0', status: 'sent' }, '4F2A');
  assert.deepEqual(lines, ['<6>4F2A: to=<alice@example.test>, relay=maildir, dsn=2.0.0, status=sent (Saved)\n']);
});

test('on the journal every line of a multi-line message keeps the priority', () => {
  const { lines, log } = capture('text', true);
  log.error('two problems:\n  a: bad\n  b: bad');
  assert.deepEqual(lines, ['<3>error: two problems:\n<3>  a: bad\n<3>  b: bad\n']);
});

test('off the journal a line starts with the time and the process name and pid', () => {
  const { lines, log } = capture('text', false);
  log.warn('broken');
  assert.match(lines[0] ?? '', new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z mailprocd\\[${process.pid}\\]: warn: broken\\n$`));
});

test('a JSON line is one object, behind the priority on the journal', () => {
  for (const journal of [false, true]) {
    const { lines, log } = capture('json', journal);
    log.warn('two\nlines', { to: 'a@b.test', n: 1 }, 'ID');
    assert.equal(lines.length, 1);
    const line = lines[0] ?? '';
    assert.ok(line.endsWith('\n') && !line.slice(0, -1).includes('\n'), 'one line');
    const body = journal ? line.replace(/^<4>/, '') : line;
    assert.equal(journal, body !== line, 'the priority is there on the journal only');
    const o = JSON.parse(body) as Record<string, unknown>;
    assert.deepEqual({ level: o.level, id: o.id, message: o.message, to: o.to, n: o.n }, { level: 'warn', id: 'ID', message: 'two\nlines', to: 'a@b.test', n: 1 });
  }
});

test('a JSON field named like an envelope key is kept beside it, not written over it', () => {
  const { lines, log } = capture('json', false);
  log.debug('started worker', { pid: 1, uid: 2 });
  const o = JSON.parse(lines[0] ?? '') as Record<string, unknown>;
  assert.deepEqual({ pid: o.pid, field_pid: o.field_pid, uid: o.uid }, { pid: process.pid, field_pid: 1, uid: 2 });
});
