"""Step server: the PyTorch backend driven from TypeScript (trainer/training/torch-bridge/torch-trainer.ts)
with the same calls as the ONNX Runtime Trainer (create, step, evaluate, get/set trainable, get/set
optimizer state, release), so `idiom train`'s loop, checkpoints, resume and evaluation stay in one
place. One JSON request per stdin line, one JSON reply per stdout line:

  → {"id": 1, "op": "step", "tokens": "<base64 int32 LE>", "lossMask": "<base64 float32 LE>" | null,
     "positions": null, "learningRate": 0.0003}
  ← {"id": 1, "result": {"loss": 2.3, "gradNorm": 0.8, "tokens": 2040, "step": 1, "seconds": 0.4}}
  ← {"id": 2, "error": "one line"}

Tensors (trainable set, AdamW moments) travel as safetensors files named in the request. Logs and
warnings go to stderr; stdout carries replies only. With "processes": N in create's options the
server trains data-parallel (DDP) over N local processes (ranks.py); the batch is split across them.

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
import torch.distributed as dist  # noqa: E402

import ranks  # noqa: E402
import safetensors_io  # noqa: E402
from model import ModelConfig, load_weights  # noqa: E402
from training import TrainingRun, split_batch  # noqa: E402

PUBLIC = ("create", "step", "evaluate", "getTrainable", "setTrainable", "getOptimizerState", "setOptimizerState")
# Ops every rank runs, in the order rank 0 receives them.
COLLECTIVE = ("step", "evaluate", "setTrainable", "setOptimizerState")


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
    def __init__(self, rank=0, world=1, control=None):
        self.run = None
        self.rank, self.world, self.control = rank, world, control
        self.followers = []
        self.batch = None  # rows of a whole step (all ranks together)

    def create(self, request):
        started = time.perf_counter()
        options = request.get("options") or {}
        processes = options.get("processes") or 1
        if not (isinstance(processes, int) and processes >= 1):
            raise ValueError(f"processes must be a positive integer, got {processes}")
        device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device} requested, but this PyTorch ({torch.__version__}) sees no CUDA device")
        batch = int(options["batch"])
        if self.rank == 0:
            if self.world > 1 or (processes > 1 and self.run is not None):
                raise ValueError("a training run exists already (one create per server)")
            if processes > 1:
                self.start_ranks(processes, batch, device, request)
        self.batch = batch
        threads = options.get("threads")
        if self.world > 1:
            batch = -(-batch // self.world)
            if device.startswith("cuda"):
                device = f"cuda:{self.rank}"
            else:  # the ranks share the cores
                threads = max(1, int(threads or os.cpu_count() or 1) // self.world)
        if threads:
            torch.set_num_threads(int(threads))
        try:
            try:
                self.build(request, options, device, batch)
            finally:
                if self.world > 1:
                    dist.barrier(group=self.control)
        except Exception:
            if self.rank == 0:
                self.shutdown()
            raise
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

    def start_ranks(self, processes, batch, device, request):
        if batch < processes:
            raise ValueError(f"batch {batch} has fewer rows than processes ({processes}): each process needs a row")
        if device.startswith("cuda") and torch.cuda.device_count() < processes:
            raise ValueError(
                f"{processes} processes need {processes} CUDA devices; PyTorch sees {torch.cuda.device_count()}"
            )
        port = ranks.free_port()
        kind = "cuda" if device.startswith("cuda") else "cpu"
        self.followers = ranks.start_followers(os.path.abspath(__file__), processes, port, kind)
        try:
            self.control = ranks.join_group(0, processes, port, kind)
        except Exception:
            for child in self.followers:
                child.kill()
            ranks.stop_followers(self.followers)
            self.followers = []
            raise
        self.world = processes
        ranks.broadcast(request, self.control)

    def build(self, request, options, device, batch):
        error = None
        try:
            self.run = self.training_run(request, options, device, batch)
        except Exception as failure:  # every rank learns of it before DDP's collectives start
            error = failure
        if self.world > 1:
            ok = torch.tensor([0 if error else 1])
            dist.all_reduce(ok, op=dist.ReduceOp.MIN, group=self.control)
            if int(ok) == 0:
                self.run = None
                raise error or ValueError("another DDP rank could not build the training run (see its stderr)")
        elif error:
            raise error
        if self.world > 1:
            self.run.distribute()

    def training_run(self, request, options, device, batch):
        config = ModelConfig.load(request["checkpointDir"])
        weights = load_weights(request["checkpointDir"], config)
        amp = options.get("amp")
        if amp == "auto":
            amp = "bf16" if device.startswith("cuda") else None
        initial = None
        if request.get("initialPath"):
            initial = safetensors_io.load_file(request["initialPath"])
        optimizer = options.get("optimizer") or {}
        return TrainingRun(
            config,
            weights,
            method=options.get("method", "lora"),
            lora=options.get("lora"),
            batch=batch,
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

    def need_run(self):
        if self.run is None:
            raise ValueError("no training run (send create first)")
        return self.run

    def rows(self, request):
        """(tokens, mask, positions) of this rank: the whole batch in one process, else its shard."""
        batch = [decode(request.get(k), d) for k, d in (("tokens", torch.int32), ("lossMask", torch.float32))]
        batch.append(decode(request.get("positions"), torch.int32))
        if self.world == 1:
            return batch
        return ranks.shard_rows(*batch, self.batch, self.run.seq_len, self.rank, self.world)

    def check(self, request):
        """Rank 0, before the others see a step: bad input fails here, not on one rank mid-step."""
        run = self.need_run()
        if request.get("op") in ("step", "evaluate"):
            tokens = decode(request.get("tokens"), torch.int32)
            if tokens is None:
                raise ValueError("a batch needs tokens")
            mask, positions = decode(request.get("lossMask"), torch.float32), decode(
                request.get("positions"), torch.int32
            )
            split_batch(tokens, mask, positions, self.batch, run.seq_len, run.config.vocab_size)

    def step(self, request):
        run = self.need_run()
        tokens, mask, positions = self.rows(request)
        return run.step(tokens, mask, float(request["learningRate"]), positions)

    def evaluate(self, request):
        run = self.need_run()
        result = run.evaluate(*self.rows(request))
        if self.world == 1:
            return result
        totals = torch.tensor([result["loss"] * max(1.0, result["tokens"]), result["tokens"]], dtype=torch.float64)
        dist.all_reduce(totals, group=self.control)
        return {"loss": float(totals[0] / max(1.0, float(totals[1]))), "tokens": float(totals[1])}

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

    def shutdown(self):
        """Rank 0: ends the follower ranks and the process group."""
        if self.world > 1:
            ranks.broadcast({"op": "release"}, self.control)
            dist.destroy_process_group()
            ranks.stop_followers(self.followers)
            self.world, self.followers, self.control = 1, [], None


def collective(server, handler, request):
    """Rank 0: checks the request, hands it to the other ranks, runs it; all ranks meet at the end."""
    server.check(request)
    ranks.broadcast(request, server.control)
    try:
        return handler(request)
    finally:
        dist.barrier(group=server.control)


def follow(rank, kind):
    """A follower rank: runs what rank 0 hands it until release; rank 0 reports the errors."""
    ranks.die_with_parent()
    _replies.write("ready\n")
    _replies.flush()
    world, port = int(os.environ["WORLD_SIZE"]), int(os.environ["MASTER_PORT"])
    server = Server(rank, world, ranks.join_group(rank, world, port, kind))
    while True:
        try:
            request = ranks.broadcast(None, server.control)
        except RuntimeError:  # rank 0 is gone
            return
        if request.get("op") == "release":
            break
        try:
            getattr(server, request["op"])(request)
        except Exception:
            if os.environ.get("IDIOM_TORCH_DEBUG"):
                traceback.print_exc()
        finally:
            if request["op"] != "create":  # create meets in its own barrier
                dist.barrier(group=server.control)
    dist.destroy_process_group()


def main():
    server = Server()
    reply({"ready": True, "torch": torch.__version__, "cuda": torch.cuda.is_available(), "pid": os.getpid()})
    try:
        serve(server)
    finally:
        server.shutdown()


def serve(server):
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
            handler = getattr(server, op, None) if isinstance(op, str) and op in PUBLIC else None
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            if server.world > 1 and op in COLLECTIVE:
                reply({"id": request_id, "result": collective(server, handler, request)})
            else:
                reply({"id": request_id, "result": handler(request)})
        except Exception as error:  # one line back to the caller; the server keeps serving
            if os.environ.get("IDIOM_TORCH_DEBUG"):
                traceback.print_exc()
            message = " ".join(str(error).split()) or type(error).__name__
            reply({"id": request_id, "error": message})


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rank":
        follow(int(sys.argv[2]), sys.argv[3])
    else:
        main()
