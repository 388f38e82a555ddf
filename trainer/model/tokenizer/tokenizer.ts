// A Hugging Face tokenizer.json, run by @huggingface/tokenizers (pure JS), plus what Idiom needs
// on top: the FIM template (fim.ts) / end-of-text / file-separator ids found by name, and clear errors.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer as HfTokenizer, SplitPreTokenizer } from '@huggingface/tokenizers';
import { byteLevelTokenToBytes, BYTE_TO_CHAR } from './byte-level';
import { type FimTemplate, findFimTemplate } from './fim';
export const EOS_TOKEN_NAMES = ['<|endoftext|>', '</s>', '<｜end▁of▁sentence｜>'] as const;
export const FILE_SEPARATOR_TOKEN_NAMES = ['<|file_sep|>', '<file_sep>'] as const;

export interface EncodeOptions {
  /**
   * Encode special-token strings in `text` (e.g. a literal "<|endoftext|>" in a source file) as
   * ordinary text instead of as the special id. Use it for untrusted text such as repository files.
   */
  specialsAsText?: boolean;
}

export class Tokenizer {
  /** One past the largest id (model vocabulary and added tokens). */
  readonly vocabSize: number;
  /** The family's FIM tokens and template (fim.ts), null without them. */
  readonly fim: FimTemplate | null;
  readonly eos: number | null;
  readonly fileSeparator: number | null;
  /** Ids of the added tokens marked special. */
  readonly specialIds: ReadonlySet<number>;
  private readonly addedTokenContents: string[];
  private readonly byteLevel: boolean;
  /** Set when the pipeline is Split -> ByteLevel -> BPE (Qwen2, Llama 3, ours): see encodeFast. */
  private readonly fastPath: FastPath | null;
  private readonly pieceCache = new Map<string, number[]>();

  private constructor(
    private readonly inner: HfTokenizer,
    readonly source: string,
    tokenizerJson: Record<string, unknown>,
  ) {
    let maxId = -1;
    for (const id of inner.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    const added = [...inner.get_added_tokens_decoder().values()];
    this.specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    this.addedTokenContents = added.map((t) => t.content);

    this.fim = findFimTemplate(this);
    this.eos = firstId(this, EOS_TOKEN_NAMES);
    this.fileSeparator = firstId(this, FILE_SEPARATOR_TOKEN_NAMES);
    const decoder = tokenizerJson.decoder as { type?: unknown } | null | undefined;
    this.byteLevel = decoder?.type === 'ByteLevel';
    this.fastPath = detectFastPath(tokenizerJson, added);
  }

  /** Loads `tokenizer.json` from a file path or from a folder holding one. */
  static async load(pathOrDir: string): Promise<Tokenizer> {
    let file = pathOrDir;
    try {
      if ((await fs.promises.stat(pathOrDir)).isDirectory()) file = path.join(pathOrDir, 'tokenizer.json');
    } catch (error) {
      throw new Error(
        `${pathOrDir}: cannot read tokenizer (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
      );
    }
    let text: string;
    try {
      text = await fs.promises.readFile(file, 'utf8');
    } catch (error) {
      throw new Error(`${file}: cannot read tokenizer (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
    return Tokenizer.fromJson(text, file);
  }

  /** Builds a tokenizer from tokenizer.json text or its parsed object; `source` names it in errors. */
  static fromJson(json: string | object, source = 'tokenizer.json'): Tokenizer {
    let parsed: unknown = json;
    if (typeof json === 'string') {
      try {
        parsed = JSON.parse(json);
      } catch (error) {
        throw new Error(`${source}: invalid tokenizer.json: not JSON (${(error as Error).message})`);
      }
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new Error(`${source}: invalid tokenizer.json: must be a JSON object`);
    }
    const object = parsed as Record<string, unknown>;
    const model = object.model as Record<string, unknown> | undefined;
    if (model === null || typeof model !== 'object' || Array.isArray(model)) {
      throw new Error(`${source}: invalid tokenizer.json: missing "model" object`);
    }
    if (model.vocab === null || typeof model.vocab !== 'object') {
      throw new Error(`${source}: invalid tokenizer.json: missing "model.vocab"`);
    }
    if (model.type === 'BPE' && !Array.isArray(model.merges)) {
      throw new Error(`${source}: invalid tokenizer.json: BPE model needs a "merges" list`);
    }
    if (object.added_tokens !== undefined && !Array.isArray(object.added_tokens)) {
      throw new Error(`${source}: invalid tokenizer.json: "added_tokens" must be a list`);
    }
    // The library expects these keys to exist (null when unused).
    const complete: Record<string, unknown> = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      ...object,
    };
    complete.added_tokens = object.added_tokens ?? [];
    let inner: HfTokenizer;
    try {
      inner = new HfTokenizer(complete, {});
      inner.encode('Idiom probe: x = 1;', { add_special_tokens: false }); // surfaces lazy failures now
    } catch (error) {
      throw new Error(`${source}: invalid tokenizer.json: ${oneLine((error as Error).message ?? String(error))}`);
    }
    const tokenizer = new Tokenizer(inner, source, complete);
    if (tokenizer.vocabSize <= 0) throw new Error(`${source}: invalid tokenizer.json: empty vocabulary`);
    return tokenizer;
  }

  /** Token ids for `text`; no BOS/EOS or template tokens are added. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    if (options.specialsAsText && this.addedTokenContents.some((content) => text.includes(content))) {
      return this.encodeIgnoringAddedTokens(text);
    }
    if (this.fastPath) return this.encodeFast(text, this.fastPath);
    return this.encodeWithLibrary(text);
  }

  /** The library's own encode, bypassing Idiom's cached path (for tests and diagnostics). */
  encodeWithLibrary(text: string): number[] {
    return this.inner.encode(text, { add_special_tokens: false }).ids;
  }

  /** Text for `ids`; special tokens are kept; incomplete UTF-8 sequences become U+FFFD. */
  decode(ids: readonly number[]): string {
    if (ids.length === 0) return '';
    for (const id of ids) this.checkId(id);
    return this.inner.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /** The id of a token by its vocabulary string (e.g. "<|fim_prefix|>"). */
  tokenId(name: string): number | undefined {
    return this.inner.token_to_id(name);
  }

  /** The vocabulary string of `id` (byte-level form for BPE pieces). */
  idToToken(id: number): string | undefined {
    return this.inner.id_to_token(id);
  }

  /**
   * The raw bytes a token stands for, for streaming decode and bits-per-byte metrics. Exact for
   * byte-level tokenizers; otherwise the UTF-8 of the token decoded alone.
   */
  tokenBytes(id: number): Uint8Array {
    this.checkId(id);
    const token = this.inner.id_to_token(id) as string;
    if (this.byteLevel && !this.addedTokenContents.includes(token)) {
      const bytes = byteLevelTokenToBytes(token);
      if (bytes) return bytes;
    }
    return new TextEncoder().encode(
      this.inner.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
    );
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.inner.id_to_token(id) === undefined) {
      throw new RangeError(`${this.source}: token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
    }
  }

  /**
   * Same steps as the library (added-token split, normalizer, regex split, bytes -> characters,
   * BPE), with the ids of each regex piece cached in a plain Map: the library's LRU cache
   * reorders on every hit and its ByteLevel step re-encodes every piece, which held encoding
   * to about 1 MB/s.
   */
  private encodeFast(text: string, fast: FastPath): number[] {
    const ids: number[] = [];
    const inner = this.inner;
    const model = inner.model!;
    const encodeSection = (section: string): void => {
      const normalized = inner.normalizer ? inner.normalizer(section) : section;
      if (normalized.length === 0) return;
      for (const piece of fast.split.pre_tokenize_text(normalized)) {
        let pieceIds = this.pieceCache.get(piece);
        if (pieceIds === undefined) {
          const bytes = fast.encoder.encode(piece);
          let chars = '';
          for (let i = 0; i < bytes.length; i++) chars += BYTE_TO_CHAR[bytes[i]];
          pieceIds = model([chars]).map((token) => {
            const id = model.tokens_to_ids.get(token) ?? model.unk_token_id;
            if (id === undefined)
              throw new Error(
                `${this.source}: cannot encode piece ${JSON.stringify(token)} (not in the vocabulary, no unk token)`,
              );
            return id;
          });
          if (this.pieceCache.size >= PIECE_CACHE_LIMIT) this.pieceCache.clear();
          this.pieceCache.set(piece, pieceIds);
        }
        for (const id of pieceIds) ids.push(id);
      }
    };
    if (!fast.addedPattern) {
      encodeSection(text);
      return ids;
    }
    let previous = 0;
    for (const match of text.matchAll(fast.addedPattern)) {
      const index = match.index ?? 0;
      if (index > previous) encodeSection(text.slice(previous, index));
      ids.push(fast.addedIds.get(match[0]) as number);
      previous = index + match[0].length;
    }
    if (previous < text.length) encodeSection(text.slice(previous));
    return ids;
  }

  /** Normalizer -> pre-tokenizer -> model, skipping the added-token splitter. */
  private encodeIgnoringAddedTokens(text: string): number[] {
    const inner = this.inner;
    const model = inner.model;
    if (!model) return inner.encode(text, { add_special_tokens: false }).ids;
    const normalized = inner.normalizer ? inner.normalizer(text) : text;
    if (normalized.length === 0) return [];
    const pieces = inner.pre_tokenizer ? inner.pre_tokenizer(normalized, { section_index: 0 }) : [normalized];
    const tokens = model(pieces);
    return tokens.map((token) => {
      const id = model.tokens_to_ids.get(token) ?? model.unk_token_id;
      if (id === undefined)
        throw new Error(`${this.source}: cannot encode piece ${JSON.stringify(token)} (no unk token)`);
      return id;
    });
  }
}

const PIECE_CACHE_LIMIT = 200_000;

interface FastPath {
  split: SplitPreTokenizer;
  encoder: { encode(text: string): Uint8Array };
  /** Added tokens, longest first (leftmost-longest, as the library's splitter matches). */
  addedPattern: RegExp | null;
  addedIds: Map<string, number>;
}

/** The cached path applies when pre_tokenizer = Sequence[Split, ByteLevel without regex/prefix] and the model is BPE. */
function detectFastPath(
  json: Record<string, unknown>,
  added: Array<{ content: string; id: number; lstrip: boolean; rstrip: boolean; normalized: boolean }>,
): FastPath | null {
  const model = json.model as { type?: unknown } | undefined;
  const pre = json.pre_tokenizer as { type?: unknown; pretokenizers?: unknown } | null;
  if (
    model?.type !== 'BPE' ||
    pre?.type !== 'Sequence' ||
    !Array.isArray(pre.pretokenizers) ||
    pre.pretokenizers.length !== 2
  )
    return null;
  const [split, byteLevel] = pre.pretokenizers as Array<Record<string, unknown>>;
  if (
    split?.type !== 'Split' ||
    byteLevel?.type !== 'ByteLevel' ||
    byteLevel.use_regex !== false ||
    byteLevel.add_prefix_space === true
  )
    return null;
  // lstrip/rstrip trimming and normalized added tokens are left to the library.
  if (added.some((t) => t.lstrip || t.rstrip || (t.normalized && json.normalizer !== null))) return null;
  let splitter: SplitPreTokenizer;
  try {
    splitter = new SplitPreTokenizer(split as unknown as ConstructorParameters<typeof SplitPreTokenizer>[0]);
  } catch {
    return null;
  }
  if (!splitter.pattern) return null;
  const contents = added.map((t) => t.content).filter((c) => c.length > 0);
  const addedPattern = contents.length
    ? new RegExp(
        [...contents]
          .sort((x, y) => y.length - x.length)
          .map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
          .join('|'),
        'g',
      )
    : null;
  return {
    split: splitter,
    encoder: new TextEncoder(),
    addedPattern,
    addedIds: new Map(added.map((t) => [t.content, t.id])),
  };
}

function firstId(tokenizer: Tokenizer, names: readonly string[]): number | null {
  for (const name of names) {
    const id = tokenizer.tokenId(name);
    if (id !== undefined) return id;
  }
  return null;
}

function oneLine(message: string): string {
  return message.replace(/\s+/g, ' ').trim();
}
