"""The trainer's seeded generator (trainer/model/random.ts: xoshiro128** seeded through
splitmix32), ported so the PyTorch backend draws the same LoRA initialisation and the same data
order as the ONNX Runtime backend for the same seed. Public algorithms; same stream bit for bit."""

import math

MASK = 0xFFFFFFFF


def _imul(a, b):
    return (a * b) & MASK


def _rotl(x, k):
    return ((x << k) | (x >> (32 - k))) & MASK


class Rng:
    def __init__(self, seed):
        if not math.isfinite(seed):
            raise ValueError(f"Rng seed must be a finite number, got {seed}")
        x = int(math.trunc(seed)) & MASK

        def splitmix():
            nonlocal x
            x = (x + 0x9E3779B9) & MASK
            z = x
            z = _imul(z ^ (z >> 16), 0x85EBCA6B)
            z = _imul(z ^ (z >> 13), 0xC2B2AE35)
            return (z ^ (z >> 16)) & MASK

        self.s = [splitmix(), splitmix(), splitmix(), splitmix()]
        if not any(self.s):
            self.s[0] = 1

    def next_uint32(self):
        s0, s1, s2, s3 = self.s
        result = _imul(_rotl(_imul(s1, 5), 7), 9)
        t = (s1 << 9) & MASK
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = _rotl(s3, 11)
        self.s = [s0, s1, s2, s3]
        return result

    def next(self):
        """Uniform float in [0, 1) with 53 random bits."""
        high = self.next_uint32() >> 5
        low = self.next_uint32() >> 6
        return (high * 67108864 + low) / 9007199254740992

    def int(self, n):
        if n <= 0 or int(n) != n:
            raise ValueError(f"Rng.int needs a positive integer, got {n}")
        return math.floor(self.next() * n)

    def uniform_list(self, count, low, high):
        """`count` samples in [low, high), as doubles (store as float32 to match the TypeScript side)."""
        width = high - low
        nxt = self.next
        return [low + width * nxt() for _ in range(count)]
