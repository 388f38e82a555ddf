// Post-processing of a raw model completion before it becomes ghost text: stop rules (block end,
// blank line, a line the suffix already has, max lines), removal of text the suffix already
// holds, and bracket balancing. Pure functions over strings, so they are tested as a table.

export interface PostprocessInput {
  /** Document text before the cursor. */
  prefix: string;
  /** Document text after the cursor. */
  suffix: string;
  /** Decoded model output (the FIM middle). */
  completion: string;
  maxLines: number;
}

const openers: Record<string, string> = { '(': ')', '[': ']', '{': '}' };
const closers: Record<string, string> = { ')': '(', ']': '[', '}': '{' };

/**
 * Text stop sequences for the decoder, so it does not produce what post-processing would cut:
 * one line when the cursor is inside a line (text before it on the line, or after it), a block
 * (up to a blank line) when the cursor starts a fresh line. Decoding time is most of a
 * completion's latency on a CPU.
 */
export function stopSequencesFor(prefix: string, suffix: string): string[] {
  const linePrefix = prefix.slice(prefix.lastIndexOf('\n') + 1);
  const restOfLine = firstLine(suffix);
  return linePrefix.trim() !== '' || restOfLine.trim() !== '' ? ['\n'] : ['\n\n'];
}

/** Returns the text to show, or '' when nothing useful is left. */
export function postprocessCompletion(input: PostprocessInput): string {
  const { prefix, suffix } = input;
  let text = cutRepetition(cutAtUnprintable(input.completion.replace(/\r\n/g, '\n')));
  const linePrefix = prefix.slice(prefix.lastIndexOf('\n') + 1);
  const restOfLine = firstLine(suffix);

  text = applyStopRules(text, linePrefix, suffix, input.maxLines);
  text = balanceBrackets(text, prefix, restOfLine);
  text = removeSuffixOverlap(text, suffix);
  text = text.replace(/\s+$/, '');
  if (text.trim() === '') return '';
  return text;
}

// Control characters (but tab and newline), U+FFFD (a token sequence that is not valid UTF-8) and
// bidirectional overrides (Trojan Source) are never code the user wants typed.
const unprintable = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\ufffd\u202a-\u202e\u2066-\u2069]/;

/**
 * A piece of three or more characters that starts a word and holds a letter, repeated three times
 * in a row on one line (`.server.server.server`), is a decoding loop, not code: the completion
 * ends after its first occurrence. Numbers alone (`[0, 0, 0, 0]`) are data, not a loop.
 */
const loop = /\b(\w[^\n]{2,39}?)\1\1/g;

export function cutRepetition(text: string): string {
  loop.lastIndex = 0;
  for (let match = loop.exec(text); match !== null; match = loop.exec(text)) {
    if (/[A-Za-z]/.test(match[1])) return text.slice(0, match.index + match[1].length);
    loop.lastIndex = match.index + 1;
  }
  return text;
}

/** The completion up to its first unprintable character. */
export function cutAtUnprintable(text: string): string {
  const match = unprintable.exec(text);
  return match ? text.slice(0, match.index) : text;
}

function firstLine(text: string): string {
  const newline = text.indexOf('\n');
  return newline < 0 ? text : text.slice(0, newline);
}

function indentWidth(line: string): number {
  let width = 0;
  for (const char of line) {
    if (char === ' ') width += 1;
    else if (char === '\t') width += 4;
    else break;
  }
  return width;
}

/** The first non-blank line after the cursor's line, trimmed; '' if none. */
function nextSuffixLine(suffix: string): string {
  const lines = suffix.split('\n').slice(1);
  for (const line of lines) if (line.trim() !== '') return line.trim();
  return '';
}

function applyStopRules(text: string, linePrefix: string, suffix: string, maxLines: number): string {
  const lines = text.split('\n');
  // Indentation of the block the cursor is in: the cursor line's indentation (the cursor column
  // when the line is blank so far).
  const baseIndent = indentWidth(linePrefix);
  const suffixLine = nextSuffixLine(suffix);
  const kept: string[] = [];
  let sawContent = lines[0].trim() !== '';
  let contentLines = sawContent ? 1 : 0;
  kept.push(lines[0]);
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const trimmed = line.trim();
    if (trimmed === '') {
      // Blank line after content ends the suggestion (one statement or block at a time).
      if (sawContent) break;
      kept.push(line);
      continue;
    }
    // A line the document already has right after the cursor: the model is repeating the suffix.
    if (suffixLine !== '' && trimmed === suffixLine) break;
    const indent = indentWidth(line);
    // Dedent below the cursor's block: the block ended.
    if (indent < baseIndent) break;
    if (contentLines >= maxLines) break;
    kept.push(line);
    sawContent = true;
    contentLines++;
    // A closer at the cursor's own level closes the block the completion opened: stop after it.
    if (indent === baseIndent && trimmed[0] in closers && opensBlock(kept)) break;
  }
  return kept.join('\n');
}

/** True when the lines kept so far opened a bracket that is now closed at the base level. */
function opensBlock(kept: string[]): boolean {
  let depth = 0;
  for (const line of kept) {
    for (const char of stripStrings(line)) {
      if (char in openers) depth++;
      else if (char in closers) depth--;
    }
  }
  return depth <= 0;
}

/** Blanks out string literal contents and line comments so brackets inside them are not counted. */
function stripStrings(line: string): string {
  let out = '';
  let quote = '';
  for (let i = 0; i < line.length; i++) {
    const char = line[i];
    if (quote) {
      if (char === '\\') {
        i++;
        out += '  ';
        continue;
      }
      if (char === quote) quote = '';
      out += ' ';
      continue;
    }
    if (char === '"' || char === "'" || char === '`') {
      quote = char;
      out += ' ';
      continue;
    }
    if (char === '/' && line[i + 1] === '/') break;
    if (char === '#' && (i === 0 || /\s/.test(line[i - 1]))) break;
    out += char;
  }
  return out;
}

/** Brackets opened in `prefix` and not yet closed, innermost last. */
function unclosedBrackets(prefix: string): string[] {
  const stack: string[] = [];
  for (const line of prefix.split('\n')) {
    for (const char of stripStrings(line)) {
      if (char in openers) stack.push(char);
      else if (char in closers) {
        if (stack.length > 0 && stack[stack.length - 1] === closers[char]) stack.pop();
      }
    }
  }
  return stack;
}

/**
 * Cuts the completion at a closing bracket that closes nothing: one the prefix never opened, or
 * one the editor already has right after the cursor (an auto-closed bracket).
 */
function balanceBrackets(text: string, prefix: string, restOfLine: string): string {
  const prefixStack = unclosedBrackets(prefix);
  const completionStack: string[] = [];
  const lines = text.split('\n');
  let offset = 0;
  for (let lineIndex = 0; lineIndex < lines.length; lineIndex++) {
    const visible = stripStrings(lines[lineIndex]);
    for (let i = 0; i < visible.length; i++) {
      const char = visible[i];
      if (char in openers) {
        completionStack.push(char);
        continue;
      }
      if (!(char in closers)) continue;
      if (completionStack.length > 0) {
        if (completionStack[completionStack.length - 1] !== closers[char])
          return text.slice(0, offset + i).replace(/\s+$/, '');
        completionStack.pop();
        continue;
      }
      // Closes a bracket from the prefix.
      const expected = prefixStack.pop();
      const alreadyClosed = restOfLine.trimStart().startsWith(char);
      if (expected !== closers[char] || (lineIndex === 0 && alreadyClosed)) {
        return text.slice(0, offset + i).replace(/\s+$/, '');
      }
    }
    offset += lines[lineIndex].length + 1;
  }
  return text;
}

/**
 * Removes the completion's tail where it repeats what follows the cursor: the whole rest of the
 * cursor line (auto-closed brackets, a trailing `;`), or whole lines the suffix starts with.
 */
function removeSuffixOverlap(text: string, suffix: string): string {
  const rest = firstLine(suffix).trim();
  const trimmedText = text.replace(/\s+$/, '');
  if (rest !== '' && trimmedText.endsWith(rest) && trimmedText.length > rest.length) {
    return trimmedText.slice(0, trimmedText.length - rest.length);
  }
  const lines = trimmedText.split('\n');
  const suffixLines = suffix
    .split('\n')
    .slice(rest === '' ? 1 : 0)
    .map((line) => line.trim())
    .filter((line) => line !== '');
  for (let overlap = Math.min(lines.length - 1, suffixLines.length); overlap >= 1; overlap--) {
    const tail = lines.slice(lines.length - overlap).map((line) => line.trim());
    if (tail.every((line, i) => line === suffixLines[i])) return lines.slice(0, lines.length - overlap).join('\n');
  }
  return trimmedText;
}
