"""The Llama / Qwen2 / Qwen3 decoder in PyTorch, built from a Hugging Face config.json + safetensors:
the same architecture and conventions as the ONNX Runtime graphs (trainer/compute/engine/llama.ts):
RMSNorm, RoPE with rotate_half and cos/sin tables computed in float64 from a float32 inverse
frequency (stretched by rope_scaling linear or llama3), grouped-query attention (query head h uses
key/value head h // G), SwiGLU, optional q/k/v bias, qwen3's per-head q/k RMSNorm, tied embeddings,
and LoRA as y = x Wᵀ + b + scaling · (x Aᵀ) Bᵀ with A [r, in], B [out, r]."""

import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from safetensors_io import load_file

MODEL_TYPES = ("llama", "qwen2", "qwen3")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


class ModelConfig:
    """The fields of config.json the architecture needs, validated like trainer/model/config.ts."""

    def __init__(self, raw, source="config.json"):
        def fail(message):
            raise ValueError(f"{source}: {message}")

        if not isinstance(raw, dict):
            fail("model config must be a JSON object")
        self.raw = raw
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES:
            fail(f"unsupported model_type {model_type!r} (supported: {', '.join(MODEL_TYPES)})")
        if raw.get("hidden_act", "silu") != "silu":
            fail(f"unsupported hidden_act {raw.get('hidden_act')!r} (only \"silu\" is supported)")
        self.rope_scaling = parse_rope_scaling(raw.get("rope_scaling"), fail)
        if raw.get("mlp_bias") is True:
            fail("unsupported mlp_bias true (the MLP projections must have no bias)")
        if model_type != "llama" and raw.get("use_sliding_window") is True:
            fail("unsupported use_sliding_window true (only full attention is supported)")

        def positive_int(key, fallback=None):
            value = raw.get(key)
            if value is None:
                if fallback is not None:
                    return fallback
                fail(f'missing field "{key}"')
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(f'field "{key}" must be a positive integer, got {value!r}')
            return value

        def positive_number(key, fallback=None):
            value = raw.get(key)
            if value is None:
                if fallback is not None:
                    return fallback
                fail(f'missing field "{key}"')
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not value > 0
                or not math.isfinite(value)
            ):
                fail(f'field "{key}" must be a positive number, got {value!r}')
            return float(value)

        self.model_type = model_type
        self.hidden_size = positive_int("hidden_size")
        self.num_layers = positive_int("num_hidden_layers")
        self.num_heads = positive_int("num_attention_heads")
        self.num_kv_heads = positive_int("num_key_value_heads", self.num_heads)
        if self.num_heads % self.num_kv_heads:
            fail(
                f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads ({self.num_kv_heads})"
            )
        if raw.get("head_dim") is None and self.hidden_size % self.num_heads:
            fail(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_heads}) when head_dim is absent"
            )
        self.head_dim = positive_int("head_dim", self.hidden_size // self.num_heads)
        if self.head_dim % 2:
            fail(f"head_dim ({self.head_dim}) must be even for rotary embeddings")
        self.intermediate_size = positive_int("intermediate_size")
        self.vocab_size = positive_int("vocab_size")
        self.rms_norm_eps = positive_number("rms_norm_eps")
        self.rope_theta = positive_number("rope_theta", 10000.0)
        self.max_positions = positive_int("max_position_embeddings")
        tie = raw.get("tie_word_embeddings", False)
        self.tie_word_embeddings = bool(tie) if tie is not None else False
        self.attention_bias = True if model_type == "qwen2" else bool(raw.get("attention_bias") or False)
        self.qk_norm = model_type == "qwen3"

    @staticmethod
    def load(directory):
        path = os.path.join(directory, "config.json")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except OSError as error:
            raise ValueError(f"{path}: cannot read model config ({error.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: invalid JSON ({error})") from None
        return ModelConfig(raw, path)

    def projection_shape(self, projection):
        """[out, in] in torch Linear layout."""
        d, q, kv, f = (
            self.hidden_size,
            self.num_heads * self.head_dim,
            self.num_kv_heads * self.head_dim,
            self.intermediate_size,
        )
        return {
            "q_proj": (q, d),
            "k_proj": (kv, d),
            "v_proj": (kv, d),
            "o_proj": (d, q),
            "gate_proj": (f, d),
            "up_proj": (f, d),
            "down_proj": (d, f),
        }[projection]

    def weight_specs(self):
        """(HF name, shape) of every stored tensor, in model order."""
        d = self.hidden_size
        specs = [("model.embed_tokens.weight", (self.vocab_size, d))]
        for layer in range(self.num_layers):
            specs.append((f"model.layers.{layer}.input_layernorm.weight", (d,)))
            for p in ATTENTION:
                specs.append((f"{module_path(layer, p)}.weight", self.projection_shape(p)))
                if self.attention_bias and p != "o_proj":
                    specs.append((f"{module_path(layer, p)}.bias", (self.projection_shape(p)[0],)))
            if self.qk_norm:
                specs.append((head_norm_name(layer, "q_norm"), (self.head_dim,)))
                specs.append((head_norm_name(layer, "k_norm"), (self.head_dim,)))
            specs.append((f"model.layers.{layer}.post_attention_layernorm.weight", (d,)))
            for p in ("gate_proj", "up_proj", "down_proj"):
                specs.append((f"{module_path(layer, p)}.weight", self.projection_shape(p)))
        specs.append(("model.norm.weight", (d,)))
        if not self.tie_word_embeddings:
            specs.append(("lm_head.weight", (self.vocab_size, d)))
        return specs

    def parameter_count(self):
        return sum(math.prod(shape) for _, shape in self.weight_specs())


def parse_rope_scaling(value, fail):
    """rope_scaling as trainer/model/config.ts reads it: None (absent, null, "default"), or a dict
    {"type": "linear", "factor"} / {"type": "llama3", "factor", "low_freq_factor",
    "high_freq_factor", "original_max_position_embeddings"}; anything else fails naming the field."""
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(f'field "rope_scaling" must be an object or null, got {json.dumps(value)}')
    key = "rope_type" if "rope_type" in value else "type"
    kind = value.get(key)
    if kind is None:
        fail('field "rope_scaling" has no "rope_type"')
    if kind == "default":
        return None

    def number(name):
        v = value.get(name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            fail(f'field "rope_scaling.{name}" must be a positive number, got {json.dumps(v)}')
        return float(v)

    if kind == "linear":
        return {"type": "linear", "factor": number("factor")}
    if kind == "llama3":
        scaling = {
            "type": "llama3",
            "factor": number("factor"),
            "low_freq_factor": number("low_freq_factor"),
            "high_freq_factor": number("high_freq_factor"),
            "original_max_position_embeddings": number("original_max_position_embeddings"),
        }
        if scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
            fail(
                f'field "rope_scaling.high_freq_factor" ({value["high_freq_factor"]}) must exceed low_freq_factor ({value["low_freq_factor"]})'
            )
        return scaling
    fail(f"unsupported rope_scaling.{key} {json.dumps(kind)} (supported: linear, llama3)")


def head_norm_name(layer, norm):
    """qwen3's per-head RMSNorm weight ([head_dim]) on q or k, applied before RoPE."""
    return f"model.layers.{layer}.self_attn.{norm}.weight"


def module_path(layer, projection):
    block = "self_attn" if projection in ATTENTION else "mlp"
    return f"model.layers.{layer}.{block}.{projection}"


def lora_key(module, which):
    """PEFT's safetensors key (and the ONNX graph's input name) of a LoRA matrix."""
    return f"base_model.model.{module}.lora_{which}.weight"


def load_weights(directory, config):
    """HF name → float tensor (as stored: F32, F16 or BF16), from model.safetensors or shards; checked against the config."""
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(single):
        weights = load_file(single)
    elif os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{index}: invalid shard index ({error})") from None
        for file in sorted(set(weight_map.values())):
            if os.path.basename(file) != file:
                raise ValueError(f"{index}: weight_map entry {file!r} must be a file name in the same folder")
            weights.update(load_file(os.path.join(directory, file)))
    else:
        raise ValueError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    for name, shape in config.weight_specs():
        tensor = weights.get(name)
        if tensor is None:
            raise ValueError(f"checkpoint is missing weight {name} [{', '.join(map(str, shape))}]")
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"weight {name} has shape {list(tensor.shape)}, expected {list(shape)}")
        if not tensor.is_floating_point():
            raise ValueError(f"weight {name} has dtype {tensor.dtype}, expected a float type")
    return weights


def rope_inverse_frequencies(config):
    """θ^(-2i/hd) for i < hd/2 rounded to float32, stretched as rope_scaling says (HF's linear and
    llama3 rules) in float64 and rounded to float32 again, as ropeInverseFrequencies in llama.ts."""
    half = config.head_dim // 2
    i = torch.arange(half, dtype=torch.float64)
    inv_freq = (1.0 / config.rope_theta ** (2 * i / config.head_dim)).to(torch.float32).to(torch.float64)
    scaling = config.rope_scaling
    if scaling is None:
        return inv_freq
    if scaling["type"] == "linear":
        return (inv_freq / scaling["factor"]).to(torch.float32).to(torch.float64)
    # llama3: long wavelengths divided by factor, short ones kept, a smooth blend between.
    old_context = scaling["original_max_position_embeddings"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelength = 2 * math.pi / inv_freq
    smooth = (old_context / wavelength - low) / (high - low)
    blended = (1 - smooth) * (inv_freq / scaling["factor"]) + smooth * inv_freq
    scaled = torch.where(
        wavelength < old_context / high,
        inv_freq,
        torch.where(wavelength > old_context / low, inv_freq / scaling["factor"], blended),
    )
    return scaled.to(torch.float32).to(torch.float64)


def rope_tables(config, positions):
    """cos/sin [positions, hd/2] (float32) as ropeTables in llama.ts: float64 angles of a float32 inverse frequency."""
    inv_freq = rope_inverse_frequencies(config)
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cos(angles).to(torch.float32), torch.sin(angles).to(torch.float32)


class Linear(nn.Module):
    """x Wᵀ (+ b) (+ scaling · (x Aᵀ) Bᵀ). W and b are frozen unless full fine-tuning."""

    def __init__(self, weight, bias=None):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.lora_A = None  # [r, in]
        self.lora_B = None  # [out, r]
        self.scaling = 1.0

    def add_lora(self, a, b, scaling):
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(b)
        self.scaling = scaling

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y


def rms_norm(x, weight, eps):
    """In float32 whatever the autocast dtype (as HF's LlamaRMSNorm)."""
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def rotate(x, cos, sin):
    """rotate_half RoPE: x [B, heads, T, hd], cos/sin [B, 1, T, hd/2]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def causal_attention(q, k, v):
    """q [B, H, T, hd], k/v [B, H, T, hd] → [B, H, T, hd]."""
    if HAS_SDPA:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # [B, H, T, T]
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, -1e9)  # finite, as the ONNX graph's additive mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


class DecoderLayer(nn.Module):
    def __init__(self, config, layer, weights):
        super().__init__()
        self.config = config

        def tensor(name):
            return weights[name]

        def projection(p):
            bias = None
            if config.attention_bias and p in ("q_proj", "k_proj", "v_proj"):
                bias = tensor(f"{module_path(layer, p)}.bias")
            return Linear(tensor(f"{module_path(layer, p)}.weight"), bias)

        self.input_norm = nn.Parameter(tensor(f"model.layers.{layer}.input_layernorm.weight"), requires_grad=False)
        self.post_norm = nn.Parameter(
            tensor(f"model.layers.{layer}.post_attention_layernorm.weight"), requires_grad=False
        )
        self.proj = nn.ModuleDict({p: projection(p) for p in PROJECTIONS})
        self.q_norm = self.k_norm = None
        if config.qk_norm:
            self.q_norm = nn.Parameter(tensor(head_norm_name(layer, "q_norm")), requires_grad=False)
            self.k_norm = nn.Parameter(tensor(head_norm_name(layer, "k_norm")), requires_grad=False)

    def forward(self, x, cos, sin):
        c = self.config
        b, t, _ = x.shape
        g = c.num_heads // c.num_kv_heads
        h = rms_norm(x, self.input_norm, c.rms_norm_eps)  # float32; autocast casts at the matmuls
        q = self.proj["q_proj"](h).view(b, t, c.num_heads, c.head_dim)  # [B, T, H, hd]
        k = self.proj["k_proj"](h).view(b, t, c.num_kv_heads, c.head_dim)  # [B, T, KV, hd]
        if self.q_norm is not None:  # qwen3: RMSNorm over each head's hd, before RoPE
            q = rms_norm(q, self.q_norm, c.rms_norm_eps)
            k = rms_norm(k, self.k_norm, c.rms_norm_eps)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, H, T, hd], [B, KV, T, hd]
        v = self.proj["v_proj"](h).view(b, t, c.num_kv_heads, c.head_dim).transpose(1, 2)
        q = rotate(q, cos, sin)
        k = rotate(k, cos, sin)
        if g > 1:  # query head h reads key/value head h // G
            k = k[:, :, None].expand(b, c.num_kv_heads, g, t, c.head_dim).reshape(b, c.num_heads, t, c.head_dim)
            v = v[:, :, None].expand(b, c.num_kv_heads, g, t, c.head_dim).reshape(b, c.num_heads, t, c.head_dim)
        if q.dtype != v.dtype:  # autocast: RoPE ran in float32
            q, k = q.to(v.dtype), k.to(v.dtype)
        context = causal_attention(q, k, v).transpose(1, 2).reshape(b, t, c.num_heads * c.head_dim)  # [B, T, H·hd]
        x = x + self.proj["o_proj"](context)
        h = rms_norm(x, self.post_norm, c.rms_norm_eps)
        gate = self.proj["gate_proj"](h)  # [B, T, F]
        up = self.proj["up_proj"](h)
        return x + self.proj["down_proj"](F.silu(gate) * up)


class LlamaModel(nn.Module):
    """Decoder + final norm; lm_head is applied by the loss (see causal_lm_loss)."""

    def __init__(self, config, weights, dtype=torch.float32):
        super().__init__()
        self.config = config
        weights = {name: t.to(dtype) for name, t in weights.items()}
        self.embed = nn.Parameter(weights["model.embed_tokens.weight"], requires_grad=False)  # [V, D]
        self.layers = nn.ModuleList(DecoderLayer(config, i, weights) for i in range(config.num_layers))
        self.norm = nn.Parameter(weights["model.norm.weight"], requires_grad=False)
        self.lm_head = (
            None if config.tie_word_embeddings else nn.Parameter(weights["lm_head.weight"], requires_grad=False)
        )
        cos, sin = rope_tables(config, config.max_positions)
        self.register_buffer("rope_cos", cos, persistent=False)  # [maxPositions, hd/2]
        self.register_buffer("rope_sin", sin, persistent=False)
        self.gradient_checkpointing = False

    @property
    def head_weight(self):
        return self.embed if self.lm_head is None else self.lm_head

    def named_weights(self):
        """HF name → parameter (tied lm_head appears once, as the embedding)."""
        out = {"model.embed_tokens.weight": self.embed}
        for i, layer in enumerate(self.layers):
            out[f"model.layers.{i}.input_layernorm.weight"] = layer.input_norm
            out[f"model.layers.{i}.post_attention_layernorm.weight"] = layer.post_norm
            for p, linear in layer.proj.items():
                out[f"{module_path(i, p)}.weight"] = linear.weight
                if linear.bias is not None:
                    out[f"{module_path(i, p)}.bias"] = linear.bias
            if layer.q_norm is not None:
                out[head_norm_name(i, "q_norm")] = layer.q_norm
                out[head_norm_name(i, "k_norm")] = layer.k_norm
        out["model.norm.weight"] = self.norm
        if self.lm_head is not None:
            out["lm_head.weight"] = self.lm_head
        return out

    def lora_modules(self, targets):
        """(module path, Linear) of every targeted projection, in layer order."""
        return [
            (module_path(i, p), layer.proj[p])
            for i, layer in enumerate(self.layers)
            for p in PROJECTIONS
            if p in targets
        ]

    def forward(self, tokens, positions):
        """tokens, positions int64 [B, T] → hidden [B, T, D] after the final norm (float32)."""
        x = F.embedding(tokens, self.embed).float()  # [B, T, D]; the residual stream stays float32
        cos = self.rope_cos[positions][:, None]  # [B, 1, T, hd/2]
        sin = self.rope_sin[positions][:, None]
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, cos, sin)
            else:
                x = layer(x, cos, sin)
        return rms_norm(x, self.norm, self.config.rms_norm_eps)


def checkpoint(function, *args):
    import torch.utils.checkpoint as cp

    try:
        return cp.checkpoint(function, *args, use_reentrant=False)
    except TypeError:  # torch < 1.11 has no use_reentrant
        return cp.checkpoint(function, *args)


def causal_lm_loss(hidden, head, targets, mask, rows_per_chunk=None):
    """Σ mask · nll / max(1, Σ mask) with nll = −log softmax(hidden · headᵀ)[target]; hidden [B, T, D],
    targets [B, T], mask [B, T]. Returns (loss, count). Optional row chunks bound the logits' size."""
    d = hidden.shape[-1]
    h = hidden.reshape(-1, d)
    t = targets.reshape(-1)
    m = mask.reshape(-1).float()
    count = m.sum()
    rows = h.shape[0]
    chunk = rows if not rows_per_chunk else max(1, min(rows, rows_per_chunk))
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, rows, chunk):
        logits = F.linear(h[start : start + chunk], head).float()  # [R, V]
        nll = F.cross_entropy(logits, t[start : start + chunk], reduction="none")  # [R]
        total = total + (nll * m[start : start + chunk]).sum()
    return total / torch.clamp(count, min=1.0), count
