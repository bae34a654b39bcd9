// The errno → Status table: each row's class and code, the texts that name the
// operation and the path, and the fallbacks for errors it cannot classify.
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { test } from 'node:test';
import { errnoError, statusFromError } from '../../src/mail/errno.js';

const sysErr = (code: string, errno?: number): NodeJS.ErrnoException =>
  Object.assign(new Error(`${code}: something, open '/x'`), errno === undefined ? { code } : { code, errno });

const uid = process.getuid?.() ?? 0;

const cases: { name: string; err: unknown; code: string; reply?: number; text: string | RegExp }[] = [
  { name: 'EAGAIN is a temporary lock problem', err: sysErr('EAGAIN'), code: '4.2.0', text: /^op \/p: Resource temporarily unavailable \[EAGAIN\]$/ },
  { name: 'EWOULDBLOCK is the same', err: sysErr('EWOULDBLOCK'), code: '4.2.0', text: /^op \/p: / },
  { name: 'ESTALE is temporary', err: sysErr('ESTALE'), code: '4.2.0', text: 'op /p: Stale file handle [ESTALE]' },
  { name: 'ESTALE known only by number is still ESTALE', err: { code: 'Unknown system error -116', errno: -116 }, code: '4.2.0', text: 'op /p: Stale file handle [ESTALE]' },
  { name: 'ENOSPC is mail system full, 452', err: sysErr('ENOSPC'), code: '4.3.1', reply: 452, text: 'op /p: No space left on device (mail system full) [ENOSPC]' },
  { name: 'EDQUOT is a full mailbox, permanent like Postfix', err: { code: 'Unknown system error -122', errno: -122 }, code: '5.2.2', reply: 552, text: 'op /p: Disk quota exceeded (mailbox full) [EDQUOT]' },
  { name: 'EFBIG is a full mailbox', err: sysErr('EFBIG'), code: '5.2.2', reply: 552, text: 'op /p: File too large (mailbox full) [EFBIG]' },
  { name: 'EACCES is temporary and names the uid', err: sysErr('EACCES'), code: '4.2.0', text: new RegExp(`^op /p: Permission denied \\(not writable by uid ${uid}, gid \\d+\\) \\[EACCES\\]$`) },
  { name: 'EPERM is temporary and names the uid', err: sysErr('EPERM'), code: '4.2.0', text: /not writable by uid \d+/ },
  { name: 'EROFS is temporary', err: sysErr('EROFS'), code: '4.3.0', text: 'op /p: Read-only file system [EROFS]' },
  { name: 'ENOENT on a parent is temporary', err: sysErr('ENOENT'), code: '4.3.0', text: 'op /p: No such file or directory [ENOENT]' },
  { name: 'ENOTDIR is temporary', err: sysErr('ENOTDIR'), code: '4.3.0', text: /Not a directory/ },
  { name: 'ELOOP (a symlink) is refused for good', err: sysErr('ELOOP'), code: '5.2.0', text: 'op /p: Is a symbolic link (refused) [ELOOP]' },
  { name: 'a refusal built by errnoError maps like the system call', err: errnoError('ELOOP', '/p'), code: '5.2.0', text: /symbolic link/ },
  { name: 'EIO is temporary', err: sysErr('EIO'), code: '4.3.0', text: 'op /p: Input/output error [EIO]' },
  { name: 'an errno outside the table is temporary with the system text', err: sysErr('EMFILE'), code: '4.3.0', text: 'op /p: Too many open files [EMFILE]' },
  { name: 'an unknown errno number is temporary', err: { errno: -9999, message: 'weird' }, code: '4.3.0', text: 'op /p: weird' },
  { name: 'an Error without errno is temporary', err: new Error('boom'), code: '4.3.0', text: 'op /p: boom' },
  { name: 'a thrown string is temporary', err: 'odd', code: '4.3.0', text: 'op /p: odd' },
  { name: 'null is temporary', err: null, code: '4.3.0', text: 'op /p: null' },
];

for (const c of cases) {
  test(c.name, () => {
    const got = statusFromError(c.err, 'op /p');
    assert.equal(got.code, c.code);
    assert.equal(got.reply, c.reply);
    if (typeof c.text === 'string') assert.equal(got.text, c.text);
    else assert.match(got.text, c.text);
    assert.doesNotMatch(got.text, /[\r\n]/);
  });
}

test('a real failed open is mapped with its path in the text', async () => {
  const got = await open('/nonexistent-mailprocd-dir/x', 'r').then(
    () => assert.fail('open should fail'),
    (err: unknown) => statusFromError(err, 'cannot open mailbox /nonexistent-mailprocd-dir/x'),
  );
  assert.equal(got.code, '4.3.0');
  assert.equal(got.text, 'cannot open mailbox /nonexistent-mailprocd-dir/x: No such file or directory [ENOENT]');
});
