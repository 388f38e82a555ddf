// `idiom train --processes N`: data parallelism (DDP) over N local PyTorch processes. The batch
// stays the rows of one optimizer step, split across the processes, so N changes where the work
// runs but not the adapter; ONNX Runtime trains in one process only.

/** Throws one line when `processes` cannot run on `backend`; returns the count (default 1). */
export function checkProcesses(processes: number | undefined, backend: 'ort' | 'torch', fellBack = ''): number {
  if (processes === undefined) return 1;
  if (!(Number.isInteger(processes) && processes >= 1))
    throw new Error(`--processes must be a positive integer, got ${processes}`);
  if (processes > 1 && backend !== 'torch')
    throw new Error(
      `--processes ${processes} needs the PyTorch backend (--backend torch); ONNX Runtime trains in one process${fellBack ? ` (${fellBack})` : ''}`,
    );
  return processes;
}
