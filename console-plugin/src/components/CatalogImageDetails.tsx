/* The details page: the spec in brief, what verification found in the registry (platform
   variants, OCI annotations), the conditions with their reasons and messages, the
   verification figures, and the console's YAML tab. */

import * as React from 'react';
import { useTranslation } from 'react-i18next';
import { useParams } from 'react-router-dom-v5-compat';
import {
  HorizontalNav,
  ResourceYAMLEditor,
  Timestamp,
} from '@openshift-console/dynamic-plugin-sdk';
import {
  Alert,
  DescriptionList,
  DescriptionListDescription,
  DescriptionListGroup,
  DescriptionListTerm,
  EmptyState,
  EmptyStateBody,
  PageSection,
  Spinner,
  Title,
} from '@patternfly/react-core';
import { Table, Tbody, Td, Th, Thead, Tr } from '@patternfly/react-table';
import { digestOf, distroWithVersion, humanBytes } from '../format';
import { CatalogImage } from '../model';
import { useCatalogImage } from '../hooks/useCatalogImage';
import { PhaseStatus } from './PhaseStatus';

const NS = 'plugin__catalog-console-plugin';

const Field: React.FC<{ term: string; children: React.ReactNode }> = ({ term, children }) => (
  <DescriptionListGroup>
    <DescriptionListTerm>{term}</DescriptionListTerm>
    <DescriptionListDescription>{children ?? '-'}</DescriptionListDescription>
  </DescriptionListGroup>
);

const when = (time?: string) => (time ? <Timestamp timestamp={time} /> : '-');

const Details: React.FC<{ obj: CatalogImage }> = ({ obj: image }) => {
  const { t } = useTranslation(NS);
  const metadata = image.spec.metadata ?? {};
  const registry = image.status?.registryMetadata;
  const conditions = image.status?.conditions ?? [];
  const variants = registry?.platformVariants ?? [];
  const annotations = Object.entries(registry?.annotations ?? {});
  return (
    <PageSection>
      <Title headingLevel="h2">{t('Catalog image details')}</Title>
      <DescriptionList isHorizontal columnModifier={{ lg: '2Col' }} data-test="spec-summary">
        <Field term={t('Registry URL')}>{image.spec.registryUrl}</Field>
        <Field term={t('Digest')}>{digestOf(image) ?? '-'}</Field>
        <Field term={t('Tags')}>{(image.spec.tags ?? []).join(', ') || '-'}</Field>
        <Field term={t('Distro')}>{distroWithVersion(image) || '-'}</Field>
        <Field term={t('Architecture')}>{metadata.architecture ?? '-'}</Field>
        <Field term={t('OS / variant')}>{[metadata.os, metadata.variant].filter(Boolean).join(' / ') || '-'}</Field>
        <Field term={t('Format')}>{metadata.exportFormat ?? '-'}</Field>
        <Field term={t('Build')}>
          {[metadata.buildMode, metadata.bootc ? 'bootc' : undefined].filter(Boolean).join(', ') || '-'}
        </Field>
        <Field term={t('Targets')}>
          {(metadata.targets ?? [])
            .map((target) => (target.verified ? `${target.name} (${t('verified')})` : target.name))
            .join(', ') || '-'}
        </Field>
        <Field term={t('Builder image')}>{image.spec.builderImage ?? '-'}</Field>
      </DescriptionList>

      <Title headingLevel="h2">{t('Verification')}</Title>
      <DescriptionList isHorizontal columnModifier={{ lg: '2Col' }} data-test="verification">
        <Field term={t('Phase')}>
          <PhaseStatus phase={image.status?.phase} />
        </Field>
        <Field term={t('Last verified')}>{when(image.status?.lastVerificationTime)}</Field>
        <Field term={t('Failures since the last success')}>
          {String(image.status?.verificationFailures ?? 0)}
        </Field>
        <Field term={t('Verification interval')}>{image.spec.verificationInterval ?? '-'}</Field>
      </DescriptionList>

      <Title headingLevel="h2">{t('Registry metadata')}</Title>
      {registry ? (
        <>
          <DescriptionList isHorizontal columnModifier={{ lg: '2Col' }} data-test="registry-metadata">
            <Field term={t('Resolved digest')}>{registry.resolvedDigest ?? '-'}</Field>
            <Field term={t('Media type')}>{registry.mediaType ?? '-'}</Field>
            <Field term={t('Size')}>{humanBytes(registry.sizeBytes) || '-'}</Field>
            <Field term={t('Layers')}>{String(registry.layerCount ?? '-')}</Field>
            <Field term={t('Created')}>{when(registry.createdAt)}</Field>
          </DescriptionList>
          <Table aria-label={t('Platform variants')} variant="compact" data-test="platform-variants">
            <Thead>
              <Tr>
                <Th>{t('OS')}</Th>
                <Th>{t('Architecture')}</Th>
                <Th>{t('Variant')}</Th>
                <Th>{t('Digest')}</Th>
                <Th>{t('Size')}</Th>
              </Tr>
            </Thead>
            <Tbody>
              {variants.map((variant) => (
                <Tr key={variant.digest ?? JSON.stringify(variant)}>
                  <Td>{variant.os ?? '-'}</Td>
                  <Td>{variant.architecture ?? '-'}</Td>
                  <Td>{variant.variant ?? '-'}</Td>
                  <Td>{variant.digest ?? '-'}</Td>
                  <Td>{humanBytes(variant.sizeBytes) || '-'}</Td>
                </Tr>
              ))}
            </Tbody>
          </Table>
          <Table aria-label={t('OCI annotations')} variant="compact" data-test="annotations">
            <Thead>
              <Tr>
                <Th>{t('Annotation')}</Th>
                <Th>{t('Value')}</Th>
              </Tr>
            </Thead>
            <Tbody>
              {annotations.map(([key, value]) => (
                <Tr key={key}>
                  <Td>{key}</Td>
                  <Td>{value}</Td>
                </Tr>
              ))}
            </Tbody>
          </Table>
        </>
      ) : (
        <p>{t('Not verified yet.')}</p>
      )}

      <Title headingLevel="h2">{t('Conditions')}</Title>
      <Table aria-label={t('Conditions')} variant="compact" data-test="conditions">
        <Thead>
          <Tr>
            <Th>{t('Type')}</Th>
            <Th>{t('Status')}</Th>
            <Th>{t('Reason')}</Th>
            <Th>{t('Message')}</Th>
            <Th>{t('Changed')}</Th>
          </Tr>
        </Thead>
        <Tbody>
          {conditions.map((condition) => (
            <Tr key={condition.type}>
              <Td>{condition.type}</Td>
              <Td>{condition.status}</Td>
              <Td>{condition.reason ?? '-'}</Td>
              <Td>{condition.message ?? '-'}</Td>
              <Td>{when(condition.lastTransitionTime)}</Td>
            </Tr>
          ))}
        </Tbody>
      </Table>
    </PageSection>
  );
};

const Yaml: React.FC<{ obj: CatalogImage }> = ({ obj }) => <ResourceYAMLEditor initialResource={obj} />;

const CatalogImageDetails: React.FC<{ namespace?: string; name?: string }> = (props) => {
  const { t } = useTranslation(NS);
  const params = useParams<{ ns?: string; name?: string }>();
  const namespace = props.namespace ?? params.ns ?? '';
  const name = props.name ?? params.name ?? '';
  const { image, failure, deleted } = useCatalogImage(namespace, name);
  if (failure) {
    return (
      <EmptyState titleText={t('Catalog image {{name}} could not be read', { name })} headingLevel="h2" status="danger">
        <EmptyStateBody>{failure.message}</EmptyStateBody>
      </EmptyState>
    );
  }
  if (!image) {
    return <Spinner aria-label={t('Loading')} />;
  }
  return (
    <>
      <PageSection>
        <Title headingLevel="h1" data-test="details-title">
          {image.metadata.name}
        </Title>
        {deleted && <Alert isInline variant="warning" title={t('This catalog image has been deleted.')} />}
      </PageSection>
      <HorizontalNav
        resource={image}
        pages={[
          { href: '', name: t('Details'), component: Details as React.ComponentType<{ obj?: unknown }> },
          { href: 'yaml', name: t('YAML'), component: Yaml as React.ComponentType<{ obj?: unknown }> },
        ]}
      />
    </>
  );
};

export default CatalogImageDetails;
