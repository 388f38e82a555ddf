"""Standalone PyTorch trainer: an Idiom dataset (.idiomds, from `idiom mine --out`) + a base model
folder → a PEFT adapter (or a full fine-tuned model) with manifest.json, with no Node.js needed —
for a GPU box. Same packing, schedule, loss, clipping and AdamW as `idiom train`; the same seed
gives the same adapter initialisation and data order. Progress: one JSON object per line on
stdout ({"type": "phase" | "step" | "log" | "result", …}, the fields of `idiom train`'s events).

    python3 trainer/training/torch/train.py --base models --dataset repo.idiomds --out adapter-dir --steps 200
    torchrun --nproc_per_node 8 trainer/training/torch/train.py …      (DDP: each rank takes its share of the rows)
    python3 trainer/training/torch/train.py --processes 8 …            (the same without torchrun: local processes)
"""

import argparse
import json
import math
import os
import sys

_out = sys.stdout
sys.stdout = sys.stderr  # stdout carries the JSON lines only

# OpenMP workers that spin after each parallel region starve OpenBLAS's own threads on a busy
# machine (measured: 2-thread LoRA steps 5x slower than 1 thread); sleeping workers do not.
# Read when libgomp loads, so it is set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import safetensors_io  # noqa: E402
from batches import fill_rows, learning_rate_at, pack_epoch, read_examples, warmup_steps_for  # noqa: E402
from model import PROJECTIONS, ModelConfig, load_weights  # noqa: E402
from outputs import base_weights_sha256, file_sha256, write_full_model, write_lora_adapter  # noqa: E402
from training import TrainingRun  # noqa: E402

RANK = int(os.environ.get("RANK", "0"))
WORLD = int(os.environ.get("WORLD_SIZE", "1"))


def emit(event):
    if RANK == 0:
        _out.write(json.dumps(event, separators=(",", ":")) + "\n")
        _out.flush()


def parse_args(argv):
    p = argparse.ArgumentParser(prog="train.py", description="Idiom's PyTorch trainer (dataset → adapter)")
    p.add_argument("--base", required=True, help="model folder: config.json + model.safetensors (or shards)")
    p.add_argument("--dataset", required=True, help=".idiomds file (idiom mine --out)")
    p.add_argument("--out", required=True, help="adapter folder to create (must not exist)")
    p.add_argument("--method", choices=("lora", "full"), default="lora")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32)
    p.add_argument("--targets", default=",".join(PROJECTIONS), help="comma-separated projections")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4 LoRA, 5e-5 full)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=8, help="rows per step (per rank under torchrun)")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --max-epochs passes)")
    p.add_argument("--max-epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default cuda when available)")
    p.add_argument("--amp", choices=("auto", "bf16", "none"), default="auto", help="bf16 autocast (auto: on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (PyTorch ≥ 2)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--init-adapter", default=None, help="start from these LoRA tensors (adapter folder or .safetensors)"
    )
    p.add_argument("--mode", choices=("complete", "review", "compliance"), default="complete")
    p.add_argument("--purpose", default=None)
    p.add_argument(
        "--processes", type=int, default=1, help="DDP over this many local processes (nccl on CUDA, gloo on the CPU)"
    )
    p.add_argument("--progress-every", type=int, default=1, help="a step line every N steps")
    p.add_argument("--repo-root", default=None, help="for the manifest (default: the dataset's folder)")
    return p.parse_args(argv)


def spawned(rank, argv, world, port):
    """One rank of --processes: the environment torchrun would give it."""
    global RANK, WORLD
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    RANK, WORLD = rank, world
    run_guarded(argv)


def main(argv):
    args = parse_args(argv)
    if args.processes > 1 and WORLD == 1:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:  # a free port for the rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(spawned, args=(argv, args.processes, port), nprocs=args.processes)
        return
    if WORLD > 1:
        backend = "nccl" if torch.cuda.is_available() and (args.device or "cuda").startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA device")
        if WORLD > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(torch.device(device))
    amp = {"auto": "bf16" if device.startswith("cuda") else None, "bf16": "bf16", "none": None}[args.amp]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in PROJECTIONS:
            raise ValueError(f"unknown LoRA target {t} (expected one of {', '.join(PROJECTIONS)})")
    lr = args.lr if args.lr is not None else (3e-4 if args.method == "lora" else 5e-5)

    emit({"type": "phase", "phase": "compiling", "message": f"loading {args.base} and {args.dataset}"})
    config = ModelConfig.load(args.base)
    examples, header = read_examples(args.dataset, "train")
    if not examples:
        raise ValueError(f"{args.dataset}: no training examples")
    if header["tokenizer"]["vocabSize"] > config.vocab_size:
        raise ValueError(
            f"{args.dataset}: tokenizer has {header['tokenizer']['vocabSize']} ids but the model only {config.vocab_size}"
        )
    pad_id = header["tokenizer"].get("eos") or 0
    row_tokens = args.seq + 1
    lengths = [len(ids) for ids, _ in examples]
    rows = pack_epoch(lengths, row_tokens, args.seed, 0)
    global_batch = args.batch * WORLD
    per_epoch = math.ceil(len(rows) / global_batch)
    total_steps = args.steps if args.steps is not None else args.max_epochs * per_epoch
    if total_steps < 1:
        raise ValueError("--steps must be at least 1")
    warmup = warmup_steps_for(total_steps)

    initial = None
    if args.init_adapter:
        path = args.init_adapter
        if os.path.isdir(path):
            path = os.path.join(path, "adapter_model.safetensors")
        initial = safetensors_io.load_file(path)
    run = TrainingRun(
        config,
        load_weights(args.base, config),
        method=args.method,
        lora={"targets": targets, "r": args.lora_r, "alpha": args.lora_alpha},
        batch=args.batch,
        seq_len=args.seq,
        device=device,
        optimizer={"weight_decay": args.weight_decay, "max_grad_norm": args.max_grad_norm},
        initial=initial,
        seed=args.seed,
        amp=amp,
        compile=args.compile,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    if WORLD > 1:
        run.distribute()

    emit(
        {
            "type": "phase",
            "phase": "training",
            "message": f"{total_steps} steps of {args.batch} × {args.seq} tokens"
            + (f" on {WORLD} processes" if WORLD > 1 else "")
            + f" ({run.device}, amp {amp or 'off'})",
        }
    )
    epoch, cursor, tokens, seconds = 0, 0, 0.0, 0.0
    recent = []
    loss_value = float("nan")
    for step in range(1, total_steps + 1):
        if cursor >= len(rows):
            epoch, cursor = epoch + 1, 0
            rows = pack_epoch(lengths, row_tokens, args.seed, epoch)
        mine = rows[cursor + RANK * args.batch : cursor + (RANK + 1) * args.batch]
        batch_tokens, mask, _ = fill_rows(examples, mine, args.batch, args.seq, pad_id)
        learning_rate = learning_rate_at(lr, warmup, total_steps, 0.1, step)
        result = run.step(batch_tokens, mask, learning_rate)
        cursor += global_batch
        counted, loss_value = result["tokens"], result["loss"]  # over all ranks
        tokens += counted
        seconds += result["seconds"]
        recent = (recent + [result["seconds"]])[-20:]
        if step % args.progress_every == 0 or step == total_steps:
            emit(
                {
                    "type": "step",
                    "step": step,
                    "totalSteps": total_steps,
                    "loss": loss_value,
                    "learningRate": learning_rate,
                    "tokens": tokens,
                    "tokensPerSecond": tokens / seconds if seconds > 0 else 0.0,
                    "elapsedSeconds": seconds,
                    "etaSeconds": sum(recent) / len(recent) * (total_steps - step),
                    "fraction": step / total_steps,
                    "gradNorm": result["gradNorm"],
                }
            )

    if RANK == 0:
        emit({"type": "phase", "phase": "saving", "message": f"writing {args.out}"})
        draft = manifest_draft(args, header, config, run, total_steps, tokens, seconds, warmup, lr, amp)
        trained = run.get_trainable()
        if args.method == "lora":
            manifest = write_lora_adapter(
                args.out,
                trained,
                num_layers=config.num_layers,
                r=args.lora_r,
                alpha=args.lora_alpha,
                targets=targets,
                base_name=draft["base"]["name"],
                draft=draft,
            )
        else:
            weights = load_weights(args.base, config)
            weights.update(trained)
            manifest = write_full_model(
                args.out,
                weights,
                config_json=config.raw,
                weight_order=[name for name, _ in config.weight_specs()],
                draft=draft,
            )
        emit(
            {
                "type": "result",
                "adapter": {"id": manifest["id"], "path": os.path.abspath(args.out), "method": args.method},
                "steps": total_steps,
                "tokens": tokens,
                "seconds": round(seconds, 3),
                "tokensPerSecond": round(tokens / seconds, 1) if seconds > 0 else 0,
                "finalLoss": loss_value,
                "device": str(run.device),
                "processes": WORLD,
            }
        )
    if WORLD > 1:
        dist.barrier()
        dist.destroy_process_group()


def manifest_draft(args, header, config, run, steps, tokens, seconds, warmup, lr, amp):
    mining = header.get("mining", {})
    base_name = config.raw.get("_name_or_path") or os.path.basename(os.path.abspath(args.base))
    device = str(run.device)
    if run.device.type == "cuda":
        device = f"{device} ({torch.cuda.get_device_name(run.device)})"
    hyper = {
        "learningRate": lr,
        "schedule": "linear warm-up, cosine to 10%",
        "warmupSteps": warmup,
        "totalSteps": steps,
        "weightDecay": args.weight_decay,
        "optimizer": f"AdamW(0.9, 0.999, eps 1e-8), grad-norm clip {args.max_grad_norm:g}",
        "batch": args.batch,
        "seqLen": args.seq,
        "processes": WORLD,
        "amp": amp or "off",
        "compile": args.compile,
        "gradientCheckpointing": args.gradient_checkpointing,
        "trainableParameters": run.trainable_parameters(),
        "torch": torch.__version__,
    }
    if args.method == "lora":
        hyper.update({"r": args.lora_r, "alpha": args.lora_alpha, "targets": run.lora["targets"], "dropout": 0})
    counts = header.get("counts", {}).get("train", {})
    return {
        "base": {"name": base_name, "sha256": base_weights_sha256(args.base)},
        "repo": {
            "root": args.repo_root or os.path.dirname(os.path.abspath(args.dataset)),
            "head": header.get("repo", {}).get("head"),
            "dirty": False,
        },
        "dataset": {
            "files": mining.get("files", {}).get("kept", 0),
            "examples": counts.get("examples", 0),
            "tokens": counts.get("tokens", 0),
            "sha256": file_sha256([args.dataset]),
            "excluded": mining.get("files", {}).get("excluded", {}),
            "secretsExcluded": mining.get("secretsExcluded", 0),
        },
        "training": {
            "method": args.method,
            "backend": "torch",
            "device": device,
            "steps": steps,
            "tokens": int(tokens),
            "seconds": round(seconds, 3),
            "seed": args.seed,
            "hyperparameters": hyper,
        },
        "metrics": {"base": None, "adapter": None},
        "mode": args.mode,
        "purpose": args.purpose or f"torch train ({args.method}, {args.mode})",
        "parent": None,
    }


def run_guarded(argv):
    try:
        main(argv)
    except (ValueError, OSError, FloatingPointError, KeyError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        sys.stderr.write(f"error: {message}\n")
        sys.exit(1)


if __name__ == "__main__":
    run_guarded(sys.argv[1:])
