"""Reader for Idiom dataset files (.idiomds) in Python, for the PyTorch backend.

Standard library only; memory stays bounded (the index and the tokens are read on demand).
Format: FORMAT.md next to this file.

    from idiom_dataset import IdiomDataset
    with IdiomDataset("repo.idiomds") as ds:
        for ex in ds.examples(split="train"):
            ex["tokens"]      # array('i') of token ids
            ex["loss_start"]  # targets are positions i >= max(1, loss_start)

Run as a script to print a JSON summary (used by the tests):
    python3 idiom_dataset.py FILE
"""

import array
import json
import struct
import sys

MAGIC = b"IDIOMDS1"
PREAMBLE = 32
RECORD = struct.Struct("<QIIIBBBB")  # token_start, length, loss_start, file, kind, split, flags, reserved
KINDS = ("plain", "fim-block", "fim-line-rest", "fim-line-part")
SPLITS = ("train", "heldout")


class IdiomDataset:
    def __init__(self, path):
        self.path = path
        self._f = open(path, "rb")
        try:
            self._f.seek(0, 2)
            size = self._f.tell()
            self._f.seek(0)
            pre = self._f.read(PREAMBLE)
            if len(pre) < PREAMBLE or pre[:8] != MAGIC:
                raise ValueError(f"{path}: not a valid Idiom dataset: wrong magic bytes")
            header_offset, header_length = struct.unpack_from("<QQ", pre, 8)
            if header_offset + header_length != size or header_offset < PREAMBLE:
                raise ValueError(f"{path}: not a valid Idiom dataset: header offset/length do not match the file size")
            self._f.seek(header_offset)
            self.header = json.loads(self._f.read(header_length).decode("utf-8"))
            if self.header.get("format") != "idiom-dataset" or self.header.get("version") != 1:
                raise ValueError(f"{path}: not a valid Idiom dataset: unsupported format or version")
            self._tokens = self.header["sections"]["tokens"]
            self._index = self.header["sections"]["index"]
            if self._index["recordBytes"] != RECORD.size:
                raise ValueError(f"{path}: not a valid Idiom dataset: unexpected record size")
        except Exception:
            self._f.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._f.close()

    def __len__(self):
        return self._index["count"]

    def record(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        self._f.seek(self._index["offset"] + i * RECORD.size)
        return self._decode(self._f.read(RECORD.size))

    def tokens(self, rec):
        self._f.seek(self._tokens["offset"] + rec["token_start"] * 4)
        out = array.array("i")
        out.frombytes(self._f.read(rec["length"] * 4))
        if sys.byteorder != "little":
            out.byteswap()
        return out

    def examples(self, split=None, block=4096):
        n = len(self)
        for first in range(0, n, block):
            count = min(block, n - first)
            self._f.seek(self._index["offset"] + first * RECORD.size)
            raw = self._f.read(count * RECORD.size)
            records = [self._decode(raw[k * RECORD.size : (k + 1) * RECORD.size]) for k in range(count)]
            for k, rec in enumerate(records):
                if split is not None and rec["split"] != split:
                    continue
                yield dict(rec, index=first + k, tokens=self.tokens(rec))

    def _decode(self, raw):
        start, length, loss_start, file, kind, split, flags, _ = RECORD.unpack(raw)
        if start + length > self._tokens["count"] or loss_start > length or file >= len(self.header["files"]):
            raise ValueError(f"{self.path}: corrupt dataset: index record out of range")
        return {
            "token_start": start,
            "length": length,
            "loss_start": loss_start,
            "file": file,
            "kind": KINDS[kind],
            "split": SPLITS[split],
            "flags": flags,
        }


def _summary(path):
    with IdiomDataset(path) as ds:
        total = 0
        checksum = 0
        targets = 0
        for ex in ds.examples():
            total += len(ex["tokens"])
            for position, token in enumerate(ex["tokens"]):
                checksum = (checksum * 31 + token + position) % 1000000007
            targets += len(ex["tokens"]) - max(1, ex["loss_start"])
        return {
            "examples": len(ds),
            "tokens": total,
            "checksum": checksum,
            "targets": targets,
            "heldOutCommits": ds.header["split"]["heldOutCommits"],
        }


if __name__ == "__main__":
    print(json.dumps(_summary(sys.argv[1])))
