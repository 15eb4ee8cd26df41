/* The resource as the plugin reads it (catalogimage-api.md has every field). */

export const GROUP = 'catalog.automotive.io';
export const VERSION = 'v1alpha1';
export const KIND = 'CatalogImage';
export const PLURAL = 'catalogimages';
export const MODEL = { group: GROUP, version: VERSION, kind: KIND };
/** The console's reference to the kind, as in its URLs: group~version~kind. */
export const REFERENCE = `${GROUP}~${VERSION}~${KIND}`;

export type Target = { name: string; verified?: boolean; notes?: string };

export type Platform = { architecture?: string; os?: string; variant?: string };

export type Condition = {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
};

export type CatalogImage = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace: string;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
  };
  spec: {
    registryUrl: string;
    digest?: string;
    tags?: string[];
    verificationInterval?: string;
    builderImage?: string;
    metadata?: {
      architecture?: string;
      os?: string;
      variant?: string;
      distro?: string;
      distroVersion?: string;
      targets?: Target[];
      bootc?: boolean;
      buildMode?: string;
      exportFormat?: string;
    };
  };
  status?: {
    phase?: string;
    conditions?: Condition[];
    lastVerificationTime?: string;
    verificationFailures?: number;
    publishedAt?: string;
    sourceImageBuild?: string;
    registryMetadata?: {
      resolvedDigest?: string;
      mediaType?: string;
      sizeBytes?: number;
      layerCount?: number;
      platform?: Platform;
      createdAt?: string;
      isMultiArch?: boolean;
      /** One a platform: its os, architecture and variant beside its digest and size. */
      platformVariants?: (Platform & { digest?: string; sizeBytes?: number })[];
      annotations?: Record<string, string>;
    };
  };
};

/** One page of a list, as the server sends it. */
export type CatalogImageList = {
  items: CatalogImage[];
  metadata: { resourceVersion: string; continue?: string; remainingItemCount?: number };
};

/** A watch event, one JSON object per line. */
export type WatchEvent = {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: CatalogImage & { code?: number; message?: string };
};
