"""Batches for training and validation: built once per job, shuffled per epoch, from memory when they fit.

- `EpochShuffle` draws each epoch's order from `stable_seed(*parts, epoch)` after `set_epoch(epoch)`, so the
  DataLoader is built once (no new worker pool per epoch) and the order is the same on every run and resume.
- `ClipBatches` yields whole batches (a list of indices per item, `batch_size=None` in the DataLoader): one
  gather per batch instead of one item fetch + collate per clip. When the clips (uint8, at the model's frames
  and size) take at most `PRELOAD_SHARE` of the job's memory they are read once into one tensor; otherwise
  every batch reads its clip files (the loader's workers then read ahead).
- Several ranks (`fvc.train.distributed`): every rank draws the same epoch order, cut into global batches of
  `batch_size x world` clips; rank r takes the r-th of the `world` near-equal parts of each (`tensor_split`: a
  last batch of fewer clips than ranks leaves some ranks an empty part, which yields the batch's first clip
  as a stand-in that training weighs 0: models take no empty batch), so every rank has as many batches and a
  step of W ranks sees the clips of one process's batch of `batch_size x world`.
- Each loader draws its workers' seeds from a generator of its own, never from torch's global one.
- Workers: the row's `num_workers` (default: the job's CPUs less one), at most the job's CPUs less one
  (`fvc.core.devices.job_cpus`: SLURM's CPUs per task within the affinity mask), and none when the clips are
  in memory (a gather needs no reader). Pinned memory and persistent workers on CUDA only.

Preloaded batches: the epoch's order is made a tensor once and each batch is one `index_select` by a slice
of it, the same ops per step as a bare loop that shuffles (`benchmarks/train_speed.py`: fvc's training pass
beside that loop; with uint8 clips gathered through a DataLoader, scaling every batch, logistic_regression
was 0.27x).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import cast

import polars as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from fvc.clips.dataset import load_clip_tensor
from fvc.core.config import ModelSpec
from fvc.core.devices import job_cpus
from fvc.core.seeding import stable_seed
from fvc.models import scale_clips

#: Clips held in memory when their bytes are at most this share of the job's `mem_mb`.
PRELOAD_SHARE = 0.1
MB = 1024 * 1024


class EpochShuffle(Sampler[int]):
    """A permutation of `size` indices seeded by `stable_seed(*parts, epoch)`; call `set_epoch` first."""

    def __init__(self, size: int, *parts: object) -> None:
        self.size, self.parts, self.epoch = size, parts, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(stable_seed(*self.parts, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())


class ClipBatches(Dataset):
    """clips.csv rows -> batches (clips `[B, T, 3, size, size]`, float labels `[B]`) by index lists;
    `clip_path` relative to `root`. Clips are uint8 as read; `preload` reads them all once, as that dtype (a
    float dtype scales them to [0, 1] with `scale_clips`, once)."""

    def __init__(
        self,
        rows: pl.DataFrame,
        num_frames: int,
        size: int,
        root: str | os.PathLike[str],
        preload: torch.dtype | None = None,
    ) -> None:
        self.paths = [Path(root) / p for p in rows["clip_path"].to_list()]
        self.labels = torch.tensor(rows["label"].to_list(), dtype=torch.float32)
        self.num_frames, self.size = num_frames, size
        self.clips: torch.Tensor | None = None
        if preload is not None and self.paths:
            clips = torch.stack([self._read(i) for i in range(len(self.paths))])
            self.clips = scale_clips(clips) if preload.is_floating_point else clips

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> torch.Tensor:
        return load_clip_tensor(self.paths[index], self.num_frames, self.size)

    def __getitem__(self, indices: list[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.clips is not None:
            return self.clips.index_select(0, index), self.labels.index_select(0, index)
        return torch.stack([self._read(i) for i in index.tolist()]), self.labels.index_select(0, index)


class RankPart(Sampler[list[int]]):
    """Rank `rank`'s part of each of `batches`' (global) batches (`rank_part`)."""

    def __init__(self, batches: BatchSampler, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for indices in self.batches:
            yield rank_part(torch.tensor(indices), self.rank, self.world).tolist()


def rank_part(indices: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s part of a global batch's `indices`; an empty part is the first index (weighed 0)."""
    part = indices.tensor_split(world)[rank]
    return part if len(part) else indices[:1]


def part_size(size: int, rank: int, world: int) -> int:
    """Clips of rank `rank`'s part of a global batch of `size` (`tensor_split`'s sizes)."""
    return size // world + (rank < size % world)


class FromBatch(Sampler[list[int]]):
    """The batches of `batches` from number `start` on (set before each iteration): where a resumed epoch
    continues."""

    def __init__(self, batches: RankPart) -> None:
        self.batches, self.start = batches, 0

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batches), self.start, None)


class Batches:
    """An epoch's batches in the order of `sampler` (global batches; this rank's part of each): gathered
    straight from preloaded clips, else through a DataLoader (workers read ahead). Built once per job."""

    def __init__(
        self,
        data: ClipBatches,
        sampler: BatchSampler,
        loader: DataLoader | None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.data, self.sampler, self.loader = data, sampler, loader
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return len(self.sampler)

    def global_sizes(self) -> list[int]:
        """Clips per global batch (over all ranks)."""
        samples, size = len(cast(Sized, self.sampler.sampler)), self.sampler.batch_size
        return [min(size, samples - i) for i in range(0, samples, size)]

    def sizes(self) -> list[int]:
        """Clips per batch of this rank (0 for a stand-in)."""
        return [part_size(size, self.rank, self.world) for size in self.global_sizes()]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.from_batch(0)

    def from_batch(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from number `start` on (the same order as a full pass)."""
        if self.loader is not None:
            cast(FromBatch, self.loader.sampler).start = start
            return iter(self.loader)
        if self.data.clips is None:
            parts = RankPart(self.sampler, self.rank, self.world)
            return (self.data[indices] for indices in itertools.islice(parts, start, None))
        # Preloaded: the epoch's order made a tensor once, each batch gathered by a slice of it.
        order = torch.tensor(list(cast(Iterable[int], self.sampler.sampler)), dtype=torch.long)
        size = self.sampler.batch_size
        firsts = range(start * size, len(order), size)
        if self.world == 1:
            return (self.data[order[first : first + size]] for first in firsts)
        return (self.data[rank_part(order[f : f + size], self.rank, self.world)] for f in firsts)


def preload_bytes(spec: ModelSpec, clips: int, dtype: torch.dtype) -> int:
    """Bytes that `clips` clips of the row's shape take held as `dtype` in each of the job's ranks."""
    return clips * spec.num_frames * 3 * spec.size * spec.size * dtype.itemsize * spec.world_size


def preload_dtype(spec: ModelSpec, clips: int, device: torch.device) -> torch.dtype | None:
    """How clips are held in memory, if at all: scaled float32 on CPU (no conversion per batch), uint8 for a
    GPU (4x less to copy); None when `clips` of them, in each of the job's ranks, take more than
    `PRELOAD_SHARE` of the job's memory."""
    dtype = torch.float32 if device.type == "cpu" else torch.uint8
    return dtype if preload_bytes(spec, clips, dtype) <= PRELOAD_SHARE * spec.mem_mb * MB else None


def workers(spec: ModelSpec) -> int:
    """Loader workers reading clip files: the row's (default: all it may), at most the job's CPUs less one."""
    spare = max(job_cpus() - 1, 0)
    return spare if spec.num_workers is None else min(spec.num_workers, spare)


def make_loaders(
    train_rows: pl.DataFrame,
    val_rows: pl.DataFrame,
    spec: ModelSpec,
    root: str | os.PathLike[str],
    device: torch.device,
    *shuffle_parts: object,
    rank: int = 0,
    world: int = 1,
) -> tuple[Batches, EpochShuffle, Batches]:
    """The training batches of rank `rank` of `world` (order from the returned sampler: `set_epoch` before
    each epoch) and the validation batches (all of them, in order), each built once."""
    preload = preload_dtype(spec, train_rows.height + val_rows.height, device)
    shuffle = EpochShuffle(train_rows.height, *shuffle_parts)

    def batches(rows: pl.DataFrame, sampler: Sampler[int], rank: int = 0, world: int = 1) -> Batches:
        data = ClipBatches(rows, spec.num_frames, spec.size, root, preload)
        by_batch = BatchSampler(sampler, spec.batch_size * world, drop_last=False)
        if preload is not None:
            return Batches(data, by_batch, None, rank, world)
        count = workers(spec)
        loader = DataLoader(
            data,
            sampler=FromBatch(RankPart(by_batch, rank, world)),
            batch_size=None,
            num_workers=count,
            pin_memory=device.type == "cuda",
            persistent_workers=count > 0 and device.type == "cuda",
            generator=torch.Generator().manual_seed(stable_seed(*shuffle_parts, "workers")),
        )
        return Batches(data, by_batch, loader, rank, world)

    val = batches(val_rows, SequentialSampler(range(val_rows.height)))
    return batches(train_rows, shuffle, rank, world), shuffle, val
