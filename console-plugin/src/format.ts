/* How the columns show an entry's fields. */

import { CatalogImage } from './model';

/** `sha256:0123456789ab`: the algorithm and the first twelve hex digits. */
export const shortDigest = (digest?: string): string => {
  if (!digest) {
    return '';
  }
  const [algorithm, hex] = digest.includes(':') ? digest.split(':', 2) : ['', digest];
  const short = hex.slice(0, 12);
  return algorithm ? `${algorithm}:${short}` : short;
};

/** The digest an entry is known by: the one its spec pins, else the one verification found. */
export const digestOf = (image: CatalogImage): string | undefined =>
  image.spec.digest || image.status?.registryMetadata?.resolvedDigest;

/** `autosd10-sig 10.1`, or whichever half is set. */
export const distroWithVersion = (image: CatalogImage): string =>
  [image.spec.metadata?.distro, image.spec.metadata?.distroVersion].filter(Boolean).join(' ');

/** What the Phase column's icon says of a phase. */
export type PhaseLook = 'success' | 'danger' | 'warning' | 'progress' | 'pending' | 'unknown';

export const phaseLook = (phase?: string): PhaseLook => {
  switch (phase) {
    case 'Available':
      return 'success';
    case 'Failed':
      return 'danger';
    case 'Unavailable':
      return 'warning';
    case 'Verifying':
      return 'progress';
    case 'Pending':
      return 'pending';
    default:
      return 'unknown';
  }
};

/** Bytes as the console shows them: 1.5 GiB. */
export const humanBytes = (bytes?: number): string => {
  if (bytes === undefined) {
    return '';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
};

/** Where an entry sorts in a list: the server's order, by namespace then name. */
export const listKey = (image: CatalogImage): string =>
  `${image.metadata.namespace}/${image.metadata.name}`;
