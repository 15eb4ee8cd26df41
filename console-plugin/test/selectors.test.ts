import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { NO_FILTERS, escapeFieldValue, fieldSelector, hasFilters, pageUrl, watchUrl } from '../src/selectors';

test('each filter becomes a term of the field selector, in a fixed order', () => {
  assert.equal(fieldSelector(NO_FILTERS), '');
  assert.equal(
    fieldSelector({ ...NO_FILTERS, phase: 'Failed', distro: 'autosd10-sig', bootc: 'true' }),
    'spec.metadata.distro=autosd10-sig,status.phase=Failed,spec.metadata.bootc=true',
  );
  assert.equal(
    fieldSelector({ ...NO_FILTERS, architecture: 'aarch64', target: 'rpi4', exportFormat: 'qcow2' }),
    'spec.metadata.architecture=aarch64,spec.metadata.targets=rpi4,spec.metadata.exportFormat=qcow2',
  );
});

test('selector characters in values are escaped as apimachinery does', () => {
  assert.equal(escapeFieldValue('a,b=c\\d'), 'a\\,b\\=c\\\\d');
  assert.equal(fieldSelector({ ...NO_FILTERS, target: 'x=y' }), 'spec.metadata.targets=x\\=y');
});

test('labels go to the label selector; blank filters are no filters', () => {
  assert.equal(hasFilters(NO_FILTERS), false);
  assert.equal(hasFilters({ ...NO_FILTERS, labels: '  ' }), false);
  assert.equal(hasFilters({ ...NO_FILTERS, labels: 'tier=gold' }), true);
  const url = new URL(pageUrl('ns1', { ...NO_FILTERS, labels: 'tier=gold' }, 100), 'https://console');
  assert.equal(url.searchParams.get('labelSelector'), 'tier=gold');
  assert.equal(url.searchParams.get('fieldSelector'), null);
});

test('a page asks for one page, in a namespace or all of them', () => {
  const first = new URL(pageUrl('ns1', { ...NO_FILTERS, distro: 'cs9' }, 50), 'https://console');
  assert.equal(first.pathname, '/api/kubernetes/apis/catalog.automotive.io/v1alpha1/namespaces/ns1/catalogimages');
  assert.equal(first.searchParams.get('limit'), '50');
  assert.equal(first.searchParams.get('continue'), null);
  assert.equal(first.searchParams.get('fieldSelector'), 'spec.metadata.distro=cs9');
  const next = new URL(pageUrl(undefined, NO_FILTERS, 50, 'token=='), 'https://console');
  assert.equal(next.pathname, '/api/kubernetes/apis/catalog.automotive.io/v1alpha1/catalogimages');
  assert.equal(next.searchParams.get('continue'), 'token==');
});

test('the watch has the same selectors, from the page\'s resourceVersion, with bookmarks', () => {
  const filters = { ...NO_FILTERS, phase: 'Available', labels: 'tier=gold' };
  const url = new URL(watchUrl('ns1', filters, '42'), 'https://console');
  assert.equal(url.searchParams.get('watch'), 'true');
  assert.equal(url.searchParams.get('resourceVersion'), '42');
  assert.equal(url.searchParams.get('allowWatchBookmarks'), 'true');
  assert.equal(url.searchParams.get('fieldSelector'), 'status.phase=Available');
  assert.equal(url.searchParams.get('labelSelector'), 'tier=gold');
});
