// Real code to train and measure tokenizers on: files of pinned packages (the lockfile fixes them).
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.join(__dirname, '..', '..', '..', 'node_modules');

function read(relative: string, maxChars = Infinity): string {
  return fs.readFileSync(path.join(root, relative), 'utf8').slice(0, maxChars);
}

/** ~320 KB of TypeScript declarations and bundled JavaScript. */
export function trainingTexts(): string[] {
  return [read('typescript/lib/lib.es5.d.ts'), read('@huggingface/tokenizers/dist/tokenizers.cjs')];
}

/** Code not in the training set. */
export function heldOutText(): string {
  return read('typescript/lib/lib.es2015.core.d.ts') + read('typescript/lib/lib.dom.d.ts', 60_000);
}

/** Code with the characters that break naive tokenizers. */
export const trickyCode = [
  'def grüße(name: str) -> str:\r\n\treturn f"Hallo, {name}! 👋🏽"\r\n',
  '// 日本語のコメント — em dash, “quotes”, ½, ﬁ ligature, e\u0301 (combining), Ω\n',
  'const emoji = "👨‍👩‍👧‍👦 🏳️‍🌈 😀";\tconst nul = "\u0000";\n\n\n',
  '\t\tif (x <= 0x1F) {  \r\n\t\t\treturn `${a}${b}`;\n\t\t}\r\n',
  '    \u00a0\u2003\u3000 trailing spaces   \n\u000b\f',
  "It's 'they're' I'M we'll he'd; 12345678901234567890 3.14e-10 #!/usr/bin/env node\n",
].join('');
