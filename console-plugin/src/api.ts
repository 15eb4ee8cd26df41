/* Reading the catalog through the console: pages and watches over its proxy to the cluster,
   with consoleFetch (which adds the console's CSRF and impersonation headers). */

import { consoleFetch, consoleFetchJSON } from '@openshift-console/dynamic-plugin-sdk';
import { CatalogImage, CatalogImageList, WatchEvent } from './model';

/** Why a request failed: its HTTP status when there was one, and the Status message. */
export type Failure = { status?: number; message: string };

/** consoleFetch throws errors carrying the response and its parsed Status body. */
export const failureOf = (error: unknown): Failure => {
  const e = error as {
    response?: { status?: number };
    status?: number;
    json?: { message?: string };
    message?: string;
  };
  return {
    status: e?.response?.status ?? e?.status,
    message: e?.json?.message ?? e?.message ?? String(error),
  };
};

export const getList = (url: string): Promise<CatalogImageList> => consoleFetchJSON(url);

export const getObject = (url: string): Promise<CatalogImage> => consoleFetchJSON(url);

/** Reads the watch at `url`, one event a line, until the server ends it (its timeout) or
 *  `signal` aborts it. */
export const readWatch = async (
  url: string,
  signal: AbortSignal,
  onEvent: (event: WatchEvent) => void,
): Promise<void> => {
  // No timeout: a watch's answer is a stream that lasts.
  const response = await consoleFetch(url, { signal }, 0);
  if (!response.body) {
    throw new Error('the watch has no body');
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      return;
    }
    buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf('\n');
    while (end >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (line) {
        onEvent(JSON.parse(line) as WatchEvent);
      }
      end = buffer.indexOf('\n');
    }
  }
};

/** Keeps a watch open from `resourceVersion`: opened again where it ended (its last event or
 *  bookmark), after a pause when it failed; `onExpired` when the server no longer has that
 *  history (410), for the caller to list again. Ends when `signal` aborts. */
export const keepWatching = async (
  url: (resourceVersion: string) => string,
  resourceVersion: string,
  signal: AbortSignal,
  onEvent: (event: WatchEvent) => void,
  onExpired: () => void,
): Promise<void> => {
  let from = resourceVersion;
  while (!signal.aborted) {
    let expired = false;
    try {
      await readWatch(url(from), signal, (event) => {
        if (event.type === 'ERROR') {
          expired = event.object.code === 410;
          return;
        }
        from = event.object.metadata?.resourceVersion ?? from;
        if (event.type !== 'BOOKMARK') {
          onEvent(event);
        }
      });
    } catch (error) {
      if (signal.aborted) {
        return;
      }
      expired = failureOf(error).status === 410;
      if (!expired) {
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
    if (expired) {
      onExpired();
      return;
    }
  }
};
