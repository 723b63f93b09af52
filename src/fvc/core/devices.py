"""The one device resolver for training and inference."""

from __future__ import annotations

import re

import torch

from fvc.core.errors import FvcError

DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device, key: str = "device") -> torch.device:
    """`auto` -> the first GPU when torch sees one, else the CPU; `cpu`; `cuda` or `cuda:N` only when torch
    sees that GPU. Anything else raises FvcError naming the config key `key` (e.g. `train.device`)."""
    text = str(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise FvcError(f"{key}: unknown device {text!r}; use {DEVICE_NAMES}")
    if not torch.cuda.is_available():
        raise FvcError(f"{key} is {text!r} but torch sees no GPU; use auto or cpu")
    index = int(match[1] or 0)
    if index >= torch.cuda.device_count():
        raise FvcError(f"{key} is {text!r} but torch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device(text)
