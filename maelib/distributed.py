"""Several processes, one model: the process group under ``torchrun``, and who does what.

``torchrun --nproc_per_node=N -m maelib train ...`` starts N copies of the same program, one per
device, and tells each who it is through environment variables:

    RANK         0 .. WORLD_SIZE-1, unique over all nodes (rank 0 is "the main process")
    LOCAL_RANK   0 .. nproc_per_node-1 on this node: which GPU this process drives
    WORLD_SIZE   how many processes in all (nodes x nproc_per_node)
    MASTER_ADDR / MASTER_PORT   where rank 0 waits for the others to join

:func:`setup` joins the group (NCCL between GPUs, gloo on CPUs) and returns this process's
device; without those variables it does nothing, so the same program runs as one plain process.
Then every process trains its own copy of the model on its own share of each batch, and
DistributedDataParallel averages the gradients after every backward pass, so the copies stay
identical. Only the main process writes checkpoints, logs and progress bars.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from .presets import default_device

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Were we started by torchrun (or anything that sets RANK and WORLD_SIZE the same way)?"""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """Is a process group initialised (by :func:`setup` or by the caller)?"""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank over all nodes (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's rank on its node, i.e. its GPU index (0 without a process group)."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def is_main() -> bool:
    """Is this the process that writes checkpoints, logs and progress bars (rank 0)?"""
    return rank() == 0


def setup(device: torch.device | str | None = None) -> torch.device:
    """Join torchrun's process group if there is one; return the device this process trains on.

    Under torchrun: the backend is NCCL when training on CUDA, else gloo; a CUDA process drives
    GPU ``LOCAL_RANK``. ``device="cpu"`` forces gloo on CPUs even on a GPU machine. Without
    torchrun: ``device`` (default: :func:`~maelib.presets.default_device`), no process group.
    """
    device = torch.device(device) if device is not None else default_device()
    if not launched_by_torchrun():
        return device
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(f"RANK and WORLD_SIZE are set but not {', '.join(missing)}; start the program with "
                           "torchrun, or set all of " + ", ".join(TORCHRUN_VARS))
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"distributed training runs on CUDA (NCCL) or on CPUs (gloo), not on {device.type}")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per process
        torch.cuda.set_device(device)
    if not is_distributed():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return device


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if is_distributed():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Run the block in the main process of each node first, then in the others.

    For work whose result the others can reuse: downloading a data set, decoding it into the
    tensor cache. Every process must enter the block (it contains barriers).
    """
    first = local_rank() == 0
    if not first:
        barrier()  # wait for the node's main process to finish the block
    try:
        yield
    finally:
        if first:
            barrier()  # now let the others in


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over all processes (``value`` itself in a single process)."""
    if not is_distributed() or world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return value / world_size()


def same_everywhere(value: int, device: torch.device | str = "cpu") -> bool:
    """Does every process hold the same integer ``value``? (``device``: this process's, for NCCL.)"""
    if not is_distributed() or world_size() == 1:
        return True
    both = torch.tensor([value, -value], dtype=torch.long, device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)  # max(v) == min(v) iff all agree
    return int(both[0]) == -int(both[1])
