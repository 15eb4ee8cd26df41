/* One entry, kept live: read once, then watched by name. */

import * as React from 'react';
import { Failure, failureOf, getObject, keepWatching } from '../api';
import { CatalogImage } from '../model';
import { objectPath, objectWatchUrl } from '../selectors';

export const useCatalogImage = (
  namespace: string,
  name: string,
): { image?: CatalogImage; failure?: Failure; deleted: boolean } => {
  const [image, setImage] = React.useState<CatalogImage>();
  const [failure, setFailure] = React.useState<Failure>();
  const [deleted, setDeleted] = React.useState(false);
  const [generation, setGeneration] = React.useState(0);
  React.useEffect(() => {
    const abort = new AbortController();
    getObject(objectPath(namespace, name))
      .then((read) => {
        if (abort.signal.aborted) {
          return;
        }
        setImage(read);
        setDeleted(false);
        keepWatching(
          (from) => objectWatchUrl(namespace, name, from),
          read.metadata.resourceVersion ?? '0',
          abort.signal,
          (event) => {
            if (event.type === 'DELETED') {
              setDeleted(true);
            } else {
              setImage(event.object);
              setDeleted(false);
            }
          },
          () => setGeneration((g) => g + 1),
        );
      })
      .catch((error) => !abort.signal.aborted && setFailure(failureOf(error)));
    return () => abort.abort();
  }, [namespace, name, generation]);
  return { image, failure, deleted };
};
