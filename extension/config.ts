import * as vscode from 'vscode';
import {
  DEFAULT_MAX_NEW_TOKENS,
  MODES,
  PRECISION_SETTINGS,
  defaultSettings,
  type AdapterWeight,
  type Device,
  type IdiomSettings,
  type Mode,
} from '../server/protocol';

/** `idiom.adapters.<mode>`, weight 1 when left out; the server refuses a bad entry in one line. */
function adapterWeights(value: unknown): AdapterWeight[] {
  if (!Array.isArray(value)) return [];
  return value.map((item) => ({ ...item, weight: item?.weight ?? 1 }));
}

/** Reads the `idiom.*` settings; untrusted workspaces never get a custom base model. */
export function readSettings(): IdiomSettings {
  const config = vscode.workspace.getConfiguration('idiom');
  const mode = config.get<string>('mode', defaultSettings.mode);
  return {
    enable: config.get<boolean>('enable', defaultSettings.enable),
    disabledLanguages: config.get<string[]>('disabledLanguages', defaultSettings.disabledLanguages),
    baseModelPath: vscode.workspace.isTrusted ? config.get<string>('baseModelPath', defaultSettings.baseModelPath) : '',
    device: config.get<Device>('device', defaultSettings.device),
    precision:
      PRECISION_SETTINGS.find((value) => value === config.get<string>('precision')) ?? defaultSettings.precision,
    training: {
      minutes: config.get<number>('training.minutes', defaultSettings.training.minutes),
      incremental: config.get<boolean>('training.incremental', defaultSettings.training.incremental),
    },
    lora: {
      r: config.get<number>('lora.r', defaultSettings.lora.r),
      alpha: config.get<number>('lora.alpha', defaultSettings.lora.alpha),
      targets: config.get<string[]>('lora.targets', defaultSettings.lora.targets),
    },
    debounceMs: config.get<number>('debounceMs', defaultSettings.debounceMs),
    mode: (MODES as readonly string[]).includes(mode) ? (mode as Mode) : defaultSettings.mode,
    review: {
      percentile: config.get<number>('review.percentile'),
      aggregate:
        config.get<string>('review.aggregate') === 'mean'
          ? 'mean'
          : config.get<string>('review.aggregate') === 'max'
            ? 'max'
            : undefined,
    },
    drift: {
      lossIncrease: config.get<number>('drift.lossIncrease', defaultSettings.drift.lossIncrease),
      commitsBehind: config.get<number>('drift.commitsBehind', defaultSettings.drift.commitsBehind),
    },
    completion: {
      minConfidence: config.get<number>('completion.minConfidence', defaultSettings.completion.minConfidence),
      maxNewTokens: config.get<number>('completion.maxNewTokens', DEFAULT_MAX_NEW_TOKENS),
      recall: config.get<boolean>('completion.recall', defaultSettings.completion.recall),
      recallMinLogprob: config.get<number | null>(
        'completion.recallMinLogprob',
        defaultSettings.completion.recallMinLogprob ?? null,
      ),
      recallMinTokenLogprob: config.get<number | null>(
        'completion.recallMinTokenLogprob',
        defaultSettings.completion.recallMinTokenLogprob ?? null,
      ),
      prompt:
        (['auto', 'fim', 'prefix'] as const).find((value) => value === config.get<string>('completion.prompt')) ??
        defaultSettings.completion.prompt,
    },
    // Machine scope in package.json: a repository's settings cannot send its code elsewhere.
    endpoint: {
      url: config.get<string>('endpoint.url', defaultSettings.endpoint.url),
      kind:
        (['openai-completions', 'llama-infill'] as const).find(
          (value) => value === config.get<string>('endpoint.kind'),
        ) ?? defaultSettings.endpoint.kind,
      model: config.get<string>('endpoint.model', defaultSettings.endpoint.model),
      timeoutMs: config.get<number>('endpoint.timeoutMs', defaultSettings.endpoint.timeoutMs),
    },
    // Machine scope in package.json: a repository's settings cannot point downloads elsewhere.
    hubEndpoint: config.get<string>('hubEndpoint', defaultSettings.hubEndpoint),
    adapters: {
      complete: adapterWeights(config.get('adapters.complete')),
      review: adapterWeights(config.get('adapters.review')),
      compliance: adapterWeights(config.get('adapters.compliance')),
    },
  };
}
