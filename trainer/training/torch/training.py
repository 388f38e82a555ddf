"""One training run on PyTorch with the ONNX Runtime trainer's semantics (trainer/training/ort/):
the masked causal LM loss, global grad-norm clipping (clip = min(1, max_norm / (norm + 1e-6)),
the norm reported before clipping), PyTorch's AdamW (decoupled weight decay, bias-corrected
moments; LoRA A and B decay, in full mode only tensors of rank ≥ 2), LoRA with A ~ U(±1/√in) from
the trainer's Rng and B = 0, a learning rate given per step. A step whose loss or gradient norm is
not finite changes nothing and raises."""

import inspect
import math
import time

import torch
import torch.distributed as dist

from idiom_rng import Rng
from model import LlamaModel, causal_lm_loss, lora_key, module_path

DEFAULT_ADAMW = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "max_grad_norm": 1.0}


def init_lora_tensors(config, targets, r, seed):
    """PEFT key → tensor, drawn exactly as initLoraWeights (trainer/training/ort/lora.ts) for this seed."""
    rng = Rng(seed)
    out = {}
    for layer in range(config.num_layers):
        for projection in targets:
            module = module_path(layer, projection)
            out_features, in_features = config.projection_shape(projection)
            bound = 1 / math.sqrt(in_features)
            a = torch.tensor(rng.uniform_list(r * in_features, -bound, bound), dtype=torch.float32).reshape(
                r, in_features
            )
            out[lora_key(module, "A")] = a
            out[lora_key(module, "B")] = torch.zeros(out_features, r, dtype=torch.float32)
    return out


def split_batch(tokens, loss_mask, positions, batch, seq_len, vocab):
    """As TrainingSession.fillBatch: tokens [B, T+1] (inputs, last target) or [B, T] (targets
    shifted left, the last position masked); mask [B, T] aligned with the targets."""
    tokens = torch.as_tensor(tokens, dtype=torch.int64).reshape(-1)
    n = tokens.numel()
    if n == batch * (seq_len + 1):
        rows = tokens.reshape(batch, seq_len + 1)
        inputs, targets = rows[:, :-1], rows[:, 1:]
        has_target = torch.ones(batch, seq_len)
    elif n == batch * seq_len:
        inputs = tokens.reshape(batch, seq_len)
        targets = torch.cat([inputs[:, 1:], torch.zeros(batch, 1, dtype=torch.int64)], dim=1)
        has_target = torch.ones(batch, seq_len)
        has_target[:, -1] = 0
    else:
        raise ValueError(
            f"batch has {n} tokens; expected {batch}×{seq_len + 1} (inputs + last target) or {batch}×{seq_len}"
        )
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"token id {low if low < 0 else high} out of range [0, {vocab})")
    if loss_mask is None:
        mask = has_target
    else:
        mask = torch.as_tensor(loss_mask, dtype=torch.float32).reshape(-1)
        if mask.numel() != batch * seq_len:
            raise ValueError(f"loss mask has {mask.numel()} values; expected {batch}×{seq_len}")
        mask = mask.reshape(batch, seq_len) * has_target
    if positions is None:
        pos = torch.arange(seq_len, dtype=torch.int64).expand(batch, seq_len)
    else:
        pos = torch.as_tensor(positions, dtype=torch.int64).reshape(-1)
        if pos.numel() != batch * seq_len:
            raise ValueError(f"positions have {pos.numel()} values; expected {batch}×{seq_len}")
        pos = pos.reshape(batch, seq_len)
    return inputs.contiguous(), targets.contiguous(), mask.contiguous(), pos.contiguous()


class TrainingRun:
    """Model + trainable set + AdamW on one device.

    method 'lora' (lora = {targets, r, alpha}) or 'full'. initial: PEFT key / HF name → tensor,
    or None (fresh LoRA from `seed`; full starts from the checkpoint). amp: None or 'bf16'
    (autocast; frozen weights stored in bf16 for LoRA). fused: fused AdamW where available."""

    def __init__(
        self,
        config,
        weights,
        *,
        method="lora",
        lora=None,
        batch,
        seq_len,
        device="cpu",
        optimizer=None,
        initial=None,
        seed=0,
        amp=None,
        fused=None,
        compile=False,
        gradient_checkpointing=False,
        loss_rows_per_chunk=None,
    ):
        if method not in ("lora", "full"):
            raise ValueError(f'unknown method "{method}" (expected lora or full)')
        if not (isinstance(batch, int) and batch >= 1):
            raise ValueError(f"batch must be a positive integer, got {batch}")
        if not (isinstance(seq_len, int) and seq_len >= 1):
            raise ValueError(f"sequence length must be a positive integer, got {seq_len}")
        if seq_len > config.max_positions:
            raise ValueError(f"sequence length {seq_len} exceeds the model's {config.max_positions} positions")
        self.config = config
        self.method = method
        self.batch = batch
        self.seq_len = seq_len
        self.device = torch.device(device)
        self.amp = amp
        self.options = dict(DEFAULT_ADAMW, **(optimizer or {}))
        self.loss_rows_per_chunk = loss_rows_per_chunk
        self.step_count = 0

        store = torch.bfloat16 if (amp == "bf16" and method == "lora") else torch.float32
        self.model = LlamaModel(config, weights, dtype=store).to(self.device)
        self.model.gradient_checkpointing = gradient_checkpointing
        self.params = {}  # name → (parameter, decays)
        if method == "lora":
            lora = lora or {}
            targets, r, alpha = (
                list(lora.get("targets", ["q_proj", "v_proj"])),
                int(lora.get("r", 16)),
                float(lora.get("alpha", 32)),
            )
            if r < 1 or alpha <= 0 or not targets:
                raise ValueError("LoRA needs r ≥ 1, alpha > 0 and at least one target module")
            fresh = initial if initial is not None else init_lora_tensors(config, targets, r, seed)
            # Same order as the ONNX graph's trainable list: layers × targets (in the given order), A then B.
            by_module = dict(self.model.lora_modules(targets))
            for layer in range(config.num_layers):
                for projection in targets:
                    module = module_path(layer, projection)
                    linear = by_module[module]
                    out_features, in_features = config.projection_shape(projection)
                    a = torch.zeros(r, in_features, device=self.device)
                    b = torch.zeros(out_features, r, device=self.device)
                    linear.add_lora(a, b, alpha / r)
                    self.params[lora_key(module, "A")] = (linear.lora_A, True)
                    self.params[lora_key(module, "B")] = (linear.lora_B, True)
            self.set_trainable(fresh)
            self.lora = {"targets": targets, "r": r, "alpha": alpha}
        else:
            for name, p in self.model.named_weights().items():
                p.requires_grad_(True)
                self.params[name] = (p, p.dim() >= 2)
            if initial is not None:
                self.set_trainable(initial)
            self.lora = None
        self.model.train()

        decay = [p for p, d in self.params.values() if d]
        no_decay = [p for p, d in self.params.values() if not d]
        groups = [{"params": decay, "weight_decay": self.options["weight_decay"]}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        kwargs = {"lr": 0.0, "betas": (self.options["beta1"], self.options["beta2"]), "eps": self.options["eps"]}
        accepted = inspect.signature(torch.optim.AdamW).parameters
        want_fused = fused if fused is not None else self.device.type == "cuda"
        self.fused = bool(want_fused and "fused" in accepted and self.device.type == "cuda")
        if self.fused:
            kwargs["fused"] = True
        elif "foreach" in accepted:
            kwargs["foreach"] = True
        self.optimizer = torch.optim.AdamW(groups, **kwargs)
        self.world = 1
        self.forward = self.model
        if compile:
            if not hasattr(torch, "compile"):
                raise ValueError(f"torch.compile needs PyTorch ≥ 2.0 (this is {torch.__version__})")
            self.forward = torch.compile(self.model)

    # ---- tensors ------------------------------------------------------------------------------

    @property
    def trainable_names(self):
        return list(self.params)

    def trainable_shapes(self):
        return [{"name": n, "shape": list(p.shape), "decay": d} for n, (p, d) in self.params.items()]

    def trainable_parameters(self):
        return sum(p.numel() for p, _ in self.params.values())

    def get_trainable(self):
        """name → float32 CPU copy."""
        return {n: p.detach().float().cpu().clone() for n, (p, _) in self.params.items()}

    def set_trainable(self, tensors):
        extra = [n for n in tensors if n not in self.params]
        if extra:
            raise ValueError(f"unexpected trainable tensor {extra[0]} (not in this training run)")
        with torch.no_grad():
            for name, (p, _) in self.params.items():
                t = tensors.get(name)
                if t is None:
                    raise ValueError(f"missing trainable tensor {name}")
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"{name}: shape {list(t.shape)} does not match {list(p.shape)}")
                p.copy_(t.to(p.device, p.dtype))

    def get_optimizer_state(self):
        """{'step', 'm': {name: tensor}, 'v': {name: tensor}} (zeros before the first step)."""
        m, v = {}, {}
        for name, (p, _) in self.params.items():
            state = self.optimizer.state.get(p, {})
            m[name] = state["exp_avg"].detach().float().cpu().clone() if "exp_avg" in state else torch.zeros(p.shape)
            v[name] = (
                state["exp_avg_sq"].detach().float().cpu().clone() if "exp_avg_sq" in state else torch.zeros(p.shape)
            )
        return {"step": self.step_count, "m": m, "v": v}

    def set_optimizer_state(self, step, m, v):
        if not (isinstance(step, int) and step >= 0):
            raise ValueError(f"optimizer step must be an integer ≥ 0, got {step}")
        for name, (p, _) in self.params.items():
            if name not in m or name not in v:
                raise ValueError(f"optimizer state is missing the moments of {name}")
            for which, t in (("adam.m", m[name]), ("adam.v", v[name])):
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"{which} of {name}: shape {list(t.shape)} does not match {list(p.shape)}")
            # PyTorch keeps `step` as a float tensor: on the device for fused AdamW, else on the CPU.
            step_tensor = torch.tensor(float(step), dtype=torch.float32, device=p.device if self.fused else "cpu")
            self.optimizer.state[p] = {
                "step": step_tensor,
                "exp_avg": m[name].to(p.device, torch.float32).clone(),
                "exp_avg_sq": v[name].to(p.device, torch.float32).clone(),
            }
        self.step_count = step

    def distribute(self):
        """Data parallelism over the initialised process group: each rank steps on its own rows,
        DDP averages the gradients and step() weights each rank's loss so that the average is the
        gradient of the global batch's token mean. evaluate() stays local."""
        from torch.nn.parallel import DistributedDataParallel

        self.world = dist.get_world_size()
        self.local_forward = self.forward
        self.forward = DistributedDataParallel(
            self.model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            broadcast_buffers=False,  # no collective in a forward that one rank runs alone
        )

    # ---- steps --------------------------------------------------------------------------------

    def _loss(self, tokens, loss_mask, positions, forward=None, before_forward=None):
        inputs, targets, mask, pos = split_batch(
            tokens, loss_mask, positions, self.batch, self.seq_len, self.config.vocab_size
        )
        inputs, targets, mask, pos = (x.to(self.device, non_blocking=True) for x in (inputs, targets, mask, pos))
        if before_forward:
            before_forward(mask)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16"):
            hidden = (forward or self.forward)(inputs, pos)
            return causal_lm_loss(hidden, self.model.head_weight, targets, mask, self.loss_rows_per_chunk)

    def step(self, tokens, loss_mask, learning_rate, positions=None):
        """Forward, backward, clip, AdamW. Returns {loss, gradNorm, tokens, step, seconds}."""
        if not (math.isfinite(learning_rate) and learning_rate >= 0):
            raise ValueError(f"learning rate must be a finite number ≥ 0, got {learning_rate}")
        started = time.perf_counter()
        params = [p for p, _ in self.params.values()]
        self.optimizer.zero_grad(set_to_none=True)
        if self.world == 1:
            loss, count = self._loss(tokens, loss_mask, positions)
            loss.backward()
        else:
            counts = []

            def count_globally(mask):
                counted = mask.sum().reshape(1)
                total = counted.clone()
                dist.all_reduce(total)
                counts.extend((counted, total))

            local, count = self._loss(tokens, loss_mask, positions, before_forward=count_globally)
            mine, everyone = (torch.clamp(c, min=1.0) for c in counts)
            # DDP divides the summed gradients by the world size: this rank's token sum × world /
            # the global count makes them the gradient of the global mean, as one process computes it.
            (local * (mine * self.world / everyone)).sum().backward()
            summed = (local.detach() * mine).reshape(1).to(torch.float64)
            dist.all_reduce(summed)
            loss, count = summed / everyone.to(torch.float64), counts[1]
        max_norm = self.options["max_grad_norm"]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if math.isfinite(max_norm) else float("inf"))
        loss_value, norm_value = float(loss), float(norm)
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(
                f"training step {self.step_count + 1} diverged (loss {loss_value}, grad norm {norm_value}); try a lower learning rate"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.optimizer.step()
        self.step_count += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return {
            "loss": loss_value,
            "gradNorm": norm_value,
            "tokens": float(count),
            "step": self.step_count,
            "seconds": time.perf_counter() - started,
        }

    @torch.no_grad()
    def evaluate(self, tokens, loss_mask, positions=None):
        self.model.eval()
        try:
            loss, count = self._loss(tokens, loss_mask, positions, forward=getattr(self, "local_forward", None))
        finally:
            self.model.train()
        return {"loss": float(loss), "tokens": float(count)}
