// Writes locales/en/plugin__catalog-console-plugin.json: every t('...') key in src, each its
// own English text (the keys are English), sorted. Run after changing a text: npm run i18n.
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const LOCALE = 'locales/en/plugin__catalog-console-plugin.json';

const files = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : /\.tsx?$/.test(name) ? [path] : [];
  });

/** The keys the sources translate, and those console-extensions.json names. */
export const keys = () => {
  const found = new Set();
  for (const file of files('src')) {
    for (const match of readFileSync(file, 'utf8').matchAll(/\bt\(\s*'((?:[^'\\]|\\.)*)'/g)) {
      found.add(match[1].replace(/\\'/g, "'"));
    }
  }
  for (const match of readFileSync('console-extensions.json', 'utf8').matchAll(/%plugin__catalog-console-plugin~([^%]+)%/g)) {
    found.add(match[1]);
  }
  return [...found].sort();
};

if (process.argv[1] && process.argv[1].endsWith('i18n.mjs')) {
  const texts = Object.fromEntries(keys().map((key) => [key, key]));
  writeFileSync(LOCALE, `${JSON.stringify(texts, null, 2)}\n`);
  console.log(`${Object.keys(texts).length} texts in ${LOCALE}`);
}
