/* The plugin as the console loads it: ConsoleRemotePlugin writes plugin-manifest.json and
   plugin-entry.js from package.json's consolePlugin and console-extensions.json. Production
   names carry a content hash, which catalog-apiserver's plugin listener caches for a year. */
import * as path from 'path';
import { Configuration } from 'webpack';
import { ConsoleRemotePlugin } from '@openshift-console/dynamic-plugin-sdk-webpack';
import CopyWebpackPlugin from 'copy-webpack-plugin';

const production = process.env.NODE_ENV === 'production';

/** How sources and styles are loaded, here and in the browser test's page. */
export const rules = [
  {
    test: /\.tsx?$/,
    exclude: /node_modules/,
    use: [{ loader: 'ts-loader', options: { configFile: path.resolve(__dirname, 'tsconfig.json') } }],
  },
  { test: /\.css$/, use: ['style-loader', 'css-loader'] },
  { test: /\.m?js/, resolve: { fullySpecified: false } },
];

const config: Configuration = {
  mode: production ? 'production' : 'development',
  // No entry of its own: ConsoleRemotePlugin adds the module federation container.
  entry: {},
  context: path.resolve(__dirname, 'src'),
  output: {
    path: path.resolve(__dirname, 'dist'),
    filename: production ? '[name]-bundle-[contenthash].min.js' : '[name]-bundle.js',
    chunkFilename: production ? '[name]-chunk-[contenthash].min.js' : '[name]-chunk.js',
  },
  resolve: { extensions: ['.ts', '.tsx', '.js', '.jsx'] },
  module: { rules },
  plugins: [
    new ConsoleRemotePlugin(),
    new CopyWebpackPlugin({ patterns: [{ from: path.resolve(__dirname, 'locales'), to: 'locales' }] }),
  ],
  devtool: production ? false : 'source-map',
  optimization: { chunkIds: production ? 'deterministic' : 'named', minimize: production },
};

export default config;
