// The browser test's web server, on a loopback port: the test page (dist-harness/) and, as
// the console's backend does under /api/kubernetes/, a proxy to the cluster, here
// catalog-apiserver reached with a kubeconfig's client certificate. Responses are streamed,
// so watches pass through as they happen.
import { createServer } from 'node:http';
import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'application/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.woff2': 'font/woff2',
  '.woff': 'font/woff',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
};

/** The server URL and credentials of a kubeconfig that embeds them (catalog-apiserver
 *  standalone writes such a one). */
export const readKubeconfig = (path) => {
  const text = readFileSync(path, 'utf8');
  const field = (name) => {
    const match = text.match(new RegExp(`^\\s*${name}:\\s*(\\S+)\\s*$`, 'm'));
    if (!match) {
      throw new Error(`${path} has no ${name}`);
    }
    return match[1];
  };
  const decoded = (name) => Buffer.from(field(name), 'base64');
  return {
    server: new URL(field('server')),
    ca: decoded('certificate-authority-data'),
    cert: decoded('client-certificate-data'),
    key: decoded('client-key-data'),
  };
};

/** Serves `root` and proxies /api/kubernetes/ with `kubeconfig`; resolves to its base URL
 *  and a close function. */
export const startHarness = ({ root, kubeconfig }) => {
  const cluster = readKubeconfig(kubeconfig);
  const server = createServer((incoming, outgoing) => {
    const url = new URL(incoming.url, 'http://harness');
    if (url.pathname.startsWith('/api/kubernetes/')) {
      const upstream = request(
        {
          host: cluster.server.hostname,
          port: cluster.server.port,
          method: incoming.method,
          path: url.pathname.slice('/api/kubernetes'.length) + url.search,
          headers: { accept: incoming.headers.accept ?? 'application/json', 'content-type': incoming.headers['content-type'] ?? 'application/json' },
          ca: cluster.ca,
          cert: cluster.cert,
          key: cluster.key,
        },
        (answer) => {
          outgoing.writeHead(answer.statusCode, answer.headers);
          answer.pipe(outgoing);
        },
      );
      upstream.on('error', (error) => {
        outgoing.writeHead(502, { 'content-type': 'text/plain' });
        outgoing.end(String(error));
      });
      // The browser gone (a watch it stopped): so is the request upstream.
      outgoing.on('close', () => upstream.destroy());
      incoming.pipe(upstream);
      return;
    }
    const file = normalize(url.pathname === '/' ? '/index.html' : url.pathname);
    try {
      const body = readFileSync(join(root, file));
      outgoing.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      outgoing.end(body);
    } catch {
      outgoing.writeHead(404, { 'content-type': 'text/plain' });
      outgoing.end('not found');
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}/`,
        close: () => {
          server.closeAllConnections();
          server.close();
        },
      });
    });
  });
};
