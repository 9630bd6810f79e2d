// Rewrites the table of `shoal start` options in README.md from node/start-options.ts (the one
// place flags, defaults and help are written): `npm run docs:options`. A unit test fails while
// the README's table differs from what this writes.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { README_MARKERS, startOptionsMarkdown } from '../node/start-options.js';

/** The README text with the generated table between the markers; throws when a marker is missing. */
export function withOptionsTable(readme: string): string {
  const begin = readme.indexOf(README_MARKERS.begin);
  const end = readme.indexOf(README_MARKERS.end);
  if (begin < 0 || end < begin) throw new Error(`README.md: the markers ${README_MARKERS.begin} ... ${README_MARKERS.end} are missing`);
  return readme.slice(0, begin) + README_MARKERS.begin + '\n\n' + startOptionsMarkdown() + '\n' + readme.slice(end);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const path = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'README.md');
  const before = await readFile(path, 'utf8');
  const after = withOptionsTable(before);
  if (after === before) process.stdout.write('README.md: the options table is up to date\n');
  else {
    await writeFile(path, after);
    process.stdout.write('README.md: options table rewritten\n');
  }
}
