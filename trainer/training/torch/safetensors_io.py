"""safetensors reader and writer for the PyTorch backend (Python standard library + torch only).

Hand-written because the `safetensors` package is not part of Debian's python3-torch install
and the format is small: u64 header length, JSON header, raw little-endian tensor bytes. Strict in
the same ways as trainer/model/safetensors.ts: header length and JSON validated, offsets in
bounds, contiguous and non-overlapping; F32/F16/BF16 (plus the integer types) are read.
"""

import json
import mmap
import os
import struct

import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
NAMES = {dtype: name for name, (dtype, _) in DTYPES.items()}


class SafetensorsError(ValueError):
    pass


def read_header(f, size, source):
    """Parses and checks the header; returns (entries {name: (dtype, shape, begin, end)}, metadata, data_start)."""
    if size < 8:
        raise SafetensorsError(f"{source}: not a safetensors file (shorter than 8 bytes)")
    (length,) = struct.unpack("<Q", f.read(8))
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise SafetensorsError(f"{source}: not a safetensors file (header length {length} exceeds the file)")
    raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SafetensorsError(f"{source}: corrupt safetensors header ({error})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{source}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + length
    data_size = size - data_start
    entries = {}
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise SafetensorsError(f"{source}: tensor {name!r}: header entry is not an object")
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if dtype not in DTYPES:
            raise SafetensorsError(f"{source}: tensor {name!r}: unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise SafetensorsError(f"{source}: tensor {name!r}: invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise SafetensorsError(f"{source}: tensor {name!r}: invalid data_offsets {offsets!r}")
        begin, end = offsets
        count = 1
        for d in shape:
            count *= d
        if not 0 <= begin <= end <= data_size:
            raise SafetensorsError(
                f"{source}: tensor {name!r}: data_offsets [{begin}, {end}] out of bounds (data is {data_size} bytes; truncated file?)"
            )
        if end - begin != count * DTYPES[dtype][1]:
            raise SafetensorsError(f"{source}: tensor {name!r}: {end - begin} bytes do not hold {dtype} {shape}")
        entries[name] = (dtype, shape, begin, end)
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin != position:
            kind = "overlaps another" if begin < position else "leaves a gap before it"
            raise SafetensorsError(f"{source}: tensor {name!r} {kind} (offset {begin}, expected {position})")
        position = end
    if position != data_size:
        raise SafetensorsError(f"{source}: {data_size - position} bytes after the last tensor")
    return entries, metadata, data_start


def load_file(path, names=None):
    """{name: tensor} (own memory, CPU) for every tensor of `path`, or only `names`."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        entries, _, data_start = read_header(f, size, path)
        out = {}
        if size == data_start:
            view = b""
        else:
            view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            for name, (dtype, shape, begin, end) in entries.items():
                if names is not None and name not in names:
                    continue
                torch_dtype, _ = DTYPES[dtype]
                buffer = bytearray(view[data_start + begin : data_start + end])
                if len(buffer) == 0:
                    tensor = torch.empty(shape, dtype=torch_dtype)
                else:
                    tensor = torch.frombuffer(buffer, dtype=torch_dtype).reshape(shape)
                out[name] = tensor
        finally:
            if not isinstance(view, bytes):
                view.close()
        return out


def serialize(tensors, metadata=None):
    """safetensors bytes for {name: tensor} in the given order (little-endian host assumed)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    offset = 0
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.dtype not in NAMES:
            raise SafetensorsError(f"tensor {name!r}: dtype {tensor.dtype} cannot be stored")
        data = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)  # data starts 8-aligned, as the reference writer does
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def save_file(tensors, path, metadata=None):
    """Writes atomically (temp file + rename)."""
    data = serialize(tensors, metadata)
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    return data
