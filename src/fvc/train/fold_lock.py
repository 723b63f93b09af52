"""One training job per (model, fold) checkpoint folder at a time.

After a driver crash its SLURM jobs keep running, and the rerun (after `--unlock`) submits the same trainings
again; two jobs resuming from and writing the same checkpoints would corrupt each other. Each training holds
an exclusive `flock` on `<checkpoint folder>/train.lock` for its whole run (released by the kernel when the
process ends, however it ends; shared file systems that support flock, such as NFSv4 and Lustre with
`flock` mounts, carry it across nodes) and writes its SLURM job id, host and pid into the file. A second job
refuses at once rather than waits: the first may run for hours, and a waiting job would hold its own
allocation idle meanwhile; the refusal names the holder and what to do."""

from __future__ import annotations

import fcntl
import functools
import inspect
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from fvc.core.errors import FvcError

LOCK_NAME = "train.lock"
F = TypeVar("F", bound=Callable[..., Any])


class FoldBusyError(FvcError):
    """Another process trains the same model and fold into the same checkpoint folder."""


def _holder() -> dict[str, object]:
    return {"slurm_job": os.environ.get("SLURM_JOB_ID"), "host": socket.gethostname(), "pid": os.getpid()}


def busy_message(model: str, fold: int, holder: dict[str, object]) -> str:
    """`models/naive_cnn fold 0 is being trained by SLURM job 123 on vm (pid 456): wait for it or scancel
    123` (a local holder: `... by pid 456 on vm: wait for it or kill 456`)."""
    what = f"models/{model} fold {fold} is being trained by"
    host, pid, job = holder.get("host", "?"), holder.get("pid", "?"), holder.get("slurm_job")
    if job:
        return f"{what} SLURM job {job} on {host} (pid {pid}): wait for it or scancel {job}"
    return f"{what} pid {pid} on {host}: wait for it or kill {pid}"


@contextmanager
def exclusive_fold(checkpoint_dir: str | os.PathLike[str], model: str, fold: int) -> Iterator[Path]:
    """Hold the lock of `checkpoint_dir` (created if missing) while the block runs; raise `FoldBusyError`
    naming the holder when another process holds it. Yields the lock file."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            raise FoldBusyError(busy_message(model, fold, holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        yield path
    finally:
        os.close(fd)


def holding_fold_lock(train: F) -> F:
    """Run `train` (with arguments `checkpoint_dir`, `spec` and `fold`) inside `exclusive_fold`."""
    signature = inspect.signature(train)

    @functools.wraps(train)
    def locked(*args: Any, **kwargs: Any) -> Any:
        given = signature.bind(*args, **kwargs).arguments
        with exclusive_fold(given["checkpoint_dir"], given["spec"].name, given["fold"]):
            return train(*args, **kwargs)

    return locked  # type: ignore[return-value]
