// Keys built from what clients send (src/policy/keys.ts) against a real
// LMDB environment: what fitsKey says fits is exactly what LMDB stores, and
// storageKey makes every key storable and keeps long keys apart.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { boundedKey, fitsKey, MAX_KEY_BYTES, storageKey } from '../../src/state/index.js';
import { openState } from '../../src/state/index.js';

const KEYS: { name: string; key: string; fits: boolean }[] = [
  { name: 'an address', key: 'alice@example.test', fits: true },
  { name: '1978 ASCII bytes', key: 'a'.repeat(1978), fits: true },
  { name: '1979 ASCII bytes', key: 'a'.repeat(1979), fits: false },
  { name: '1977 bytes after a control character (lmdb-js adds an escape byte: 1979)', key: `\x01${'a'.repeat(1977)}`, fits: false },
  { name: '1976 bytes after a control character (1978)', key: `\x01${'a'.repeat(1976)}`, fits: true },
  { name: 'a triplet-like key, NUL inside', key: `192.0.2.0/24\0${'s'.repeat(1900)}\0${'r'.repeat(52)}`, fits: true },
  { name: '659 three-byte characters (1977 bytes)', key: '€'.repeat(659), fits: true },
  { name: '660 three-byte characters (1980 bytes, 660 characters)', key: '€'.repeat(660), fits: false },
  { name: '494 four-byte characters (1976 bytes)', key: '😀'.repeat(494), fits: true },
  { name: '495 four-byte characters (1980 bytes)', key: '😀'.repeat(495), fits: false },
  { name: '4076 characters', key: 'x'.repeat(4076), fits: false },
  { name: '40 000 characters (lmdb-js cannot even encode it for a read)', key: 'y'.repeat(40_000), fits: false },
];

test('fitsKey agrees with LMDB, and every storageKey is stored and read back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mailprocd-keys-'));
  const state = openState(dir);
  t.after(async () => {
    await state.close();
    rmSync(dir, { recursive: true, force: true });
  });
  assert.equal((state.greylist as unknown as { maxKeySize: number }).maxKeySize, MAX_KEY_BYTES, 'the store\'s own key limit');
  for (const c of KEYS) {
    assert.equal(fitsKey(c.key), c.fits, c.name);
    let stored: boolean;
    try {
      await state.greylist.put(c.key, [1, 2, 3]); // lmdb-js throws at once for a key too long
      stored = true;
    } catch {
      stored = false;
    }
    assert.equal(stored, c.fits, `LMDB ${c.fits ? 'takes' : 'refuses'} ${c.name}`);
    const key = storageKey(c.key);
    assert.equal(key === c.key, c.fits, `${c.name}: kept as it is only if it fits`);
    await state.greylist.put(key, [4, 5, 6]);
    assert.deepEqual(state.greylist.get(key), [4, 5, 6], c.name);
  }
});

test('long keys that differ only at the end get different storage and memory keys; short ones are kept as they are', () => {
  const a = `${'z'.repeat(5000)}a`;
  const b = `${'z'.repeat(5000)}b`;
  assert.notEqual(storageKey(a), storageKey(b));
  assert.equal(storageKey(a), storageKey(`${'z'.repeat(5000)}a`), 'the same key every time');
  assert.ok(storageKey(a).length < 64);
  assert.notEqual(boundedKey(a, 320), boundedKey(b, 320));
  assert.equal(boundedKey('alice@example.test', 320), 'alice@example.test');
  assert.equal(boundedKey('q'.repeat(320), 320), 'q'.repeat(320));
  assert.notEqual(boundedKey('q'.repeat(321), 320), 'q'.repeat(321));
});
