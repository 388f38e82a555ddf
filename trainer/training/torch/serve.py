"""Step server: the PyTorch backend driven from TypeScript (trainer/training/torch-bridge/torch-trainer.ts)
with the same calls as the ONNX Runtime Trainer (create, step, evaluate, get/set trainable, get/set
optimizer state, release), so `idiom train`'s loop, checkpoints, resume and evaluation stay in one
place. One JSON request per stdin line, one JSON reply per stdout line:

  → {"id": 1, "op": "step", "tokens": "<base64 int32 LE>", "lossMask": "<base64 float32 LE>" | null,
     "positions": null, "learningRate": 0.0003}
  ← {"id": 1, "result": {"loss": 2.3, "gradNorm": 0.8, "tokens": 2040, "step": 1, "seconds": 0.4}}
  ← {"id": 2, "error": "one line"}

Tensors (trainable set, AdamW moments) travel as safetensors files named in the request. Logs and
warnings go to stderr; stdout carries replies only.

    python3 trainer/training/torch/serve.py
"""

import base64
import json
import os
import sys
import time
import traceback

# stdout is the reply channel: anything else printed goes to stderr.
_replies = sys.stdout
sys.stdout = sys.stderr

# OpenMP workers that spin after each parallel region starve OpenBLAS's own threads on a busy
# machine (measured: 2-thread LoRA steps 5x slower than 1 thread); sleeping workers do not.
# Read when libgomp loads, so it is set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import safetensors_io  # noqa: E402
from model import ModelConfig, load_weights  # noqa: E402
from training import TrainingRun  # noqa: E402


def reply(message):
    _replies.write(json.dumps(message, separators=(",", ":")) + "\n")
    _replies.flush()


def decode(data, dtype):
    if data is None:
        return None
    raw = bytearray(base64.b64decode(data))
    if not raw:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(raw, dtype=dtype)


def device_name(device):
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return "cpu"


class Server:
    def __init__(self):
        self.run = None

    def create(self, request):
        started = time.perf_counter()
        options = request.get("options") or {}
        if int(options.get("processes") or 1) != 1:
            raise ValueError("this step server trains in one process")
        threads = options.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device} requested, but this PyTorch ({torch.__version__}) sees no CUDA device")
        config = ModelConfig.load(request["checkpointDir"])
        weights = load_weights(request["checkpointDir"], config)
        amp = options.get("amp")
        if amp == "auto":
            amp = "bf16" if device.startswith("cuda") else None
        initial = None
        if request.get("initialPath"):
            initial = safetensors_io.load_file(request["initialPath"])
        optimizer = options.get("optimizer") or {}
        self.run = TrainingRun(
            config,
            weights,
            method=options.get("method", "lora"),
            lora=options.get("lora"),
            batch=int(options["batch"]),
            seq_len=int(options["seqLen"]),
            device=device,
            optimizer={
                k: v
                for k, v in {
                    "beta1": optimizer.get("beta1"),
                    "beta2": optimizer.get("beta2"),
                    "eps": optimizer.get("eps"),
                    "weight_decay": optimizer.get("weightDecay"),
                    "max_grad_norm": float("inf")
                    if optimizer.get("maxGradNorm") is None and "maxGradNorm" in optimizer
                    else optimizer.get("maxGradNorm"),
                }.items()
                if v is not None
            },
            initial=initial,
            seed=int(options.get("seed", 0)),
            amp=amp,
            fused=options.get("fused"),
            compile=bool(options.get("compile", False)),
            gradient_checkpointing=bool(options.get("gradientCheckpointing", False)),
            loss_rows_per_chunk=options.get("lossRowsPerChunk"),
        )
        del weights
        return {
            "trainable": self.run.trainable_shapes(),
            "trainableParameters": self.run.trainable_parameters(),
            "setupSeconds": time.perf_counter() - started,
            "device": device_name(self.run.device),
            "torchVersion": torch.__version__,
            "threads": torch.get_num_threads(),
            "amp": self.run.amp,
            "fusedAdamW": self.run.fused,
        }

    def need_run(self):
        if self.run is None:
            raise ValueError("no training run (send create first)")
        return self.run

    def step(self, request):
        run = self.need_run()
        return run.step(
            decode(request["tokens"], torch.int32),
            decode(request.get("lossMask"), torch.float32),
            float(request["learningRate"]),
            decode(request.get("positions"), torch.int32),
        )

    def evaluate(self, request):
        run = self.need_run()
        return run.evaluate(
            decode(request["tokens"], torch.int32),
            decode(request.get("lossMask"), torch.float32),
            decode(request.get("positions"), torch.int32),
        )

    def getTrainable(self, request):
        safetensors_io.save_file(self.need_run().get_trainable(), request["path"])
        return {"path": request["path"]}

    def setTrainable(self, request):
        self.need_run().set_trainable(safetensors_io.load_file(request["path"]))
        return {}

    def getOptimizerState(self, request):
        state = self.need_run().get_optimizer_state()
        tensors = {}
        for name in state["m"]:
            tensors[f"adam.m/{name}"] = state["m"][name]
            tensors[f"adam.v/{name}"] = state["v"][name]
        safetensors_io.save_file(tensors, request["path"], {"step": str(state["step"])})
        return {"path": request["path"], "step": state["step"]}

    def setOptimizerState(self, request):
        tensors = safetensors_io.load_file(request["path"])
        m = {k[len("adam.m/") :]: t for k, t in tensors.items() if k.startswith("adam.m/")}
        v = {k[len("adam.v/") :]: t for k, t in tensors.items() if k.startswith("adam.v/")}
        self.need_run().set_optimizer_state(int(request["step"]), m, v)
        return {}


def main():
    server = Server()
    reply({"ready": True, "torch": torch.__version__, "cuda": torch.cuda.is_available(), "pid": os.getpid()})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            op = request.get("op")
            if op == "release":
                reply({"id": request_id, "result": {}})
                return
            handler = (
                getattr(server, op, None)
                if isinstance(op, str) and not op.startswith("_") and op not in ("need_run",)
                else None
            )
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            reply({"id": request_id, "result": handler(request)})
        except Exception as error:  # one line back to the caller; the server keeps serving
            if os.environ.get("IDIOM_TORCH_DEBUG"):
                traceback.print_exc()
            message = " ".join(str(error).split()) or type(error).__name__
            reply({"id": request_id, "error": message})


if __name__ == "__main__":
    main()
