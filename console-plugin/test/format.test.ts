import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { digestOf, distroWithVersion, humanBytes, phaseLook, shortDigest } from '../src/format';
import { CatalogImage } from '../src/model';

const image = (spec: Partial<CatalogImage['spec']>, status?: CatalogImage['status']): CatalogImage => ({
  metadata: { name: 'a', namespace: 'ns' },
  spec: { registryUrl: 'quay.io/x/y', ...spec },
  status,
});

test('digests are shown short, the pinned one first', () => {
  assert.equal(shortDigest('sha256:0123456789abcdef0123'), 'sha256:0123456789ab');
  assert.equal(shortDigest(undefined), '');
  assert.equal(digestOf(image({ digest: 'sha256:aa' }, { registryMetadata: { resolvedDigest: 'sha256:bb' } })), 'sha256:aa');
  assert.equal(digestOf(image({}, { registryMetadata: { resolvedDigest: 'sha256:bb' } })), 'sha256:bb');
});

test('distro and version, phases, sizes', () => {
  assert.equal(distroWithVersion(image({ metadata: { distro: 'autosd10-sig', distroVersion: '10.1' } })), 'autosd10-sig 10.1');
  assert.equal(distroWithVersion(image({ metadata: { distro: 'cs9' } })), 'cs9');
  assert.equal(phaseLook('Available'), 'success');
  assert.equal(phaseLook('Failed'), 'danger');
  assert.equal(phaseLook(undefined), 'unknown');
  assert.equal(humanBytes(512), '512 B');
  assert.equal(humanBytes(1536 * 1024 * 1024), '1.5 GiB');
});
