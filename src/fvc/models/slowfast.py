"""SlowFast (Feichtenhofer et al. 2019) in pytorchvideo's published layout: a Slow pathway (T/alpha frames,
wide) and a Fast pathway (all T frames, channels / beta_inv) of 3-D ResNet bottlenecks, fused after the stem
and every stage but the last by time-strided lateral convolutions (Fast -> Slow, concatenated); fvc's head
pools both pathways, concatenates them and maps them to one logit.

The backbone's state-dict names and shapes equal those of pytorchvideo's `create_slowfast` at the same sizes
(`blocks.0.multipathway_blocks.0.conv.weight`, ...), so the Kinetics checkpoint SLOWFAST_8x8_R50.pyth loads
by name (`fvc import-weights`, `fvc.weights.kinetics`); only its 400-class projection (`blocks.6.proj`) is
not fvc's.

params: `alpha` (Slow frame stride, default 4), `beta_inv` (Fast channel divisor, 8), `width` (Slow stem
channels, 16), `depths` (bottlenecks per stage, [1, 1, 1, 1]), `fusion_kernel` (temporal kernel of the
lateral convolutions, 7), `dropout` (0.5), `backbone` (a .safetensors file written by `fvc import-weights`),
`freeze_backbone` (default true with a backbone) and `unfreeze_last_blocks` (with a frozen backbone, its
last N of 4 stages, both pathways and their fusion, train too; default 0; the freezing is
`fvc.models.kinetics_backbone`'s). Temporal kernels are the published ones: Slow stem 1,
Fast stem 5; Slow res2/res3 1 and res4/res5 3, Fast 3 everywhere (none clamped to the clip length: that
would change the published shapes). `PRESETS["slowfast_r50"]` is SlowFast-R50 8x8 (32 frames, alpha 4).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from fvc.models.kinetics_backbone import KineticsBackbone

PRESETS: dict[str, dict[str, object]] = {
    "slowfast_r50": {"alpha": 4, "beta_inv": 8, "width": 64, "depths": [3, 4, 6, 3], "fusion_kernel": 7},
}
# The published clip of each preset (num_frames, size): Kinetics training used these.
PRESET_CLIPS = {"slowfast_r50": (32, 224)}
# The params that fix the backbone's tensors (an imported backbone must match them).
ARCHITECTURE = ("alpha", "beta_inv", "width", "depths", "fusion_kernel")
# Kinetics normalisation of the pretrained models (pytorchvideo's transforms): (x - mean) / std.
KINETICS_MEAN, KINETICS_STD = 0.45, 0.225


def conv3d(
    cin: int,
    cout: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int] = (1, 1, 1),
    groups: int = 1,
) -> nn.Conv3d:
    """Bias-free Conv3d with 'same' padding."""
    pad = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return nn.Conv3d(cin, cout, kernel, stride, pad, groups=groups, bias=False)


class ResBlock(nn.Module):
    """pytorchvideo's ResBlock: `activation(branch1(x) + branch2(x))`; `branch1` is a strided 1x1x1
    projection (`branch1_conv`, `branch1_norm`) when given, else the identity."""

    def __init__(self, branch2: nn.Module, branch1_conv: nn.Module | None, branch1_norm: nn.Module | None):
        super().__init__()
        self.branch1_conv = branch1_conv
        self.branch1_norm = branch1_norm
        self.branch2 = branch2
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.branch1_conv is not None:
            shortcut = self.branch1_conv(x)
            if self.branch1_norm is not None:
                shortcut = self.branch1_norm(shortcut)
        return self.activation(self.branch2(x) + shortcut)


class ResStage(nn.Module):
    """A stage: its blocks in `res_blocks` (pytorchvideo's ResStage)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class ThreeConvs(nn.Module):
    """pytorchvideo's bottleneck branch: conv_a/norm_a/act_a -> conv_b/norm_b/act_b -> conv_c/norm_c (the
    subclass builds the layers; the names are the published checkpoints')."""

    conv_a: nn.Module
    norm_a: nn.Module
    act_a: nn.Module
    conv_b: nn.Module
    norm_b: nn.Module
    act_b: nn.Module
    conv_c: nn.Module
    norm_c: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_a(self.norm_a(self.conv_a(x)))
        x = self.act_b(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class Bottleneck(ThreeConvs):
    """3-D ResNet bottleneck: (kt x 1 x 1) -> (1 x 3 x 3, spatial stride) -> (1 x 1 x 1)."""

    def __init__(self, cin: int, inner: int, cout: int, kt: int, stride: int) -> None:
        super().__init__()
        self.conv_a = conv3d(cin, inner, (kt, 1, 1))
        self.norm_a = nn.BatchNorm3d(inner)
        self.act_a = nn.ReLU(inplace=True)
        self.conv_b = conv3d(inner, inner, (1, 3, 3), (1, stride, stride))
        self.norm_b = nn.BatchNorm3d(inner)
        self.act_b = nn.ReLU(inplace=True)
        self.conv_c = conv3d(inner, cout, (1, 1, 1))
        self.norm_c = nn.BatchNorm3d(cout)


def resnet_stage(cin: int, inner: int, cout: int, depth: int, kt: int, stride: int) -> ResStage:
    """`depth` bottlenecks; the first changes width and spatial stride (projected shortcut)."""
    blocks = []
    for i in range(depth):
        block_in, block_stride = (cin, stride) if i == 0 else (cout, 1)
        project = block_in != cout or block_stride > 1
        blocks.append(
            ResBlock(
                Bottleneck(block_in, inner, cout, kt, block_stride),
                conv3d(block_in, cout, (1, 1, 1), (1, block_stride, block_stride)) if project else None,
                nn.BatchNorm3d(cout) if project else None,
            )
        )
    return ResStage(blocks)


class Stem(nn.Module):
    """Conv (kt x 7 x 7, spatial stride 2) -> BN -> ReLU -> max-pool (1 x 3 x 3, stride 2)."""

    def __init__(self, cout: int, kt: int) -> None:
        super().__init__()
        self.conv = conv3d(3, cout, (kt, 7, 7), (1, 2, 2))
        self.norm = nn.BatchNorm3d(cout)
        self.activation = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(self.norm(self.conv(x))))


class FuseFastToSlow(nn.Module):
    """Lateral connection: the Fast features, time-strided by alpha, doubled in channels."""

    def __init__(self, fast_channels: int, kernel: int, alpha: int) -> None:
        super().__init__()
        self.conv_fast_to_slow = nn.Conv3d(
            fast_channels, 2 * fast_channels, (kernel, 1, 1), (alpha, 1, 1), (kernel // 2, 0, 0), bias=False
        )
        self.norm = nn.BatchNorm3d(2 * fast_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, fast: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv_fast_to_slow(fast)))


class Pathways(nn.Module):
    """One step of both pathways (`multipathway_blocks`: Slow, Fast) and its lateral fusion, if any."""

    def __init__(self, slow: nn.Module, fast: nn.Module, fusion: FuseFastToSlow | None) -> None:
        super().__init__()
        self.multipathway_blocks = nn.ModuleList([slow, fast])
        self.multipathway_fusion = fusion


class SlowFast(KineticsBackbone):
    """Two pathways with lateral connections; see the module docstring."""

    def __init__(
        self,
        num_frames: int,
        size: int,
        *,
        alpha: int = 4,
        beta_inv: int = 8,
        width: int = 16,
        depths: Sequence[int] = (1, 1, 1, 1),
        fusion_kernel: int = 7,
        dropout: float = 0.5,
        backbone: str | None = None,
        freeze_backbone: bool | None = None,
        unfreeze_last_blocks: int = 0,
    ) -> None:
        depths = [int(d) for d in depths]
        freeze = bool(backbone) if freeze_backbone is None else freeze_backbone
        super().__init__(
            {
                "alpha": alpha,
                "beta_inv": beta_inv,
                "width": width,
                "depths": depths,
                "fusion_kernel": fusion_kernel,
                "dropout": dropout,
                "backbone": backbone,
                "freeze_backbone": freeze,
                "unfreeze_last_blocks": unfreeze_last_blocks,
            },
            num_frames,
            size,
        )
        self.alpha = int(alpha)
        if num_frames % self.alpha:
            raise ValueError(f"slowfast: num_frames {num_frames} is not a multiple of alpha {self.alpha}")
        fast_w = max(1, width // beta_inv)
        blocks = [
            Pathways(Stem(width, 1), Stem(fast_w, 5), FuseFastToSlow(fast_w, fusion_kernel, self.alpha))
        ]
        slow_in, fast_in = width + 2 * fast_w, fast_w
        for i, depth in enumerate(depths):
            inner = width * 2**i
            fast_inner = max(1, inner // beta_inv)
            slow_out, fast_out = 4 * inner, 4 * fast_inner
            stride = 1 if i == 0 else 2
            last = i == len(depths) - 1
            blocks.append(
                Pathways(
                    resnet_stage(slow_in, inner, slow_out, depth, 1 if i < 2 else 3, stride),
                    resnet_stage(fast_in, fast_inner, fast_out, depth, 3, stride),
                    None if last else FuseFastToSlow(fast_out, fusion_kernel, self.alpha),
                )
            )
            slow_in, fast_in = slow_out + (0 if last else 2 * fast_out), fast_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Dropout(float(dropout)), nn.Linear(slow_in + fast_in, 1))
        self.attach_backbone("slowfast", ARCHITECTURE)

    def backbone_blocks(self) -> list[str]:
        return [f"blocks.{i}" for i in range(1, len(self.blocks))]

    def backbone_tail(self) -> list[str]:
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable["blocks"] is not False):
            fast = ((x - KINETICS_MEAN) / KINETICS_STD).transpose(1, 2).contiguous()  # [B, 3, T, H, W]
            slow = fast[:, :, :: self.alpha].contiguous()
            for step in self.blocks:
                assert isinstance(step, Pathways)
                slow_block, fast_block = step.multipathway_blocks
                slow = self.run_blocks(_blocks_of(slow_block), slow)
                fast = self.run_blocks(_blocks_of(fast_block), fast)
                if step.multipathway_fusion is not None:
                    slow = torch.cat([slow, step.multipathway_fusion(fast)], dim=1)
            pooled = torch.cat([slow.mean(dim=(2, 3, 4)), fast.mean(dim=(2, 3, 4))], dim=1)
        return self.head(pooled).squeeze(-1)


def _blocks_of(module: nn.Module) -> Iterable[nn.Module]:
    """A stage's residual blocks (the units `run_blocks` checkpoints), or the module itself (a stem)."""
    return module.res_blocks if isinstance(module, ResStage) else [module]
