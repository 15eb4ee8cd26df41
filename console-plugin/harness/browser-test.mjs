// The browser test: Chromium (Debian's, headless) opens the plugin's list and details pages
// with their data from a real catalog-apiserver, while kubectl changes the catalog:
//   node harness/browser-test.mjs --kubeconfig K --kubectl PATH --screenshots DIR
// Entries created with kubectl appear; a filter becomes the request's field selector and
// changes the rows; a status change and a new entry arrive through the watch; the details
// page shows the registry metadata and the conditions; bad filters and empty results say what
// to do. Exits non-zero, naming the step, when a step fails.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import puppeteer from 'puppeteer-core';
import { startHarness } from './serve.mjs';

const { values: args } = parseArgs({
  options: {
    kubeconfig: { type: 'string' },
    kubectl: { type: 'string' },
    screenshots: { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    namespace: { type: 'string', default: 'console-test' },
  },
});
const NS = args.namespace;
const WAIT = 20_000;
const here = dirname(fileURLToPath(import.meta.url));

const kubectl = (command, input) =>
  execFileSync(args.kubectl, ['--kubeconfig', args.kubeconfig, '-n', NS, ...command], {
    input,
    encoding: 'utf8',
  });

const entry = (name, distro, architecture, targets) => ({
  apiVersion: 'catalog.automotive.io/v1alpha1',
  kind: 'CatalogImage',
  metadata: { name, namespace: NS, labels: { tier: distro === 'cs9' ? 'silver' : 'gold' } },
  spec: {
    registryUrl: `quay.io/centos-sig-automotive/${name}:latest`,
    metadata: { distro, distroVersion: distro === 'cs9' ? '9' : '10', architecture, exportFormat: 'qcow2', targets },
  },
});

// Documents of a YAML stream (JSON is YAML): a v1 List would need core's OpenAPI, which only
// kube-apiserver serves.
const create = (...entries) => kubectl(['create', '-f', '-'], entries.map((e) => JSON.stringify(e)).join('\n---\n'));

const setStatus = (name, status) =>
  kubectl(['patch', 'catalogimage', name, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status })]);

let step = 'start';
const run = async () => {
  mkdirSync(args.screenshots, { recursive: true });
  step = 'creating entries with kubectl';
  create(
    entry('img-a', 'autosd10-sig', 'aarch64', [{ name: 'rpi4', verified: true }, { name: 'qemu' }]),
    entry('img-b', 'autosd10-sig', 'x86_64', [{ name: 'qemu', verified: true }]),
    entry('img-c', 'cs9', 'x86_64', [{ name: 'qemu' }]),
    entry('img-d', 'cs9', 'aarch64', [{ name: 'ridesx4' }]),
    entry('img-e', 'autosd10-sig', 'x86_64', []),
  );
  setStatus('img-a', {
    phase: 'Available',
    lastVerificationTime: '2026-11-30T10:00:00Z',
    verificationFailures: 0,
    registryMetadata: {
      resolvedDigest: 'sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0',
      mediaType: 'application/vnd.oci.image.index.v1+json',
      sizeBytes: 1610612736,
      layerCount: 3,
      isMultiArch: true,
      platformVariants: [
        { os: 'linux', architecture: 'arm64', digest: 'sha256:aaaa', sizeBytes: 805306368 },
        { os: 'linux', architecture: 'amd64', digest: 'sha256:bbbb', sizeBytes: 805306368 },
      ],
      annotations: { 'org.opencontainers.image.source': 'https://gitlab.com/CentOS/automotive/sample-images' },
    },
    conditions: [
      {
        type: 'Verified',
        status: 'True',
        reason: 'ManifestFound',
        message: 'the registry serves the image index',
        lastTransitionTime: '2026-11-30T10:00:00Z',
      },
    ],
  });
  setStatus('img-b', { phase: 'Available' });

  const harness = await startHarness({ root: join(here, '../dist-harness'), kubeconfig: args.kubeconfig });
  const browser = await puppeteer.launch({
    executablePath: args.chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--window-size=1600,1000'],
    defaultViewport: { width: 1600, height: 1000 },
  });
  try {
    const page = await browser.newPage();
    const failures = [];
    page.on('pageerror', (error) => {
      failures.push(String(error));
      console.error(`page threw: ${error}`);
    });
    page.on('console', (message) => message.type() === 'error' && console.error(`page: ${message.text()}`));
    const waitForRows = async (expected) => {
      step = `waiting for the rows ${expected.join(', ')}`;
      await page.waitForFunction(
        (names) =>
          JSON.stringify([...document.querySelectorAll('[data-test="catalogimage-row"]')].map((r) => r.getAttribute('data-name'))) ===
          JSON.stringify(names),
        { timeout: WAIT },
        expected,
      );
    };

    step = 'opening the list page';
    await page.goto(`${harness.url}#/list/${NS}`);
    await waitForRows(['img-a', 'img-b', 'img-c', 'img-d', 'img-e']);
    await page.screenshot({ path: join(args.screenshots, 'list.png') });

    step = 'filtering by distro';
    const filtered = page.waitForRequest(
      (request) => request.url().includes('fieldSelector=spec.metadata.distro%3Dautosd10-sig') && !request.url().includes('watch=true'),
      { timeout: WAIT },
    );
    await page.type('[data-test="filter-Distro"]', 'autosd10-sig');
    await filtered;
    await waitForRows(['img-a', 'img-b', 'img-e']);

    step = 'a status change arriving through the watch';
    setStatus('img-b', { phase: 'Failed' });
    await page.waitForSelector('[data-name="img-b"] [data-phase="Failed"]', { timeout: WAIT });

    step = 'new entries arriving through the watch, only those the filter selects';
    create(entry('img-f', 'cs9', 'x86_64', []));
    create(entry('img-g', 'autosd10-sig', 'x86_64', [{ name: 'am62sk', verified: true }]));
    await waitForRows(['img-a', 'img-b', 'img-e', 'img-g']);
    await page.screenshot({ path: join(args.screenshots, 'filtered-live.png') });

    step = 'a deletion arriving through the watch';
    kubectl(['delete', 'catalogimage', 'img-e']);
    await waitForRows(['img-a', 'img-b', 'img-g']);

    step = 'a filter nothing matches';
    await page.select('[data-test="filter-Phase"]', 'Unavailable');
    await page.waitForSelector('[data-test="list-empty"]', { timeout: WAIT });

    step = 'a label selector the server refuses';
    await page.select('[data-test="filter-Phase"]', '');
    await page.type('[data-test="filter-Labels"]', 'tier in (gold');
    await page.waitForSelector('[data-test="list-error"]', { timeout: WAIT });
    await page.screenshot({ path: join(args.screenshots, 'error.png') });

    step = 'the details page';
    await page.goto(`${harness.url}#/details/${NS}/img-a`);
    await page.waitForSelector('[data-test="platform-variants"] tbody tr:nth-child(2)', { timeout: WAIT });
    const conditions = await page.$eval('[data-test="conditions"]', (table) => table.textContent);
    if (!conditions.includes('ManifestFound') || !conditions.includes('the registry serves the image index')) {
      throw new Error(`the conditions table shows: ${conditions}`);
    }
    const annotations = await page.$eval('[data-test="annotations"]', (table) => table.textContent);
    if (!annotations.includes('org.opencontainers.image.source')) {
      throw new Error(`the annotations table shows: ${annotations}`);
    }
    await page.screenshot({ path: join(args.screenshots, 'details.png'), fullPage: true });

    step = 'a status change on the details page';
    setStatus('img-a', { verificationFailures: 3, phase: 'Unavailable' });
    await page.waitForFunction(
      () => document.querySelector('[data-test="verification"]')?.textContent?.includes('Unavailable'),
      { timeout: WAIT },
    );

    step = 'the YAML tab';
    await page.click('[data-test="tab-YAML"]');
    await page.waitForFunction(() => document.querySelector('[data-test="yaml"]')?.textContent?.includes('"name": "img-a"'), {
      timeout: WAIT,
    });
    if (failures.length > 0) {
      throw new Error(`the page threw: ${failures.join('; ')}`);
    }
    console.log(`browser test passed; screenshots in ${args.screenshots}`);
  } catch (error) {
    const pages = await browser.pages();
    await pages[pages.length - 1]?.screenshot({ path: join(args.screenshots, 'failure.png') });
    throw error;
  } finally {
    await browser.close();
    harness.close();
  }
};

run().catch((error) => {
  console.error(`browser test failed while ${step}: ${error.stack ?? error}`);
  process.exit(1);
});
