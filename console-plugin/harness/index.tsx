/* The test page: the plugin's list or details page, by the location's hash
   (#/list/<namespace>, #/details/<namespace>/<name>), with the English texts loaded as the
   console loads them. */

import '@patternfly/react-core/dist/styles/base.css';
import * as React from 'react';
import { render } from 'react-dom';
import i18n from 'i18next';
import { initReactI18next } from 'react-i18next';
import { MemoryRouter, Route, Routes } from 'react-router-dom-v5-compat';
import texts from '../locales/en/plugin__catalog-console-plugin.json';
import CatalogImageList from '../src/components/CatalogImageList';
import CatalogImageDetails from '../src/components/CatalogImageDetails';
import { REFERENCE } from '../src/model';

i18n.use(initReactI18next).init({
  lng: 'en',
  resources: { en: { 'plugin__catalog-console-plugin': texts } },
  interpolation: { escapeValue: false },
});

const Page: React.FC = () => {
  const [hash, setHash] = React.useState(window.location.hash);
  React.useEffect(() => {
    const changed = () => setHash(window.location.hash);
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  const [, view, namespace, name] = hash.split('/');
  if (view === 'details') {
    return (
      <MemoryRouter key={hash} initialEntries={[`/k8s/ns/${namespace}/${REFERENCE}/${name}`]}>
        <Routes>
          <Route path="/k8s/ns/:ns/:plural/:name" element={<CatalogImageDetails />} />
        </Routes>
      </MemoryRouter>
    );
  }
  return <CatalogImageList key={hash} namespace={namespace || undefined} />;
};

render(<Page />, document.getElementById('root'));
