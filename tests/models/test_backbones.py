"""Image backbones: shapes and sizes of torchvision's ResNets, and loading local self-supervised checkpoints."""

from __future__ import annotations

import pytest
import torch

from falcon_sc.models.checkpoint import load_backbone, strip_prefixes
from falcon_sc.models.resnet import resnet18, resnet50


def _backbone_params(model):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))


def test_resnets_match_torchvision_sizes_and_interface():
    # torchvision: resnet18 11,689,512 and resnet50 25,557,032 weights with a 1000-class fc (7x7 stem);
    # the CIFAR stem swaps the 7x7x3x64 convolution for a 3x3x3x64 one
    r18, r50 = resnet18(10), resnet50(10, small_inputs=False)
    assert _backbone_params(r18) == 11_689_512 - 513_000 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    assert _backbone_params(r50) == 25_557_032 - 2_049_000
    assert len(r18.state_dict()) == 122 and len(r50.state_dict()) == 320  # same entries as torchvision's
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var"} <= set(r18.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert r18.embed(x).shape == (2, 512) and r18(x).shape == (2, 10)
    assert r50.embed(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    digits = resnet18(4, in_channels=1)
    assert digits(torch.randn(3, 1, 8, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="n_classes"):
        resnet18(0)


def _moco_v3_file(tmp_path, source):
    state = {}
    for k, v in source.state_dict().items():
        state[f"module.base_encoder.{k.replace('head.', 'fc.')}"] = v
        state[f"module.momentum_encoder.{k}"] = torch.zeros_like(v)
    state["module.predictor.0.weight"] = torch.ones(3, 3)
    path = tmp_path / "moco_v3.pth.tar"
    torch.save({"epoch": 100, "state_dict": state, "optimizer": {"lr": torch.tensor(0.1)}}, path)
    return path


def test_moco_v3_checkpoint_loads_into_the_backbone_only(tmp_path):
    torch.manual_seed(0)
    source = resnet18(10)
    torch.manual_seed(1)
    target = resnet18(7)
    head_before = target.head.weight.clone()
    report = load_backbone(target, _moco_v3_file(tmp_path, source))
    assert len(report["loaded"]) == 120 and not report["missing"] and not report["unexpected"]
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        if not name.startswith("head."):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(target.head.weight, head_before)  # the fine head is not the checkpoint's


@pytest.mark.parametrize("prefix", ["", "module.", "backbone.", "module.encoder_q."])
def test_plain_solo_learn_and_moco_prefixes(tmp_path, prefix):
    source, target = resnet18(5), resnet18(5)
    path = tmp_path / "ckpt.pt"
    state = {prefix + k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    torch.save({"state_dict": state} if prefix == "backbone." else state, path)
    load_backbone(target, path)
    torch.testing.assert_close(target.layer3[1].conv2.weight, source.layer3[1].conv2.weight)


def test_mismatches_are_listed_and_nothing_is_downloaded(tmp_path):
    path = tmp_path / "r50.pt"
    torch.save(resnet50(5).state_dict(), path)
    with pytest.raises(ValueError, match=r"does not match the backbone .*mismatched: .*resnet18 vs resnet50"):
        load_backbone(resnet18(5, small_inputs=False), path)
    report = load_backbone(resnet18(5, small_inputs=False), path, strict=False)
    assert report["loaded"] and report["unexpected"] and report["mismatched"]
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_backbone(resnet18(5), tmp_path / "missing.pth")
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="holds no state dict"):
        load_backbone(resnet18(5), tmp_path / "empty.pt")


def test_strip_prefixes_keeps_unprefixed_state_dicts():
    state = {"conv1.weight": torch.ones(1)}
    assert strip_prefixes(state) == state
    assert set(strip_prefixes({"module.conv1.weight": torch.ones(1), "queue": torch.ones(1)})) == {"conv1.weight"}
