"""Pretrained ViT backbones from save_pretrained folders: loaded quietly, left-out tensors in one log line,
folders that are not a ViT refused in one line."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import BertConfig, BertModel, ViTConfig, ViTForImageClassification, ViTModel
from transformers.utils import logging as hf_logging

from fvc.models import build_model
from fvc.models.vit import BackboneError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}


@pytest.mark.parametrize(
    ("saved", "left_out"),
    [
        (lambda c: ViTModel(c, add_pooling_layer=False), None),
        (lambda c: ViTModel(c), "2 stored tensors left out (pooler.dense.bias, pooler.dense.weight)"),
        (ViTForImageClassification, "2 stored tensors left out (classifier.bias, classifier.weight)"),
    ],
    ids=["vit", "vit_with_pooler", "vit_for_classification"],
)
def test_folder_loads_quietly(saved, left_out, tmp_path, capfd, caplog):
    torch.manual_seed(0)
    source = saved(ViTConfig(**TINY, num_labels=3))
    source.save_pretrained(tmp_path)
    capfd.readouterr()
    caplog.set_level(logging.INFO)
    settings = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    model = build_model("vit_gru", {"backbone": str(tmp_path)}, 4, 32)
    vit = getattr(source, "vit", source)
    torch.testing.assert_close(model.backbone.layers[0].mlp.fc1.weight, vit.layers[0].mlp.fc1.weight)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == settings
    lines = [r.getMessage() for r in caplog.records if r.name == "fvc.models.vit"]
    assert lines == ([f"ViT backbone {tmp_path}: {left_out}"] if left_out else [])
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]


def test_folder_that_is_not_a_vit_is_refused_in_one_line(tmp_path, capfd):
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(tmp_path)
    capfd.readouterr()
    with pytest.raises(BackboneError, match="tensors the ViT needs are missing") as err:
        build_model("vit_gru", {"backbone": str(tmp_path)}, 4, 32)
    assert "\n" not in str(err.value) and "embeddings.cls_token" in str(err.value)
    assert "LOAD REPORT" not in capfd.readouterr().err
