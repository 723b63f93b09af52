"""ViT models (transformers' ViTModel backbone): per-frame ViT + GRU, and a tubelet-embedding ViT with a
temporal transformer head.

params (both):
- `backbone`: a local folder written by `save_pretrained` (loaded with `from_pretrained`; nothing is
  downloaded), e.g. `google/vit-base-patch16-224-in21k` saved on a machine with internet; a
  ViTForImageClassification folder works too (its classifier is left out). Tensors the backbone does not use
  are left out with one log line; a folder missing tensors the ViT needs is refused. Without `backbone`, a
  small random ViT is built from `vit` (ViTConfig overrides).
- `freeze_backbone`: default true with a pretrained `backbone`, false for a random one. A frozen backbone
  trains only the new parts (vit_gru: the GRU head; vit_transformer: the tubelet embedding and the head).
- `unfreeze_last_blocks` (default 0): with a frozen backbone, its last N encoder layers and its final
  layernorm train too (`fvc.models.freezing.unfreeze_last_blocks`); the frozen layers before them run without
  grad in vit_gru. A fold's export holds the unfrozen layers, the shared backbone file the rest.
vit_gru: `gru_hidden` (default 64). vit_transformer: `tubelet` (frames per tubelet, default 2),
`temporal_layers` (default 1), `temporal_heads` (default 4).

On the meta device (`with torch.device("meta")`) only the backbone's config is read, never its weights; the
exported params carry the backbone's config as `vit`, so inference needs no backbone folder.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fvc.core.errors import FvcError
from fvc.models.base import ClipClassifier
from fvc.models.freezing import unfreeze_last_blocks

if TYPE_CHECKING:
    from transformers import ViTModel

log = logging.getLogger(__name__)

TINY_VIT = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "patch_size": 8,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


class BackboneError(FvcError, ValueError):
    """A `backbone` folder whose weights do not fit a ViT."""


def _on_meta() -> bool:
    return torch.empty(0).device.type == "meta"


def _first(names: Collection[str], count: int = 5) -> str:
    shown = sorted(names)[:count]
    return ", ".join(shown) + (", ..." if len(names) > count else "")


def _from_pretrained(path: str) -> ViTModel:
    """`ViTModel.from_pretrained` without transformers' load report and progress bar: tensors the ViT does not
    use (a pooler, a classifier) are logged in one line; missing or mis-shaped ones raise BackboneError."""
    from transformers import ViTModel
    from transformers.utils import logging as hf_logging

    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = ViTModel.from_pretrained(path, add_pooling_layer=False, output_loading_info=True)
    except RuntimeError as exc:  # mis-shaped tensors: transformers raises after its report
        raise BackboneError(f"ViT backbone {path!r}: its tensors do not fit its config.json") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()
    if info["missing_keys"]:
        missing = info["missing_keys"]
        raise BackboneError(
            f"ViT backbone {path!r}: not a ViT save_pretrained folder: {len(missing)} tensors the ViT needs "
            f"are missing ({_first(missing)})"
        )
    if info["unexpected_keys"]:
        left = info["unexpected_keys"]
        log.info("ViT backbone %s: %d stored tensors left out (%s)", path, len(left), _first(left))
    return model


def load_backbone(backbone: str | None, vit: dict[str, Any], size: int) -> ViTModel:
    """The pretrained `backbone` folder, or else a random ViT (TINY_VIT with the `vit` overrides), without
    pooling layer. transformers is imported here, not at module level: it takes seconds, and most models
    never need it."""
    from transformers import ViTConfig, ViTModel

    if backbone:
        path = str(backbone)
        if _on_meta():
            return ViTModel(ViTConfig.from_pretrained(path), add_pooling_layer=False)
        try:
            return _from_pretrained(path)
        except OSError as exc:
            raise FileNotFoundError(f"ViT backbone {path!r}: not a save_pretrained folder ({exc})") from exc
    config = ViTConfig(**{**TINY_VIT, "image_size": size, **vit})
    return ViTModel(config, add_pooling_layer=False)


class _ViTBase(ClipClassifier):
    """Backbone loading, freezing and the backbone-free export params; `head` holds the subclass's params."""

    def __init__(
        self,
        num_frames: int,
        size: int,
        head: dict[str, Any],
        backbone: str | None,
        freeze_backbone: bool | None,
        vit: dict[str, Any] | None,
        unfreeze: int,
    ) -> None:
        freeze = bool(backbone) if freeze_backbone is None else freeze_backbone
        vit = dict(vit or {})
        params = {
            "backbone": backbone,
            "freeze_backbone": freeze,
            "vit": vit,
            "unfreeze_last_blocks": unfreeze,
        }
        super().__init__({**params, **head}, num_frames, size)
        self.freeze_backbone = freeze
        self.unfrozen = int(unfreeze)
        self.backbone = load_backbone(backbone, vit, size)
        self.backbone.requires_grad_(not self.freeze_backbone)
        self.hidden = self.backbone.config.hidden_size

    def backbone_blocks(self) -> list[str]:
        return [f"backbone.layers.{i}" for i in range(len(self.backbone.layers))]

    def backbone_tail(self) -> list[str]:
        return ["backbone.layernorm"]

    def declare_trainable(self, model_name: str, **new_parts: bool) -> None:
        """`trainable`: the backbone as frozen or not, the `new_parts` trainable, then the unfrozen blocks."""
        self.trainable = {"backbone": not self.freeze_backbone, **new_parts}
        unfreeze_last_blocks(self, self.unfrozen, f"models.{model_name}.params.unfreeze_last_blocks")

    def encode(self, tokens: torch.Tensor, grad_before: bool) -> torch.Tensor:
        """The backbone's layers and final layernorm over embedded `tokens`. With a frozen backbone, the
        layers before the unfrozen ones keep grad only when `grad_before` (a trainable module feeds them)."""
        layers = list(self.backbone.layers)
        split = len(layers) - self.unfrozen if self.freeze_backbone else 0
        grad = torch.is_grad_enabled()
        h = tokens
        with torch.set_grad_enabled(grad and grad_before):
            for layer in layers[:split]:
                h = layer(h, None)
        with torch.set_grad_enabled(grad and (grad_before or split < len(layers))):
            for layer in layers[split:]:
                h = layer(h, None)
            return self.backbone.layernorm(h)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        super().set_gradient_checkpointing(enabled)
        if enabled:
            self.backbone.activation_checkpointing_enable({"use_reentrant": False})
        else:
            self.backbone.activation_checkpointing_disable()

    def export_params(self) -> dict[str, Any]:
        from transformers import ViTConfig

        params = {k: v for k, v in self.params.items() if k != "backbone"}
        config = self.backbone.config.to_dict()
        params["vit"] = {
            k: config[k]
            for k in ViTConfig().to_dict()
            if k in config
            and not k.startswith("_")
            and k not in ("transformers_version", "architectures", "model_type")
        }
        params["freeze_backbone"] = self.freeze_backbone
        return params


class ViTGRU(_ViTBase):
    """ViT on every frame (its CLS token) -> GRU over time -> linear. A frozen backbone runs without grad."""

    def __init__(
        self,
        num_frames: int,
        size: int,
        *,
        backbone: str | None = None,
        freeze_backbone: bool | None = None,
        vit: dict[str, Any] | None = None,
        unfreeze_last_blocks: int = 0,
        gru_hidden: int = 64,
    ) -> None:
        head = {"gru_hidden": gru_hidden}
        super().__init__(num_frames, size, head, backbone, freeze_backbone, vit, unfreeze_last_blocks)
        self.head = _GRUHead(self.hidden, int(gru_hidden))
        self.declare_trainable("vit_gru", head=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        b, t = x.shape[:2]
        pixels = x.flatten(0, 1) * 2.0 - 1.0
        pixels = pixels.to(self.backbone.embeddings.patch_embeddings.projection.weight.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            tokens = self.backbone.embeddings(pixels, interpolate_pos_encoding=True)
        out = self.encode(tokens, grad_before=not self.freeze_backbone)
        return self.head(out[:, 0].reshape(b, t, -1))


class _GRUHead(nn.Module):
    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(seq.to(self.fc.weight.dtype))  # autocast leaves GRU inputs in bf16; match weights
        return self.fc(last[-1]).squeeze(-1)


class TubeletEmbedding(nn.Module):
    """Spatio-temporal patch embedding: Conv3d with kernel = stride = (tubelet, patch, patch). Initialised by
    inflating the backbone's 2-D patch projection (its weights spread evenly over the tubelet's frames)."""

    def __init__(self, projection: nn.Conv2d, tubelet: int) -> None:
        super().__init__()
        ph, pw = projection.kernel_size
        self.proj = nn.Conv3d(3, projection.out_channels, (tubelet, ph, pw), stride=(tubelet, ph, pw))
        if projection.weight.device.type != "meta":
            with torch.no_grad():
                self.proj.weight.copy_(projection.weight.unsqueeze(2).repeat(1, 1, tubelet, 1, 1) / tubelet)
                assert self.proj.bias is not None and projection.bias is not None
                self.proj.bias.copy_(projection.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, T, 3, H, W]` -> tokens `[B, T', N, D]`."""
        h = self.proj(x.transpose(1, 2).contiguous())
        return h.flatten(3).permute(0, 2, 3, 1)


class ViTTransformer(_ViTBase):
    """Tubelet embedding (replacing the ViT's 2-D patch embedding) -> ViT layers per tubelet slot (CLS token,
    interpolated position embeddings) -> temporal transformer over the slots' CLS tokens -> linear."""

    def __init__(
        self,
        num_frames: int,
        size: int,
        *,
        backbone: str | None = None,
        freeze_backbone: bool | None = None,
        vit: dict[str, Any] | None = None,
        unfreeze_last_blocks: int = 0,
        tubelet: int = 2,
        temporal_layers: int = 1,
        temporal_heads: int = 4,
    ) -> None:
        head = {"tubelet": tubelet, "temporal_layers": temporal_layers, "temporal_heads": temporal_heads}
        super().__init__(num_frames, size, head, backbone, freeze_backbone, vit, unfreeze_last_blocks)
        if num_frames % tubelet:
            raise ValueError(
                f"vit_transformer: num_frames {num_frames} is not a multiple of tubelet {tubelet}"
            )
        self.embedding = TubeletEmbedding(self.backbone.embeddings.patch_embeddings.projection, tubelet)
        self.backbone.embeddings.patch_embeddings = nn.Identity()  # type: ignore[assignment]
        self.head = _TemporalHead(
            self.hidden,
            num_frames // tubelet,
            int(temporal_layers),
            int(temporal_heads),
        )
        self.declare_trainable("vit_transformer", embedding=True, head=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        tokens = self.embedding(x * 2.0 - 1.0)
        b, slots, n, d = tokens.shape
        tokens = tokens.reshape(b * slots, n, d)
        emb = self.backbone.embeddings
        h = torch.cat([emb.cls_token.expand(b * slots, -1, -1).to(tokens.dtype), tokens], dim=1)
        h = emb.dropout(h + emb.interpolate_pos_encoding(h, self.size, self.size))
        cls = self.encode(h, grad_before=True)[:, 0].reshape(b, slots, d)
        return self.head(cls)


class _TemporalHead(nn.Module):
    def __init__(self, dim: int, slots: int, layers: int, heads: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, slots, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 1)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        h = self.encoder(seq + self.position)
        return self.fc(self.norm(h.mean(dim=1))).squeeze(-1)
