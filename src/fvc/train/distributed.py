"""Several processes per training job (a model row's `gpus: G` > 1, or `tasks: T` > 1 on CPU): torch
DistributedDataParallel, one process (rank) per GPU or task.

Launch (`launch`, from the job's script): under SLURM, `srun --overlap --ntasks=W` inside the job's
allocation (sbatch asked for `--ntasks=W`, or `--gpus=G --ntasks-per-gpu=1`; the plugin's job step runs the
job's snakemake as one task, so the ranks' step overlaps it); each rank takes its rank, world size and the
master address from SLURM through submitit's `TorchDistributedEnvironment`. Outside SLURM the launcher
starts the W processes itself with torchrun's variables (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, a free
`MASTER_PORT`), so a local run trains as the cluster does. The launcher passes SIGUSR1/SIGTERM on to its
children and exits with the highest exit code of the ranks.

Backend: gloo on CPU; on CUDA nccl for CUDA tensors (each rank on GPU `local_rank`) and gloo for CPU ones.
Ranks agree on every decision that ends or changes a run (precision, validation metrics, a stop request),
rank 0 deciding or all reducing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in its job: rank, world size and the local rank (its GPU on the node)."""

    rank: int
    world: int
    local_rank: int

    @property
    def leader(self) -> bool:
        return self.rank == 0


SINGLE = Ranks(0, 1, 0)


def current() -> Ranks:
    """The process group's ranks, or `SINGLE` when no group is set up."""
    if not dist.is_initialized():
        return SINGLE
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _export_slurm_env() -> None:
    """torchrun's variables from SLURM's (submitit: rank = SLURM_PROCID, master = the first node, a port
    drawn from the job id)."""
    os.environ["SUBMITIT_EXECUTOR"] = "slurm"  # submitit's JobEnvironment reads SLURM's variables then
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def init_ranks(device: str) -> torch.device:
    """Join the job's process group (gloo on CPU; on CUDA nccl, and gloo for CPU tensors); returns this
    rank's device."""
    if "RANK" not in os.environ:
        _export_slurm_env()
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    # On CUDA the ranks still all-reduce small CPU tensors (stop requests, loss sums), which nccl refuses:
    # gloo carries those beside nccl.
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", device_id=dev if cuda else None)
    return dev


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """Whether `flag` is true on any rank (every rank must call it at the same point)."""
    if ranks.world == 1:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_leader(obj: Any, ranks: Ranks) -> Any:
    """Rank 0's `obj` on every rank (picklable)."""
    if ranks.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def summed(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """`value` (on CPU) summed over the ranks."""
    if ranks.world == 1:
        return value
    total = value.clone()
    dist.all_reduce(total)
    return total


def gathered(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Every rank's `value` (the same shape on each), stacked in rank order (every rank must call it)."""
    parts = [torch.empty_like(value) for _ in range(ranks.world)]
    dist.all_gather(parts, value.contiguous())
    return torch.stack(parts)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_commands(world: int, cpus: int, entry: list[str]) -> list[tuple[list[str], dict[str, str]]]:
    """The command and environment of each process to start: one `srun` for all ranks in a SLURM job,
    else one process per rank with torchrun's variables."""
    if os.environ.get("SLURM_JOB_ID"):
        srun = ["srun", "--overlap", f"--ntasks={world}", f"--cpus-per-task={cpus}", "--kill-on-bad-exit=1"]
        return [([*srun, *entry], dict(os.environ))]
    port = str(_free_port())
    shared = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": str(world)}
    return [
        (
            entry,
            {**os.environ, **shared, "RANK": str(r), "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": str(world)},
        )
        for r in range(world)
    ]


def launch(world: int, cpus: int, kwargs: dict[str, Any], log: str | os.PathLike[str] | None) -> int:
    """Run `fvc.train.rank` with `train_rank`'s `kwargs` (JSON) on `world` ranks, their stderr
    appended to `log` (default: this process's); returns the highest exit code. Stop signals received
    meanwhile are passed on to the ranks."""
    entry = [sys.executable, "-m", "fvc.train.rank", json.dumps(kwargs)]
    with open(log or os.devnull, "a") as stderr:
        children = [
            subprocess.Popen(cmd, env=env, stderr=stderr if log else None)
            for cmd, env in rank_commands(world, cpus, entry)
        ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, previous)  # held during the job's start-up
    try:
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max(codes, key=abs)
