// `idiom/models` and `idiom/downloadModel`: the base models on this machine, and a download from
// the Hugging Face Hub on the user's explicit request (the only network access Idiom makes).

import * as path from 'node:path';
import {
  ResponseError,
  type CancellationToken,
  type Connection,
  type WorkDoneProgressReporter,
} from 'vscode-languageserver';
import {
  describeModel,
  formatBytes,
  listLocalModels,
  machineMemory,
  memoryRefusal as refusalLine,
  type LocalModel,
  type MachineMemory,
} from '../../trainer/model/hub/catalog';
import { servingPrecision } from '../../trainer/model/precision';
import { hubCacheDir } from '../../trainer/model/hub/cache';
import { downloadModel } from '../../trainer/model/hub/download';
import { oneLine } from './adapters';
import { requireParams } from '../params';
import {
  DownloadModelRequest,
  IdiomErrorCodes,
  ModelsRequest,
  type DownloadModelParams,
  type DownloadModelResult,
  type IdiomSettings,
  type ModelsResult,
  type PrecisionSetting,
} from '../protocol';

export interface ModelsHost {
  settings(): IdiomSettings;
  trusted(): boolean;
  /** The embedded model's folder ('' for none). */
  embeddedPath(): string;
  /** The folder idiom.baseModelPath names, resolved ('' for none). */
  configuredPath(): string;
  log(line: string): void;
}

/** `model` described at the precision idiom.precision gives it (auto: by its parameter count). */
function atServingPrecision(model: LocalModel, setting: PrecisionSetting, memory: MachineMemory): LocalModel {
  if (model.parameters === null) return model;
  const precision = servingPrecision(setting, model.parameters);
  if (precision === model.precision) return model;
  return {
    ...describeModel(model.path, model.source, model.id, { memory, precision }),
    revision: model.revision,
    refs: model.refs,
  };
}

/** One line when the model in `dir` needs more memory than this machine has at `setting`, else null. */
export function memoryRefusal(dir: string, setting: PrecisionSetting = 'auto'): string | null {
  const memory = machineMemory();
  const model = atServingPrecision(describeModel(dir, 'setting', path.basename(dir), { memory }), setting, memory);
  if (model.fits || model.memoryBytes === null) return null;
  return `${dir}: ${refusalLine(model.memoryBytes, memory, `at ${model.precision} it`)}`;
}

export function registerModelRequests(connection: Connection, host: ModelsHost): void {
  connection.onRequest(ModelsRequest, (params): ModelsResult => {
    requireParams('idiom/models', params);
    const memory = machineMemory();
    return {
      models: listLocalModels({ embedded: host.embeddedPath(), configured: host.configuredPath(), memory }).map(
        (model) => atServingPrecision(model, host.settings().precision, memory),
      ),
      memory,
      cacheDir: hubCacheDir(),
      downloads: host.trusted() && host.settings().hubEndpoint.trim() !== '',
    };
  });

  let downloading: string | null = null;
  connection.onRequest(DownloadModelRequest, async (params, token): Promise<DownloadModelResult> => {
    requireParams<DownloadModelParams>('idiom/downloadModel', params);
    if (!host.trusted())
      throw new ResponseError(IdiomErrorCodes.untrusted, 'models cannot be downloaded in an untrusted workspace');
    if (host.settings().hubEndpoint.trim() === '')
      throw new ResponseError(
        IdiomErrorCodes.notAvailable,
        'model downloads are turned off (idiom.hubEndpoint is empty)',
      );
    if (downloading)
      throw new ResponseError(IdiomErrorCodes.busy, `${downloading} is downloading; wait for it or cancel it`);
    downloading = params.id;
    const reporter: WorkDoneProgressReporter & { token?: CancellationToken } =
      params.workDoneToken !== undefined && params.workDoneToken !== null
        ? connection.window.attachWorkDoneProgress(params.workDoneToken)
        : await connection.window.createWorkDoneProgress();
    reporter.begin(`Idiom: downloading ${params.id}`, 0, 'starting', true);
    const controller = new AbortController();
    const listeners = [token, reporter.token].map((t) => t?.onCancellationRequested(() => controller.abort()));
    let percentage = 0;
    try {
      const result = await downloadModel(params.id, {
        endpoint: host.settings().hubEndpoint,
        precision: host.settings().precision,
        revision: params.revision ?? undefined,
        signal: controller.signal,
        onProgress: (progress) => {
          const now = progress.total > 0 ? Math.floor((progress.bytes / progress.total) * 100) : 0;
          if (now === percentage) return;
          percentage = now;
          reporter.report(now, `${progress.file}: ${formatBytes(progress.bytes)} of ${formatBytes(progress.total)}`);
        },
      });
      host.log(`downloaded ${params.id}@${result.commit} into ${result.path}`);
      const memory = machineMemory();
      const model = atServingPrecision(
        describeModel(result.path, 'hf-cache', params.id, { memory }),
        host.settings().precision,
        memory,
      );
      return { model: { ...model, revision: result.commit }, commit: result.commit, resumed: result.resumed };
    } catch (error) {
      const line = oneLine(error);
      host.log(`download of ${params.id} failed: ${line}`);
      throw new ResponseError(
        controller.signal.aborted ? IdiomErrorCodes.cancelled : IdiomErrorCodes.downloadFailed,
        line,
      );
    } finally {
      for (const listener of listeners) listener?.dispose();
      reporter.done();
      downloading = null;
    }
  });
}
