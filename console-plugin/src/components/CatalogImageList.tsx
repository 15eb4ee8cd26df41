/* The list page, built for a catalog of 100k entries: one page at a time from the server,
   filters that are the server's field and label selectors, rows kept live by a watch with the
   same selectors. Rows come in the server's order (namespace, then name), the one order it
   serves; other columns do not sort, as sorting one page would mislead. */

import * as React from 'react';
import { useTranslation } from 'react-i18next';
import {
  ListPageHeader,
  ResourceLink,
  Timestamp,
} from '@openshift-console/dynamic-plugin-sdk';
import {
  Alert,
  Button,
  ClipboardCopy,
  EmptyState,
  EmptyStateActions,
  EmptyStateBody,
  EmptyStateFooter,
  FormSelect,
  FormSelectOption,
  Label,
  PageSection,
  Spinner,
  TextInput,
  Toolbar,
  ToolbarContent,
  ToolbarGroup,
  ToolbarItem,
} from '@patternfly/react-core';
import { Table, Tbody, Td, Th, Thead, Tr } from '@patternfly/react-table';
import { CheckIcon } from '@patternfly/react-icons';
import { digestOf, distroWithVersion, shortDigest } from '../format';
import { CatalogImage, MODEL, REFERENCE } from '../model';
import { Filters, NO_FILTERS, hasFilters } from '../selectors';
import { useCatalogPage } from '../hooks/useCatalogPage';
import { PhaseStatus } from './PhaseStatus';

const NS = 'plugin__catalog-console-plugin';
const PAGE_SIZES = [50, 100, 250, 500];
const PHASES = ['Pending', 'Verifying', 'Available', 'Unavailable', 'Failed'];
const ARCHITECTURES = ['x86_64', 'aarch64'];

/** A text filter, applied once typing pauses. */
const TextFilter: React.FC<{
  label: string;
  value: string;
  onChange: (value: string) => void;
  placeholder?: string;
}> = ({ label, value, onChange, placeholder }) => {
  const [text, setText] = React.useState(value);
  React.useEffect(() => setText(value), [value]);
  React.useEffect(() => {
    if (text === value) {
      return undefined;
    }
    const timer = setTimeout(() => onChange(text), 400);
    return () => clearTimeout(timer);
  }, [text, value, onChange]);
  return (
    <TextInput
      aria-label={label}
      data-test={`filter-${label}`}
      placeholder={placeholder ?? label}
      value={text}
      onChange={(_, changed) => setText(changed)}
      onKeyDown={(event) => event.key === 'Enter' && onChange(text)}
    />
  );
};

const ChoiceFilter: React.FC<{
  label: string;
  value: string;
  choices: [string, string][];
  onChange: (value: string) => void;
}> = ({ label, value, choices, onChange }) => (
  <FormSelect
    aria-label={label}
    data-test={`filter-${label}`}
    value={value}
    onChange={(_, changed) => onChange(changed)}
  >
    <FormSelectOption value="" label={label} />
    {choices.map(([choice, text]) => (
      <FormSelectOption key={choice} value={choice} label={text} />
    ))}
  </FormSelect>
);

const Targets: React.FC<{ image: CatalogImage }> = ({ image }) => {
  const { t } = useTranslation(NS);
  const targets = image.spec.metadata?.targets ?? [];
  if (targets.length === 0) {
    return <>-</>;
  }
  return (
    <>
      {targets.map((target) => (
        <Label
          key={target.name}
          isCompact
          color={target.verified ? 'green' : 'grey'}
          icon={target.verified ? <CheckIcon /> : undefined}
          title={target.verified ? t('Verified on {{target}}', { target: target.name }) : target.name}
        >
          {target.name}
        </Label>
      ))}
    </>
  );
};

const Row: React.FC<{ image: CatalogImage }> = ({ image }) => {
  const digest = digestOf(image);
  const { name, namespace } = image.metadata;
  return (
    <Tr data-test="catalogimage-row" data-name={name}>
      <Td dataLabel="Name">
        <ResourceLink groupVersionKind={MODEL} name={name} namespace={namespace} />
      </Td>
      <Td dataLabel="Namespace">
        <ResourceLink kind="Namespace" name={namespace} />
      </Td>
      <Td dataLabel="Distro">{distroWithVersion(image) || '-'}</Td>
      <Td dataLabel="Architecture">{image.spec.metadata?.architecture ?? '-'}</Td>
      <Td dataLabel="Targets">
        <Targets image={image} />
      </Td>
      <Td dataLabel="Format">{image.spec.metadata?.exportFormat ?? '-'}</Td>
      <Td dataLabel="Phase">
        <PhaseStatus phase={image.status?.phase} />
      </Td>
      <Td dataLabel="Digest">
        {digest ? (
          <ClipboardCopy variant="inline-compact" isCode clickTip="Copied" hoverTip={digest}>
            {shortDigest(digest)}
          </ClipboardCopy>
        ) : (
          '-'
        )}
      </Td>
      <Td dataLabel="Last verified">
        {image.status?.lastVerificationTime ? (
          <Timestamp timestamp={image.status.lastVerificationTime} />
        ) : (
          '-'
        )}
      </Td>
    </Tr>
  );
};

/** What to do about a failed list, by its status. */
const failureHint = (status: number | undefined, t: (key: string) => string): string => {
  switch (status) {
    case 401:
    case 403:
      return t('You may not list catalog images here. Ask for a role that grants list and watch on catalogimages.catalog.automotive.io, or choose another project.');
    case 400:
      return t('The server refused the filters. Check the label selector (key=value, key!=value, key in (a,b)).');
    case 410:
      return t('The list moved on while you paged through it. Start again from the first page.');
    case 503:
      return t('catalog-apiserver is unavailable. Check the APIService v1alpha1.catalog.automotive.io and the catalog-apiserver pods.');
    default:
      return t('Try again; if it persists, check the catalog-apiserver pods and the APIService v1alpha1.catalog.automotive.io.');
  }
};

const CatalogImageList: React.FC<{ namespace?: string }> = ({ namespace }) => {
  const { t } = useTranslation(NS);
  const [filters, setFilters] = React.useState<Filters>(NO_FILTERS);
  const [limit, setLimit] = React.useState(100);
  const page = useCatalogPage(namespace, filters, limit);
  const set = React.useCallback(
    (filter: keyof Filters) => (value: string) => setFilters((current) => ({ ...current, [filter]: value })),
    [],
  );
  const setters = React.useMemo(
    () => ({
      distro: set('distro'),
      architecture: set('architecture'),
      target: set('target'),
      phase: set('phase'),
      exportFormat: set('exportFormat'),
      bootc: set('bootc'),
      labels: set('labels'),
    }),
    [set],
  );
  const first = page.index * limit + 1;
  const last = page.index * limit + page.items.length;
  const total = page.remaining !== undefined ? last + page.remaining : undefined;
  return (
    <>
      <ListPageHeader title={t('Catalog images')} />
      <PageSection>
        <Toolbar>
          <ToolbarContent>
            <ToolbarGroup variant="filter-group">
              <ToolbarItem>
                <TextFilter label={t('Distro')} value={filters.distro} onChange={setters.distro} />
              </ToolbarItem>
              <ToolbarItem>
                <ChoiceFilter
                  label={t('Architecture')}
                  value={filters.architecture}
                  choices={ARCHITECTURES.map((a) => [a, a])}
                  onChange={setters.architecture}
                />
              </ToolbarItem>
              <ToolbarItem>
                <TextFilter label={t('Target')} value={filters.target} onChange={setters.target} />
              </ToolbarItem>
              <ToolbarItem>
                <ChoiceFilter
                  label={t('Phase')}
                  value={filters.phase}
                  choices={PHASES.map((p) => [p, p])}
                  onChange={setters.phase}
                />
              </ToolbarItem>
              <ToolbarItem>
                <TextFilter label={t('Format')} value={filters.exportFormat} onChange={setters.exportFormat} />
              </ToolbarItem>
              <ToolbarItem>
                <ChoiceFilter
                  label={t('bootc')}
                  value={filters.bootc}
                  choices={[
                    ['true', t('bootc')],
                    ['false', t('Not bootc')],
                  ]}
                  onChange={setters.bootc}
                />
              </ToolbarItem>
              <ToolbarItem>
                <TextFilter
                  label={t('Labels')}
                  placeholder={t('Label selector, e.g. tier=gold')}
                  value={filters.labels}
                  onChange={setters.labels}
                />
              </ToolbarItem>
              {hasFilters(filters) && (
                <ToolbarItem>
                  <Button variant="link" onClick={() => setFilters(NO_FILTERS)}>
                    {t('Clear all filters')}
                  </Button>
                </ToolbarItem>
              )}
            </ToolbarGroup>
            <ToolbarGroup align={{ default: 'alignEnd' }}>
              <ToolbarItem>
                <span data-test="page-range">
                  {page.items.length > 0
                    ? total !== undefined
                      ? t('{{first}}-{{last}} of {{total}}', { first, last, total })
                      : t('{{first}}-{{last}}', { first, last })
                    : ''}
                </span>
              </ToolbarItem>
              <ToolbarItem>
                <FormSelect
                  aria-label={t('Per page')}
                  value={String(limit)}
                  onChange={(_, value) => setLimit(Number(value))}
                >
                  {PAGE_SIZES.map((size) => (
                    <FormSelectOption key={size} value={String(size)} label={t('{{size}} per page', { size })} />
                  ))}
                </FormSelect>
              </ToolbarItem>
              <ToolbarItem>
                <Button variant="secondary" isDisabled={page.index === 0} onClick={page.previous}>
                  {t('Previous')}
                </Button>{' '}
                <Button variant="secondary" isDisabled={!page.hasNext} onClick={page.next} data-test="next-page">
                  {t('Next')}
                </Button>
              </ToolbarItem>
            </ToolbarGroup>
          </ToolbarContent>
        </Toolbar>
        {page.addedElsewhere > 0 && (
          <Alert
            isInline
            variant="info"
            title={t('{{count}} new entries on later pages', { count: page.addedElsewhere })}
          />
        )}
        {page.failure ? (
          <EmptyState titleText={t('The catalog could not be listed')} headingLevel="h2" status="danger" data-test="list-error">
            <EmptyStateBody>
              {page.failure.message}
              <br />
              {failureHint(page.failure.status, t)}
            </EmptyStateBody>
            <EmptyStateFooter>
              <EmptyStateActions>
                <Button variant="primary" onClick={page.restart}>
                  {t('Try again')}
                </Button>
              </EmptyStateActions>
            </EmptyStateFooter>
          </EmptyState>
        ) : page.loading && page.items.length === 0 ? (
          <Spinner aria-label={t('Loading')} />
        ) : page.items.length === 0 ? (
          <EmptyState titleText={t('No catalog images')} headingLevel="h2" data-test="list-empty">
            <EmptyStateBody>
              {hasFilters(filters)
                ? t('No catalog image matches these filters.')
                : t('Add one with kubectl apply -f, or import the operator\'s with catalog-apiserver import.')}
            </EmptyStateBody>
            {hasFilters(filters) && (
              <EmptyStateFooter>
                <EmptyStateActions>
                  <Button variant="link" onClick={() => setFilters(NO_FILTERS)}>
                    {t('Clear all filters')}
                  </Button>
                </EmptyStateActions>
              </EmptyStateFooter>
            )}
          </EmptyState>
        ) : (
          <Table aria-label={t('Catalog images')} variant="compact" data-test="catalogimage-table" data-kind={REFERENCE}>
            <Thead>
              <Tr>
                <Th sort={{ sortBy: { index: 0, direction: 'asc' }, columnIndex: 0, onSort: () => undefined }}>
                  {t('Name')}
                </Th>
                <Th>{t('Namespace')}</Th>
                <Th>{t('Distro')}</Th>
                <Th>{t('Architecture')}</Th>
                <Th>{t('Targets')}</Th>
                <Th>{t('Format')}</Th>
                <Th>{t('Phase')}</Th>
                <Th>{t('Digest')}</Th>
                <Th>{t('Last verified')}</Th>
              </Tr>
            </Thead>
            <Tbody>
              {page.items.map((image) => (
                <Row key={`${image.metadata.namespace}/${image.metadata.name}`} image={image} />
              ))}
            </Tbody>
          </Table>
        )}
      </PageSection>
    </>
  );
};

export default CatalogImageList;
