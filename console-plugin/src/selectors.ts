/* The list page's filters, each one a term of a field selector the server answers from an
   index (or a label selector): the browser asks for what it shows and never more. */

import { GROUP, PLURAL, VERSION } from './model';

/** The filters the toolbar offers; empty means any. */
export type Filters = {
  distro: string;
  architecture: string;
  target: string;
  phase: string;
  exportFormat: string;
  /** 'true', 'false' or '' */
  bootc: string;
  /** A label selector, as kubectl takes it (`tier=gold,pipeline!=nightly`). */
  labels: string;
};

export const NO_FILTERS: Filters = {
  distro: '',
  architecture: '',
  target: '',
  phase: '',
  exportFormat: '',
  bootc: '',
  labels: '',
};

/** Which selectable field each filter is a term of. */
export const FILTER_FIELDS: Record<Exclude<keyof Filters, 'labels'>, string> = {
  distro: 'spec.metadata.distro',
  architecture: 'spec.metadata.architecture',
  target: 'spec.metadata.targets',
  phase: 'status.phase',
  exportFormat: 'spec.metadata.exportFormat',
  bootc: 'spec.metadata.bootc',
};

/** A field selector value with the selector's own characters escaped, as
 *  k8s.io/apimachinery's fields.EscapeValue does. */
export const escapeFieldValue = (value: string): string =>
  value.replace(/\\/g, '\\\\').replace(/,/g, '\\,').replace(/=/g, '\\=');

/** The field selector the filters make; '' when none is set. */
export const fieldSelector = (filters: Filters): string =>
  (Object.keys(FILTER_FIELDS) as (keyof typeof FILTER_FIELDS)[])
    .filter((filter) => filters[filter] !== '')
    .map((filter) => `${FILTER_FIELDS[filter]}=${escapeFieldValue(filters[filter].trim())}`)
    .join(',');

export const hasFilters = (filters: Filters): boolean =>
  fieldSelector(filters) !== '' || filters.labels.trim() !== '';

/** The collection's path through the console's proxy to the cluster; all namespaces when
 *  `namespace` is empty. */
export const collectionPath = (namespace?: string): string => {
  const scope = namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `/api/kubernetes/apis/${GROUP}/${VERSION}${scope}/${PLURAL}`;
};

const query = (parameters: Record<string, string | number | undefined>): string => {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    if (value !== undefined && value !== '') {
      search.set(name, String(value));
    }
  }
  return search.toString();
};

/** One page of the filtered list: `limit` items after the page `continueToken` ends. */
export const pageUrl = (
  namespace: string | undefined,
  filters: Filters,
  limit: number,
  continueToken?: string,
): string =>
  `${collectionPath(namespace)}?${query({
    limit,
    continue: continueToken,
    fieldSelector: fieldSelector(filters),
    labelSelector: filters.labels.trim(),
  })}`;

/** A watch of the same selection from `resourceVersion` on, with bookmarks to resume from. */
export const watchUrl = (
  namespace: string | undefined,
  filters: Filters,
  resourceVersion: string,
  timeoutSeconds = 300,
): string =>
  `${collectionPath(namespace)}?${query({
    watch: 'true',
    resourceVersion,
    allowWatchBookmarks: 'true',
    timeoutSeconds,
    fieldSelector: fieldSelector(filters),
    labelSelector: filters.labels.trim(),
  })}`;

/** One object, by name: its path, and a watch of it alone. */
export const objectPath = (namespace: string, name: string): string =>
  `${collectionPath(namespace)}/${encodeURIComponent(name)}`;

export const objectWatchUrl = (namespace: string, name: string, resourceVersion: string): string =>
  `${collectionPath(namespace)}?${query({
    watch: 'true',
    resourceVersion,
    allowWatchBookmarks: 'true',
    timeoutSeconds: 300,
    fieldSelector: `metadata.name=${escapeFieldValue(name)}`,
  })}`;
