import { strict as assert } from 'node:assert';
import { threadId } from 'node:worker_threads';
import { Graph } from '../../../trainer/compute/graph/graph';
import { serializeModel } from '../../../trainer/compute/graph/onnx';
import * as op from '../../../trainer/compute/graph/ops';
import { EngineWorker } from '../../../trainer/compute/runtime/client';

/** y = tanh(x W)·… repeated: a graph whose run takes a while. */
function slowModel(size: number, depth: number) {
  const g = new Graph('slow');
  const x = g.input('x', 'float32', [size, size]);
  const data = new Float32Array(size * size);
  for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 1000) / 1000 / size - 0.5 / size;
  const w = g.initializer('w', { dtype: 'float32', shape: [size, size], data });
  let h = x;
  for (let i = 0; i < depth; i++) h = op.tanh(op.matmul(h, w));
  g.output(op.reduceSum(h, [0, 1], false), 'total');
  return serializeModel(g);
}

describe('engine worker', () => {
  let worker: EngineWorker;
  beforeEach(() => {
    worker = EngineWorker.start();
  });
  afterEach(async () => {
    await worker.terminate();
  });

  it('runs ONNX Runtime in another thread, and the event loop keeps ticking during a long run', async () => {
    const info = await worker.call('ping');
    assert.notEqual(info.threadId, threadId);
    const { id } = await worker.call('createSession', slowModel(512, 60), { threads: 1 });
    const x = new Float32Array(512 * 512).fill(0.01);
    const ticks: number[] = [];
    const timer = setInterval(() => ticks.push(performance.now()), 5);
    const started = performance.now();
    const out = await worker.call('runSession', id, { x: { dtype: 'float32', shape: [512, 512], data: x } });
    const elapsed = performance.now() - started;
    clearInterval(timer);
    assert.equal(out.total.dtype, 'float32');
    assert.ok(Number.isFinite((out.total.data as Float32Array)[0]));
    assert.ok(elapsed > 50, `the run should take a while to mean anything (${elapsed.toFixed(0)} ms)`);
    // A blocked loop fires at most once; a free one every ~5 ms (allow a lot for a loaded machine).
    assert.ok(ticks.length >= Math.max(3, elapsed / 5 / 10), `${ticks.length} ticks in ${elapsed.toFixed(0)} ms`);
    await worker.call('releaseSession', id);
  });

  it('re-throws errors from the worker with their message, and keeps serving', async () => {
    await assert.rejects(worker.call('fail', 'bad input: widget missing'), /bad input: widget missing/);
    await assert.rejects(worker.call('runSession', 42, {}), /no session 42/);
    const g = new Graph('bad');
    const x = g.input('x', 'float32', [2]);
    g.output(op.exp(x), 'y');
    const { id } = await worker.call('createSession', serializeModel(g));
    await assert.rejects(
      worker.call('runSession', id, { x: { dtype: 'float32', shape: [3], data: new Float32Array(3) } }),
      /dimension|Got invalid/i,
    );
    const ok = await worker.call('runSession', id, {
      x: { dtype: 'float32', shape: [2], data: Float32Array.from([0, 1]) },
    });
    assert.deepEqual(Array.from(ok.y.data as Float32Array), [1, Math.fround(Math.E)]);
  });

  it('rejects pending and later calls with a clear error when the worker crashes', async () => {
    const pending = worker.call('crash');
    await assert.rejects(pending, /crash: engine worker crashed: engine worker crashed on purpose/);
    await assert.rejects(worker.call('ping'), /ping: engine worker crashed/);
  });

  it('terminates cleanly, rejecting what was still pending', async () => {
    const { id } = await worker.call('createSession', slowModel(256, 20), { threads: 1 });
    const pending = worker.call('runSession', id, {
      x: { dtype: 'float32', shape: [256, 256], data: new Float32Array(256 * 256) },
    });
    const rejected = assert.rejects(pending, /terminated/);
    await worker.terminate();
    await rejected;
    await assert.rejects(worker.call('ping'), /terminated/);
  });

  it('terminating in the middle of a native run waits for it instead of aborting the process', async () => {
    // Before the fix, worker.terminate() during run() aborted the whole process (rc 134).
    for (let i = 0; i < 5; i++) {
      const doomed = EngineWorker.start();
      const { id } = await doomed.call('createSession', slowModel(256, 40), { threads: 1 });
      const feed = () => ({ x: { dtype: 'float32' as const, shape: [256, 256], data: new Float32Array(256 * 256) } });
      const runs = [doomed.call('runSession', id, feed()), doomed.call('runSession', id, feed())];
      const outcomes = Promise.allSettled(runs); // handled now: the rejections come during terminate()
      await new Promise((resolve) => setTimeout(resolve, 5 + i * 5));
      await doomed.terminate();
      for (const outcome of await outcomes) {
        if (outcome.status === 'rejected') assert.match(String(outcome.reason), /terminated/);
      }
      await assert.rejects(doomed.call('ping'), /terminated/);
    }
  });
});
