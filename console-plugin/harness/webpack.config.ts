/* The browser test's page: the plugin's components with the SDK replaced by harness/sdk.tsx. */
import * as path from 'path';
import { Configuration } from 'webpack';
import CopyWebpackPlugin from 'copy-webpack-plugin';
import { rules } from '../webpack.config';

const config: Configuration = {
  mode: 'development',
  entry: path.resolve(__dirname, 'index.tsx'),
  output: { path: path.resolve(__dirname, '../dist-harness'), filename: 'harness.js' },
  resolve: {
    extensions: ['.ts', '.tsx', '.js', '.jsx'],
    alias: { '@openshift-console/dynamic-plugin-sdk$': path.resolve(__dirname, 'sdk.tsx') },
  },
  // PatternFly's base styles bring its fonts and icons.
  module: { rules: [...rules, { test: /\.(woff2?|ttf|eot|svg|png|jpg)$/, type: 'asset/resource' }] },
  plugins: [new CopyWebpackPlugin({ patterns: [{ from: path.resolve(__dirname, 'index.html') }] })],
  devtool: false,
};

export default config;
