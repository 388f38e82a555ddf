// Review mode in the server: lines changed since HEAD that are unusual for this codebase (above
// the repository's own percentile of line surprisal) become Information diagnostics, and a quick
// fix puts the adapter's greedy alternative in their place. Scoring runs in the engine worker,
// call by call between completions (LoadedModel.reviewScorer), debounced per document.

import { fileURLToPath } from 'node:url';
import { CodeActionKind, DiagnosticSeverity, type CodeAction, type Diagnostic } from 'vscode-languageserver';
import type { TextDocument } from 'vscode-languageserver-textdocument';
import { registryLocation } from '../../trainer/adapters/registry';
import { changedLineNumbers, headVersion } from '../../trainer/modes/review/changes';
import {
  DEFAULT_AGGREGATE,
  DEFAULT_PERCENTILE,
  reviewLines,
  unusualLineMessage,
} from '../../trainer/modes/review/review';
import {
  distributionThreshold,
  repositoryDistribution,
  type LineDistribution,
} from '../../trainer/modes/review/threshold';
import type { Aggregate } from '../../trainer/modes/review/lines';
import { credentialAddedBy } from '../completion/credentials';
import type { LoadedModel } from '../model/host';
import { oneLine } from '../model/adapters';
import type { ReviewResult } from '../protocol';

export const reviewDiagnosticSource = 'idiom';
export const unusualLineCode = 'unusual-line';
export const alternativeActionTitle = 'Show what this codebase would write';

export interface ReviewSettings {
  /** Top share (%) of the repository's lines that counts as unusual. */
  percentile: number;
  aggregate: Aggregate;
}

export const defaultReviewSettings: ReviewSettings = { percentile: DEFAULT_PERCENTILE, aggregate: DEFAULT_AGGREGATE };

export interface ReviewHost {
  model(): LoadedModel | null;
  settings(): ReviewSettings;
  publish(uri: string, diagnostics: Diagnostic[]): void;
  document(uri: string): TextDocument | undefined;
  log(line: string): void;
}

export class ReviewService {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Distributions per repository + adapter + base, computed once (a few thousand lines scored). */
  private readonly distributions = new Map<string, Promise<LineDistribution>>();
  private readonly published = new Set<string>();

  constructor(
    private readonly host: ReviewHost,
    private readonly debounceMs = 300,
  ) {}

  /** Reviews `uri` after the debounce (a newer call for the same document restarts it). */
  schedule(uri: string): void {
    if (!uri.startsWith('file:')) return;
    clearTimeout(this.timers.get(uri));
    this.timers.set(
      uri,
      setTimeout(() => {
        this.timers.delete(uri);
        this.review(uri, false).then(
          (result) => {
            if (result.problem) this.host.log(`review ${uri}: ${result.problem}`);
          },
          (error) => this.host.log(`review ${uri} failed: ${oneLine(error)}`),
        );
      }, this.debounceMs),
    );
  }

  /** Drops every diagnostic this service published (leaving review mode). */
  clear(): void {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const uri of this.published) this.host.publish(uri, []);
    this.published.clear();
  }

  forget(uri: string): void {
    clearTimeout(this.timers.get(uri));
    this.timers.delete(uri);
  }

  /** Reviews the document as it is now and publishes its diagnostics (unless it changed meanwhile). */
  async review(uri: string, all: boolean): Promise<ReviewResult> {
    const document = this.host.document(uri);
    const model = this.host.model();
    const none = (problem: string): ReviewResult => ({ reviewed: 0, flagged: [], threshold: null, problem });
    if (!document) return none('the document is not open');
    if (!uri.startsWith('file:')) return none('only files in a git repository are reviewed');
    if (!model) return none('no model is loaded');
    if (model.weightsKind === 'full')
      return none('a full fine-tune cannot be compared with its base: review needs a LoRA adapter');
    const version = document.version;
    const text = document.getText();
    const { percentile, aggregate } = this.host.settings();
    const head = await headVersion(fileURLToPath(uri));
    const scorer = model.reviewScorer();
    const key = `${head.root}\n${model.adapterId ?? 'base'}\n${model.baseSha256}`;
    let distribution = this.distributions.get(key);
    if (!distribution) {
      distribution = repositoryDistribution({
        repoRoot: head.root,
        registryDir: registryLocation(head.root),
        scorer,
        adapterId: model.adapterId,
        baseSha256: model.baseSha256,
      });
      this.distributions.set(key, distribution);
      distribution.catch(() => this.distributions.delete(key));
    }
    const threshold = distributionThreshold(await distribution, aggregate, percentile);
    const scored = await scorer.fileSurprisal(text, { base: true });
    const selected = all ? null : new Set(changedLineNumbers(head.text, text));
    const lines = reviewLines(scored.lines, scored.adapter, scored.base, selected, threshold, aggregate);
    const flagged = lines.filter((line) => line.flagged);
    if (this.host.document(uri)?.version !== version)
      return {
        reviewed: lines.length,
        flagged: flagged.map((l) => l.line),
        threshold,
        problem: 'the document changed while it was reviewed',
      };
    const diagnostics: Diagnostic[] = flagged.map((line) => {
      const start = line.text.length - line.text.trimStart().length;
      return {
        range: {
          start: { line: line.line - 1, character: start },
          end: { line: line.line - 1, character: line.text.length },
        },
        severity: DiagnosticSeverity.Information,
        source: reviewDiagnosticSource,
        code: unusualLineCode,
        message: unusualLineMessage(line, threshold, percentile),
        data: { surprisal: line.surprisal, baseSurprisal: line.baseSurprisal, threshold },
      };
    });
    this.host.publish(uri, diagnostics);
    this.published.add(uri);
    return { reviewed: lines.length, flagged: flagged.map((l) => l.line), threshold };
  }

  /** The quick fix for each unusual-line diagnostic: the line as the adapter would write it. */
  async codeActions(uri: string, diagnostics: readonly Diagnostic[]): Promise<CodeAction[]> {
    const document = this.host.document(uri);
    const model = this.host.model();
    if (!document || !model || model.weightsKind === 'full') return [];
    const text = document.getText();
    const lines = text.split('\n');
    const actions: CodeAction[] = [];
    for (const diagnostic of diagnostics) {
      if (diagnostic.source !== reviewDiagnosticSource || diagnostic.code !== unusualLineCode) continue;
      const line = diagnostic.range.start.line;
      const current = lines[line]?.replace(/\r$/, '');
      if (current === undefined) continue;
      const alternative = await model.reviewScorer().alternative(text, line + 1);
      if (alternative === current || alternative.trim() === '') continue;
      // The alternative is a suggestion too: never one that writes a credential.
      const lineStart = document.offsetAt({ line, character: 0 });
      if (credentialAddedBy(text.slice(0, lineStart), alternative, text.slice(lineStart + current.length))) continue;
      actions.push({
        title: `${alternativeActionTitle}: ${alternative.trim()}`,
        kind: CodeActionKind.QuickFix,
        diagnostics: [diagnostic],
        edit: {
          changes: {
            [uri]: [
              {
                range: { start: { line, character: 0 }, end: { line, character: current.length } },
                newText: alternative,
              },
            ],
          },
        },
      });
    }
    return actions;
  }
}
