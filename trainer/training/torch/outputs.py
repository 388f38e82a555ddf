"""What a finished PyTorch run writes, in the formats trainer/adapters/ reads: a PEFT adapter folder
(adapter_config.json, adapter_model.safetensors, manifest.json) or, for full fine-tuning, a model
folder (config.json, model.safetensors, manifest.json). Folders appear whole (temp + rename)."""

import datetime
import hashlib
import json
import os
import shutil

import safetensors_io
from model import PROJECTIONS

MANIFEST_SCHEMA_VERSION = 1


def file_sha256(paths):
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def base_weights_sha256(directory):
    """As loadCheckpoint: model.safetensors, or the shards in file-name order."""
    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(single):
        return file_sha256([single])
    with open(os.path.join(directory, "model.safetensors.index.json"), encoding="utf-8") as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    return file_sha256([os.path.join(directory, name) for name in files])


def peft_config(r, alpha, targets, base_name):
    """adapter_config.json as peftConfigJson writes it."""
    return {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": base_name,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_dropout": 0,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": {},
        "revision": None,
        "target_modules": [p for p in PROJECTIONS if p in targets],
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }


def adapter_id(created, weights_sha256):
    return created.strftime("%Y%m%d-%H%M%S-") + weights_sha256[:6]


def _write_folder(directory, write):
    if os.path.exists(directory):
        raise ValueError(f"{directory}: already exists (choose a new output folder)")
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    temp = os.path.join(parent, f".{os.path.basename(directory)}.tmp-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    os.makedirs(temp)
    try:
        manifest = write(temp)
        os.replace(temp, directory)
        return manifest
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _manifest(draft, files, sha256, size):
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    manifest = {
        "schemaVersion": MANIFEST_SCHEMA_VERSION,
        "id": adapter_id(created, sha256),
        "created": created.isoformat().replace("+00:00", "Z"),
    }
    manifest.update(draft)
    manifest["weights"] = {"files": files, "sha256": sha256, "bytes": size}
    return manifest


def _lora_order(tensors, num_layers, targets):
    """PEFT keys in model order: layer, projection (PROJECTIONS order), A then B."""
    ordered = {}
    for layer in range(num_layers):
        for p in PROJECTIONS:
            if p not in targets:
                continue
            block = "self_attn" if p in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            for which in ("A", "B"):
                key = f"base_model.model.model.layers.{layer}.{block}.{p}.lora_{which}.weight"
                ordered[key] = tensors[key].float().contiguous()
    return ordered


def write_lora_adapter(directory, tensors, *, num_layers, r, alpha, targets, base_name, draft):
    def write(temp):
        data = safetensors_io.serialize(_lora_order(tensors, num_layers, targets), {"format": "pt"})
        with open(os.path.join(temp, "adapter_model.safetensors"), "wb") as f:
            f.write(data)
        with open(os.path.join(temp, "adapter_config.json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(peft_config(r, alpha, targets, base_name), indent=2) + "\n")
        manifest = _manifest(draft, ["adapter_model.safetensors"], hashlib.sha256(data).hexdigest(), len(data))
        with open(os.path.join(temp, "manifest.json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
        return manifest

    return _write_folder(directory, write)


def write_full_model(directory, weights, *, config_json, weight_order, draft):
    def write(temp):
        ordered = {name: weights[name].float().contiguous() for name in weight_order}
        data = safetensors_io.serialize(ordered, {"format": "pt"})
        with open(os.path.join(temp, "model.safetensors"), "wb") as f:
            f.write(data)
        with open(os.path.join(temp, "config.json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(config_json, indent=2) + "\n")
        manifest = _manifest(draft, ["model.safetensors"], hashlib.sha256(data).hexdigest(), len(data))
        with open(os.path.join(temp, "manifest.json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
        return manifest

    return _write_folder(directory, write)
