/* A stand-in for @openshift-console/dynamic-plugin-sdk in the browser test, which has no
   console around the plugin: the few things the plugin takes from it, doing what the console
   does (fetching follows the SDK's lib/utils/fetch/console-fetch.js and the console's
   validateStatus: a response that is not ok throws an HttpError carrying the response and its
   parsed Status); the components are plain markup. Requests go to this page's own server,
   which proxies /api/kubernetes/ to catalog-apiserver as the console's backend does. */

import * as React from 'react';

class HttpError extends Error {
  constructor(
    message: string,
    public code: number,
    public response: Response,
    public json?: { message?: string },
  ) {
    super(message);
  }
}

export const consoleFetch = async (url: string, options: RequestInit = {}, timeout = 60000): Promise<Response> => {
  const fetched = fetch(url, options).then(async (response) => {
    if (response.ok) {
      return response;
    }
    const text = await response.text();
    let json: { message?: string } | undefined;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    throw new HttpError(json?.message ?? response.statusText, response.status, response, json);
  });
  if (timeout <= 0) {
    return fetched;
  }
  const timedOut = new Promise<Response>((_, reject) =>
    setTimeout(() => reject(new Error(`${url} timed out after ${timeout} ms`)), timeout),
  );
  return Promise.race([fetched, timedOut]);
};

export const consoleFetchJSON = async (url: string, method = 'GET', options: RequestInit = {}, timeout?: number) => {
  const response = await consoleFetch(url, { ...options, method }, timeout);
  return response.json();
};

export const ListPageHeader: React.FC<{ title: string; children?: React.ReactNode }> = ({ title, children }) => (
  <header className="pf-v6-c-page__main-section">
    <h1 className="pf-v6-c-title pf-m-2xl">{title}</h1>
    {children}
  </header>
);

export const ResourceLink: React.FC<{ name?: string; namespace?: string; kind?: string }> = ({ name, namespace, kind }) => (
  <a href={kind === 'Namespace' ? `#/list/${name}` : `#/details/${namespace}/${name}`} data-test="resource-link">
    {name}
  </a>
);

export const Timestamp: React.FC<{ timestamp: string }> = ({ timestamp }) => (
  <time dateTime={timestamp}>{new Date(timestamp).toLocaleString('en-GB', { timeZone: 'UTC' })}</time>
);

type Page = { href: string; name: string; component: React.ComponentType<{ obj?: unknown }> };

export const HorizontalNav: React.FC<{ resource: unknown; pages: Page[] }> = ({ resource, pages }) => {
  const [shown, setShown] = React.useState(0);
  const Shown = pages[shown].component;
  return (
    <>
      <nav className="pf-v6-c-tabs">
        {pages.map((page, i) => (
          <button key={page.href} type="button" data-test={`tab-${page.name}`} onClick={() => setShown(i)}>
            {page.name}
          </button>
        ))}
      </nav>
      <Shown obj={resource} />
    </>
  );
};

export const ResourceYAMLEditor: React.FC<{ initialResource: unknown }> = ({ initialResource }) => (
  <pre data-test="yaml">{JSON.stringify(initialResource, null, 2)}</pre>
);
