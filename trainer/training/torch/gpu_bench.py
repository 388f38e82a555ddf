"""GPU training benchmark for the PyTorch backend: LoRA training of a model with
Qwen2.5-Coder-0.5B's shapes (random weights) and of Idiom's default model, for a fixed number of
steps; tokens/s and MFU against the bf16 dense matmul peak measured in the same run. One JSON
object on stdout.

    python3 trainer/training/torch/gpu_bench.py                      # on an NVIDIA GPU
    python3 trainer/training/torch/gpu_bench.py --compile            # also with torch.compile
    python3 trainer/training/torch/gpu_bench.py --tiny --device cpu  # the same code on tiny shapes (tests)

FLOP convention (model FLOPs, recomputation not counted): per trained token, 2 FLOPs per weight
of every linear layer (lm_head included) in the forward and 2 more for the input gradients (the
frozen weights get no weight gradients), 6·r·(in + out) per LoRA module (forward, input and weight
gradients), and attention QKᵀ and PV over the causal half of the T×T square: 2·T·H·hd forward and
4·T·H·hd backward per layer. MFU = achieved FLOP/s ÷ the measured peak of a large bf16 matmul.
"""

import argparse
import json
import os
import sys
import time

_out = sys.stdout
sys.stdout = sys.stderr
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see serve.py

import torch  # noqa: E402

from model import PROJECTIONS, ModelConfig  # noqa: E402
from training import TrainingRun  # noqa: E402

QWEN25_CODER_05B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}
# The benchmarks' reference shape (trainer/tools/bench/reference.ts), used when the embedded
# default model is not installed.
REFERENCE = {
    "model_type": "llama",
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "intermediate_size": 1376,
    "vocab_size": 8192,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
TINY = {
    "model_type": "qwen2",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, size, dtype, repeats):
    """FLOP/s of the best of `repeats` timed [size, size] · [size, size] products."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    synchronize(device)
    best = float("inf")
    inner = 10 if device.type == "cuda" else 1
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b)
        synchronize(device)
        best = min(best, (time.perf_counter() - started) / inner)
    return 2 * size**3 / best


def flops_per_token(config, seq_len, lora_targets, r):
    linear = 0
    for p in PROJECTIONS:
        out_f, in_f = config.projection_shape(p)
        linear += out_f * in_f
    linear = linear * config.num_layers + config.vocab_size * config.hidden_size  # + lm_head
    lora = 0
    for p in lora_targets:
        out_f, in_f = config.projection_shape(p)
        lora += r * (in_f + out_f)
    lora *= config.num_layers
    attention = 6 * seq_len * config.num_heads * config.head_dim * config.num_layers  # causal half, fwd + bwd
    return 4 * linear + 6 * lora + attention


def random_weights(config, device, dtype, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    weights = {}
    for name, shape in config.weight_specs():
        if len(shape) == 1 and name.endswith("norm.weight"):
            weights[name] = torch.ones(shape, device=device, dtype=dtype)
        else:
            weights[name] = (torch.randn(shape, generator=g, device=device, dtype=torch.float32) * 0.02).to(dtype)
    return weights


def bench_model(label, raw, args, device, peak):
    config = ModelConfig(raw, label)
    seq_len = min(args.seq, config.max_positions)
    targets = [t for t in args.targets.split(",") if t]
    amp = {"auto": "bf16" if device.type == "cuda" else None, "bf16": "bf16", "none": None}[args.amp]
    store = torch.bfloat16 if amp == "bf16" else torch.float32
    results = []
    for compile_model in [False, True] if args.compile else [False]:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        weights = random_weights(config, device, store, seed=1)
        run = TrainingRun(
            config,
            weights,
            method="lora",
            lora={"targets": targets, "r": args.r, "alpha": 2 * args.r},
            batch=args.batch,
            seq_len=seq_len,
            device=str(device),
            amp=amp,
            compile=compile_model,
            gradient_checkpointing=args.gradient_checkpointing,
            optimizer={"weight_decay": 0.1},
        )
        del weights
        g = torch.Generator().manual_seed(2)
        batches = [torch.randint(0, config.vocab_size, (args.batch * (seq_len + 1),), generator=g) for _ in range(4)]
        losses = []
        started_warmup = time.perf_counter()
        for i in range(args.warmup):
            losses.append(run.step(batches[i % 4], None, args.lr)["loss"])
        warmup_seconds = time.perf_counter() - started_warmup
        synchronize(device)
        started = time.perf_counter()
        for i in range(args.steps):
            losses.append(run.step(batches[i % 4], None, args.lr)["loss"])
        synchronize(device)
        seconds = time.perf_counter() - started
        tokens = args.batch * seq_len * args.steps
        per_token = flops_per_token(config, seq_len, targets, args.r)
        achieved = tokens * per_token / seconds
        results.append(
            {
                "model": label,
                "parameters": config.parameter_count(),
                "trainableParameters": run.trainable_parameters(),
                "method": "lora",
                "r": args.r,
                "targets": targets,
                "batch": args.batch,
                "seqLen": seq_len,
                "steps": args.steps,
                "warmupSteps": args.warmup,
                "warmupSeconds": round(warmup_seconds, 3),
                "amp": amp or "off",
                "fusedAdamW": run.fused,
                "compile": compile_model,
                "gradientCheckpointing": args.gradient_checkpointing,
                "tokensPerSecond": round(tokens / seconds, 1),
                "stepMs": round(seconds / args.steps * 1000, 2),
                "flopsPerToken": per_token,
                "achievedTflops": round(achieved / 1e12, 4),
                "mfu": round(achieved / peak, 4),
                "loss": {"first": losses[0], "last": losses[-1]},
                "peakMemoryGiB": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                if device.type == "cuda"
                else None,
            }
        )
        del run
    return results


def main(argv):
    p = argparse.ArgumentParser(prog="gpu_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--targets", default=",".join(PROJECTIONS))
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--amp", choices=("auto", "bf16", "none"), default="auto")
    p.add_argument("--compile", action="store_true", help="also run each model with torch.compile")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument(
        "--default-config", default=None, help="config.json of the default model (default: models/config.json)"
    )
    p.add_argument("--peak-size", type=int, default=8192)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tiny", action="store_true", help="tiny shapes for both models (tests the script on a CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA device")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak_size = min(args.peak_size, 256) if args.tiny else args.peak_size
    peak = matmul_peak(device, peak_size, peak_dtype, repeats=5)

    default_path = args.default_config or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "models", "config.json"
    )
    if args.tiny:
        models = [
            ("qwen2.5-coder-0.5b shape (tiny)", TINY),
            ("default model (tiny)", dict(TINY, model_type="llama", tie_word_embeddings=False)),
        ]
    else:
        if os.path.exists(default_path):
            with open(default_path, encoding="utf-8") as f:
                default_raw, default_label = json.load(f), "default model (models/config.json)"
        else:
            default_raw, default_label = REFERENCE, "default model (reference shape: models/ not installed)"
        models = [("qwen2.5-coder-0.5b shape", QWEN25_CODER_05B), (default_label, default_raw)]
    runs = []
    for label, raw in models:
        runs.extend(bench_model(label, raw, args, device, peak))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "peak": {
            "tflops": round(peak / 1e12, 4),
            "dtype": str(peak_dtype).replace("torch.", ""),
            "shape": [peak_size] * 3,
        },
        "runs": runs,
        "flopConvention": "model FLOPs: 4 per linear weight per token (forward + input gradients; frozen weights get no weight gradients), 6·r·(in+out) per LoRA module, attention over the causal half",
    }
    _out.write(json.dumps(result, indent=2) + "\n")
    _out.flush()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as error:
        sys.stderr.write(f"error: {' '.join(str(error).split())}\n")
        sys.exit(1)
