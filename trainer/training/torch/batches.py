"""Training rows and the learning-rate schedule, as trainer/training/pipeline/batches.ts and plan.ts make
them (same seeded order, same packing, same mask, same warm-up + cosine), so a run of the
standalone PyTorch trainer sees the batches `idiom train` would for the same seed."""

import math
import os
import sys

import torch

from idiom_rng import Rng

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "dataset"))
from idiom_dataset import IdiomDataset  # noqa: E402  (trainer/data/dataset/idiom_dataset.py)


def read_examples(path, split="train"):
    """[(tokens int32 tensor, loss_start)] of one split, and the dataset header."""
    with IdiomDataset(path) as ds:
        examples = [
            (torch.tensor(ex["tokens"], dtype=torch.int32), ex["loss_start"]) for ex in ds.examples(split=split)
        ]
        return examples, ds.header


OPEN_ROWS = 64  # as OPEN_ROWS in batches.ts


def pack_epoch(lengths, row_tokens, seed, epoch):
    """Example indices of each row of `epoch` (packEpoch): seeded Fisher–Yates, then first fit over the open rows."""
    order = list(range(len(lengths)))
    rng = Rng((seed * 1_000_003 + epoch * 7919 + 17) & 0xFFFFFFFF)
    for i in range(len(order) - 1, 0, -1):
        j = rng.int(i + 1)
        order[i], order[j] = order[j], order[i]
    rows, open_rows = [], []  # open_rows: [indices, used]
    for index in order:
        length = min(lengths[index], row_tokens)
        if length < 2:
            continue
        at = next((k for k, row in enumerate(open_rows) if row[1] + length <= row_tokens), -1)
        if at < 0:
            if len(open_rows) == OPEN_ROWS:
                rows.append(open_rows.pop(0)[0])
            open_rows.append([[], 0])
            at = len(open_rows) - 1
        row = open_rows[at]
        row[0].append(index)
        row[1] += length
        if row_tokens - row[1] < 2:
            rows.append(open_rows.pop(at)[0])
    rows.extend(row[0] for row in open_rows)
    return rows


def fill_rows(examples, rows, batch, seq_len, pad_id):
    """tokens int32 [B, T+1], mask float32 [B, T], targets that count (fillRows)."""
    width = seq_len + 1
    tokens = torch.full((batch, width), pad_id, dtype=torch.int32)
    mask = torch.zeros(batch, seq_len)
    targets = 0
    for b, row in enumerate(rows[:batch]):
        offset = 0
        for index in row:
            ids, loss_start = examples[index]
            length = min(len(ids), width - offset)
            tokens[b, offset : offset + length] = ids[:length]
            first = max(1, loss_start)
            if first < length:
                mask[b, offset + first - 1 : offset + length - 1] = 1
                targets += length - first
            offset += length
    return tokens, mask, targets


def warmup_steps_for(total_steps):
    return min(50, max(1, round_half_up(0.06 * total_steps)))


def round_half_up(x):
    return math.floor(x + 0.5)  # JavaScript's Math.round


def learning_rate_at(peak, warmup_steps, total_steps, min_ratio, step):
    """1-based step: linear warm-up, then cosine down to min_ratio · peak (learningRateAt)."""
    if step <= warmup_steps:
        return peak * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
