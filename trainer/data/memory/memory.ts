// Repository memory: what followed the text before the cursor elsewhere in the repository. An
// index over word units (identifiers, numbers, single punctuation characters and line breaks;
// spaces and indentation are not units, so formatting differences do not break a match) that
// finds the places whose preceding units agree longest with the query's, and proposes what
// followed them up to the end of their line. This is the cache-LM idea: n-gram caches are strong
// on project-specific code, and copying a line the repository already writes is often exactly
// right. Hand-written: no npm package indexes code text by word units with backward extension.

export interface MemoryDocument {
  path: string;
  text: string;
}

export interface MemoryMatch {
  /** Rest of the line to propose at the cursor ('' never: no match is null). */
  text: string;
  /** Units before the cursor that agree with the place it was copied from. */
  matchedUnits: number;
  /** Places that agree that many units and propose this same text. */
  votes: number;
  /** Places that agree that many units (whatever they propose). */
  places: number;
  /** Where it was copied from. */
  path: string;
}

export interface MemoryOptions {
  /** Units of the key that finds candidate places. */
  keyUnits: number;
  /** Agreement is counted up to this many units. */
  maxUnits: number;
  /** Candidate places checked per query (for a frequent key, the last in index order). */
  maxCandidates: number;
}

export const defaultMemoryOptions: MemoryOptions = { keyUnits: 3, maxUnits: 48, maxCandidates: 400 };

/** Places the index can hold (the sort key gives a place 21 bits). */
const MAX_UNITS = 2 ** 21;

const unitPattern = /[A-Za-z_$\u00c0-\uffff][\w$\u00c0-\uffff]*|\d[\w.]*|\n|[^\s\w$]/g;
const wordChar = /[\w$\u00c0-\uffff]/;

interface Units {
  ids: number[];
  starts: number[];
  ends: number[];
}

/** Interns unit strings as small integers shared by the corpus and the queries. */
class Vocabulary {
  private readonly ids = new Map<string, number>();

  id(unit: string, add: boolean): number {
    let id = this.ids.get(unit);
    if (id === undefined) {
      if (!add) return -2;
      id = this.ids.size;
      this.ids.set(unit, id);
    }
    return id;
  }
}

function unitsOf(text: string, vocabulary: Vocabulary, add: boolean, from = 0): Units {
  const units: Units = { ids: [], starts: [], ends: [] };
  unitPattern.lastIndex = from;
  for (let match = unitPattern.exec(text); match !== null; match = unitPattern.exec(text)) {
    units.ids.push(vocabulary.id(match[0], add));
    units.starts.push(match.index);
    units.ends.push(match.index + match[0].length);
  }
  return units;
}

function keyOf(ids: ArrayLike<number>, end: number, length: number): number {
  let hash = 0x811c9dc5;
  for (let i = end - length; i < end; i++) hash = Math.imul(hash ^ (ids[i] + 1), 0x01000193);
  return hash >>> 0;
}

/** The end of the line that starts at or after `from` ('\n' excluded). */
function lineEnd(text: string, from: number): number {
  const newline = text.indexOf('\n', from);
  return newline < 0 ? text.length : newline;
}

/**
 * The query as the index sees it: the units before the cursor, with a word the cursor is inside
 * (typed so far) taken apart, since the unit it belongs to is not complete yet.
 */
interface Query {
  ids: number[];
  partial: string;
  /** Whitespace typed after the last unit on the cursor line: the continuation drops as much. */
  afterSpace: boolean;
  /** The cursor line holds only indentation so far. */
  atLineStart: boolean;
}

export class RepositoryMemory {
  private readonly vocabulary = new Vocabulary();
  private readonly ids: Int32Array;
  private readonly starts: Int32Array;
  private readonly ends: Int32Array;
  private readonly doc: Int32Array;
  private readonly documents: MemoryDocument[];
  /** Unit positions sorted by the key of the units ending there. */
  private readonly sortedPositions: Int32Array;
  private readonly sortedKeys: Uint32Array;

  constructor(
    documents: readonly MemoryDocument[],
    readonly options: MemoryOptions = defaultMemoryOptions,
  ) {
    this.documents = [];
    const ids: number[] = [];
    const starts: number[] = [];
    const ends: number[] = [];
    const doc: number[] = [];
    for (const document of documents) {
      const units = unitsOf(document.text, this.vocabulary, true);
      // The sort key packs a place into 21 bits: documents past that many units stay out.
      if (ids.length + units.ids.length + 1 >= MAX_UNITS) break;
      const index = this.documents.push(document) - 1;
      for (let i = 0; i < units.ids.length; i++) {
        ids.push(units.ids[i]);
        starts.push(units.starts[i]);
        ends.push(units.ends[i]);
        doc.push(index);
      }
      // A document boundary never matches anything.
      ids.push(-1);
      starts.push(document.text.length);
      ends.push(document.text.length);
      doc.push(index);
    }
    this.ids = Int32Array.from(ids);
    this.starts = Int32Array.from(starts);
    this.ends = Int32Array.from(ends);
    this.doc = Int32Array.from(doc);
    const k = options.keyUnits;
    // Sorted as one float64 per place, key * 2^21 + position (exact below 2^53): a numeric typed
    // array sort, several times faster than sorting indices with a comparator.
    const packed: number[] = [];
    for (let i = k - 1; i < this.ids.length; i++) {
      let ok = true;
      for (let j = i - k + 1; j <= i; j++) if (this.ids[j] < 0) ok = false;
      if (ok) packed.push(keyOf(this.ids, i + 1, k) * 2 ** 21 + i);
    }
    const sorted = Float64Array.from(packed).sort();
    this.sortedPositions = new Int32Array(sorted.length);
    this.sortedKeys = new Uint32Array(sorted.length);
    for (let i = 0; i < sorted.length; i++) {
      const key = Math.floor(sorted[i] / 2 ** 21);
      this.sortedKeys[i] = key;
      this.sortedPositions[i] = sorted[i] - key * 2 ** 21;
    }
  }

  get size(): { documents: number; units: number } {
    return { documents: this.documents.length, units: this.ids.length };
  }

  /** The continuation of `prefix` (text before the cursor) that the repository agrees on best, or null. */
  lookup(prefix: string): MemoryMatch | null {
    const query = this.queryOf(prefix);
    const k = this.options.keyUnits;
    if (query.ids.length < k) return null;
    const key = keyOf(query.ids, query.ids.length, k);
    let low = lowerBound(this.sortedKeys, key);
    const high = lowerBound(this.sortedKeys, key + 1);
    // The newest places of a very frequent key (later documents, later in each).
    if (high - low > this.options.maxCandidates) low = high - this.options.maxCandidates;
    const scored = new Map<string, { votes: number; path: string }>();
    let best = 0;
    let places = 0;
    for (let s = high - 1; s >= low; s--) {
      const position = this.sortedPositions[s];
      const agreed = this.agreement(query.ids, position);
      if (agreed < k || agreed < best) continue;
      const text = this.continuation(position, query);
      if (text === null) continue;
      if (agreed > best) {
        best = agreed;
        places = 0;
        scored.clear();
      }
      places++;
      const entry = scored.get(text);
      if (entry) entry.votes++;
      else scored.set(text, { votes: 1, path: this.documents[this.doc[position]].path });
    }
    let chosen: MemoryMatch | null = null;
    for (const [text, entry] of scored) {
      if (!chosen || entry.votes > chosen.votes)
        chosen = { text, matchedUnits: best, votes: entry.votes, places, path: entry.path };
    }
    return chosen;
  }

  private queryOf(prefix: string): Query {
    const lineStart = prefix.lastIndexOf('\n') + 1;
    const line = prefix.slice(lineStart);
    let partial = '';
    let end = prefix.length;
    while (end > lineStart && wordChar.test(prefix[end - 1])) end--;
    // A word touching the cursor is still being typed (a number too).
    if (end < prefix.length) partial = prefix.slice(end);
    // Only the last few thousand characters can take part in a match.
    const from = Math.max(0, end - 4096);
    const units = unitsOf(prefix.slice(from, end), this.vocabulary, false);
    const ids = units.ids;
    // A query that starts mid-unit (the window cut a word) drops that unit.
    if (from > 0 && units.starts[0] === 0) ids.shift();
    return {
      ids: ids.slice(-this.options.maxUnits - 1),
      partial,
      afterSpace: partial === '' && /[ \t]$/.test(line) && line.trim() !== '',
      atLineStart: line.trim() === '',
    };
  }

  /** How many units before the cursor agree with those ending at `position`. */
  private agreement(query: readonly number[], position: number): number {
    let n = 0;
    while (
      n < this.options.maxUnits &&
      n < query.length &&
      position - n >= 0 &&
      this.ids[position - n] === query[query.length - 1 - n] &&
      query[query.length - 1 - n] >= 0
    )
      n++;
    return n;
  }

  /** What followed the place to the end of its line, as the cursor would continue it; null if nothing fits. */
  private continuation(position: number, query: Query): string | null {
    const document = this.documents[this.doc[position]];
    let from = this.ends[position];
    if (query.partial !== '') {
      // The next unit must start with the word typed so far, right after the matched units.
      const next = position + 1;
      if (next >= this.ids.length || this.doc[next] !== this.doc[position] || this.ids[next] < 0) return null;
      const start = this.starts[next];
      if (!document.text.startsWith(query.partial, start)) return null;
      if (this.ids[position] !== this.vocabulary.id('\n', false) && document.text.slice(from, start).includes('\n'))
        return null;
      from = start + query.partial.length;
    } else if (query.atLineStart || query.afterSpace) {
      while (from < document.text.length && (document.text[from] === ' ' || document.text[from] === '\t')) from++;
    }
    const text = document.text.slice(from, lineEnd(document.text, from)).replace(/\s+$/, '');
    return text === '' ? null : text;
  }
}

function lowerBound(keys: Uint32Array, key: number): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (keys[mid] < key) low = mid + 1;
    else high = mid;
  }
  return low;
}
