import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { keys, LOCALE } from '../i18n.mjs';

test('every text the plugin shows has its English entry (npm run i18n writes them)', () => {
  const texts = JSON.parse(readFileSync(LOCALE, 'utf8'));
  assert.deepEqual(keys().filter((key) => !(key in texts)), []);
});
