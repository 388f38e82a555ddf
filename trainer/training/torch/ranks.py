"""The step server over N local processes (DDP): rank 0 is serve.py itself, ranks 1..N-1 are
follower processes it starts (serve.py --rank r). Requests travel to the followers over a gloo
group, so control works the same on CUDA (nccl trains) and on the CPU. Each step's rows are split
in contiguous shards of ⌈B/N⌉ rows, the last padded with rows that count no tokens."""

import datetime
import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist

# Followers wait for the next request between calls: an idle trainer (evaluation, checkpoints) is
# normal, a dead rank 0 closes the connection and ends the wait anyway.
CONTROL_TIMEOUT = datetime.timedelta(days=1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_followers(script, world, port, kind):
    """Starts ranks 1..world-1 and waits until each has imported torch; raises one line if one dies."""
    followers = []
    for rank in range(1, world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        followers.append(
            subprocess.Popen(
                [sys.executable, "-u", "-B", script, "--rank", str(rank), kind],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for rank, child in enumerate(followers, start=1):
        if child.stdout.readline().strip() != "ready":
            stop_followers(followers)
            raise ValueError(f"DDP rank {rank} did not start (exit {child.wait()}; its error is on stderr)")
    return followers


def stop_followers(followers, timeout=30):
    for child in followers:
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def die_with_parent():
    """Linux: a follower ends when rank 0 does, however rank 0 ends."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def join_group(rank, world, port, device):
    """Initialises the process group (nccl on CUDA, gloo on the CPU); returns the gloo control group."""
    if device.startswith("cuda"):
        torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl" if device.startswith("cuda") else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
    )
    return dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)


def broadcast(request, control):
    """Rank 0 sends `request`; the others receive and return it."""
    box = [request]
    dist.broadcast_object_list(box, src=0, group=control)
    return box[0]


def shard_rows(tokens, loss_mask, positions, batch, seq_len, rank, world):
    """This rank's rows of a batch of `batch` rows: (tokens, mask, positions) for ⌈batch/world⌉ rows."""
    per_rank = -(-batch // world)
    width = tokens.numel() // batch
    start, stop = min(batch, rank * per_rank), min(batch, (rank + 1) * per_rank)
    rows = tokens.reshape(batch, width)
    mask = torch.ones(batch, seq_len) if loss_mask is None else loss_mask.reshape(batch, seq_len)
    pad = per_rank - (stop - start)

    def take(values, columns, fill):
        part = values[start:stop]
        return torch.cat([part, torch.full((pad, columns), fill, dtype=values.dtype)]) if pad else part

    out_positions = None if positions is None else take(positions.reshape(batch, seq_len), seq_len, 0).reshape(-1)
    return take(rows, width, 0).reshape(-1), take(mask, seq_len, 0.0).reshape(-1), out_positions
