/* One page of the filtered list, kept live: the page is read with limit and continue, and a
   watch with the same selectors from the page's resourceVersion updates the rows it shows.
   The browser holds this page and the continue tokens of the pages before it, nothing more. */

import * as React from 'react';
import { Failure, failureOf, getList, keepWatching } from '../api';
import { listKey } from '../format';
import { CatalogImage } from '../model';
import { rowsReducer } from './rows';
import { Filters, pageUrl, watchUrl } from '../selectors';

export type CatalogPage = {
  items: CatalogImage[];
  loading: boolean;
  failure?: Failure;
  /** Zero-based. */
  index: number;
  hasNext: boolean;
  /** Items after this page, when the server says (it does for lists without selectors). */
  remaining?: number;
  /** Entries added after this page's end while it was shown. */
  addedElsewhere: number;
  next: () => void;
  previous: () => void;
  /** Reads the list again from its first page. */
  restart: () => void;
};

export const useCatalogPage = (
  namespace: string | undefined,
  filters: Filters,
  limit: number,
): CatalogPage => {
  // tokens[i] is the continue token page i starts at.
  const [tokens, setTokens] = React.useState<(string | undefined)[]>([undefined]);
  const [index, setIndex] = React.useState(0);
  const [generation, setGeneration] = React.useState(0);
  const [{ items, addedElsewhere }, dispatch] = React.useReducer(rowsReducer, {
    items: [],
    addedElsewhere: 0,
  });
  const [loading, setLoading] = React.useState(true);
  const [failure, setFailure] = React.useState<Failure>();
  const [nextToken, setNextToken] = React.useState<string>();
  const [remaining, setRemaining] = React.useState<number>();
  const [resourceVersion, setResourceVersion] = React.useState<string>();
  // The last key of the page as listed, when more pages follow: entries after it belong to
  // those.
  const [pageEnd, setPageEnd] = React.useState<string>();
  // Counts the pages read: each is watched from its own resourceVersion with its own
  // selectors (two lists of different selections may well share a resourceVersion).
  const [pagesRead, setPagesRead] = React.useState(0);

  const selection = JSON.stringify([namespace, filters, limit]);
  // A new selection starts at its first page.
  React.useEffect(() => {
    setTokens([undefined]);
    setIndex(0);
  }, [selection]);

  React.useEffect(() => {
    let current = true;
    setLoading(true);
    setFailure(undefined);
    getList(pageUrl(namespace, filters, limit, tokens[index]))
      .then((list) => {
        if (!current) {
          return;
        }
        dispatch({ type: 'page', items: list.items });
        setNextToken(list.metadata.continue || undefined);
        setRemaining(list.metadata.remainingItemCount);
        const last = list.items[list.items.length - 1];
        setPageEnd(list.metadata.continue && last ? listKey(last) : undefined);
        setResourceVersion(list.metadata.resourceVersion);
        setPagesRead((n) => n + 1);
        setLoading(false);
      })
      .catch((error) => {
        if (current) {
          setFailure(failureOf(error));
          dispatch({ type: 'page', items: [] });
          setResourceVersion(undefined);
          setLoading(false);
        }
      });
    return () => {
      current = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [selection, index, tokens, generation]);

  React.useEffect(() => {
    if (!resourceVersion) {
      return undefined;
    }
    const abort = new AbortController();
    keepWatching(
      (from) => watchUrl(namespace, filters, from),
      resourceVersion,
      abort.signal,
      (event) => dispatch({ type: 'event', event, last: pageEnd }),
      () => setGeneration((g) => g + 1),
    );
    return () => abort.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [pagesRead]);

  return {
    items,
    loading,
    failure,
    index,
    hasNext: nextToken !== undefined,
    remaining,
    addedElsewhere,
    next: () => {
      if (nextToken !== undefined) {
        setTokens((known) => [...known.slice(0, index + 1), nextToken]);
        setIndex(index + 1);
      }
    },
    previous: () => setIndex(Math.max(0, index - 1)),
    restart: () => {
      setTokens([undefined]);
      setIndex(0);
      setGeneration((g) => g + 1);
    },
  };
};
