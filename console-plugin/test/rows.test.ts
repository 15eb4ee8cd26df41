import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { applyEvent } from '../src/hooks/rows';
import { CatalogImage } from '../src/model';

const named = (name: string, phase?: string): CatalogImage => ({
  metadata: { name, namespace: 'ns' },
  spec: { registryUrl: 'quay.io/x/y' },
  status: phase ? { phase } : undefined,
});
const names = (rows: CatalogImage[]) => rows.map((row) => row.metadata.name);

test('watch events change the rows of the page they belong to', () => {
  const rows = [named('b'), named('d')];
  // Modified in place, deleted, added in order.
  const modified = applyEvent(rows, { type: 'MODIFIED', object: named('b', 'Failed') }, 'ns/d');
  assert.equal(modified.rows[0].status?.phase, 'Failed');
  assert.deepEqual(names(applyEvent(rows, { type: 'DELETED', object: named('b') }, 'ns/d').rows), ['d']);
  assert.deepEqual(names(applyEvent(rows, { type: 'ADDED', object: named('c') }, 'ns/d').rows), ['b', 'c', 'd']);
  // Past the end of a page that has a next one: counted, not shown.
  const later = applyEvent(rows, { type: 'ADDED', object: named('e') }, 'ns/d');
  assert.deepEqual(names(later.rows), ['b', 'd']);
  assert.equal(later.elsewhere, true);
  // The last page takes everything after it.
  assert.deepEqual(names(applyEvent(rows, { type: 'ADDED', object: named('e') }).rows), ['b', 'd', 'e']);
});
