"""Initialise a backbone from a local self-supervised checkpoint (MoCo v3, solo-learn, torchvision state dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

#: prefixes stripped from checkpoint keys, longest first (DDP ``module.``, MoCo v1/v2 ``encoder_q``, MoCo v3
#: ``base_encoder``, solo-learn ``backbone``, generic ``encoder`` / ``model``)
PREFIXES: tuple[str, ...] = (
    "module.encoder_q.",
    "module.base_encoder.",
    "module.backbone.",
    "module.encoder.",
    "encoder_q.",
    "base_encoder.",
    "backbone.",
    "encoder.",
    "model.",
    "module.",
)
#: keys that are never part of a backbone (classifier / projection / prediction heads)
HEAD_PREFIXES: tuple[str, ...] = ("fc.", "head.", "projector.", "predictor.", "classifier.", "momentum_", "encoder_k.")


def _state_dict(obj: object, path: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "net", "backbone"):  # the common wrappers, outermost first
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # a plain state dict
    raise ValueError(
        f"{path!r} holds no state dict (looked at the file itself and its 'state_dict', 'model', 'net' and "
        "'backbone' entries)."
    )


def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Sequence[str] = PREFIXES) -> dict[str, torch.Tensor]:
    """Keys without the first matching prefix of ``prefixes`` (longest listed first).

    When some keys carry a prefix, the others (e.g. a MoCo queue, the projector) are dropped.
    """
    prefixed = {}
    for key, value in state.items():
        for p in prefixes:
            if key.startswith(p):
                prefixed[key[len(p) :]] = value
                break
    return prefixed if prefixed else dict(state)


def load_backbone(
    model: nn.Module, path: str | Path, *, prefixes: Sequence[str] = PREFIXES, strict: bool = True
) -> dict[str, list[str]]:
    """Load the backbone weights of a local checkpoint into ``model`` (its head stays as initialised).

    The file is read with ``torch.load(weights_only=True)`` (no code runs from it). Wrapper entries
    (``state_dict``, ``model``...) and key prefixes (``module.encoder_q.``, ``module.base_encoder.``,
    ``backbone.``...) are removed; classifier and projection heads are ignored.

    Parameters
    ----------
    model
        The network (e.g. :func:`~falcon_sc.models.resnet.resnet50`).
    path
        Checkpoint file.
    prefixes
        Key prefixes to strip.
    strict
        Raise when a backbone weight of ``model`` is missing from the checkpoint or a checkpoint weight has no
        place (or another shape) in ``model``; ``False`` loads what matches and reports the rest.

    Returns
    -------
    ``{"loaded": [...], "missing": [...], "unexpected": [...], "mismatched": [...]}``: parameter names.

    Examples
    --------
    >>> import tempfile, os, torch
    >>> from falcon_sc.models import load_backbone, resnet18
    >>> path = os.path.join(tempfile.mkdtemp(), "ssl.pth")
    >>> pretrained = resnet18(n_classes=10, width=8)
    >>> torch.save({"state_dict": {"module.encoder_q." + k: v for k, v in pretrained.state_dict().items()}}, path)
    >>> report = load_backbone(resnet18(n_classes=100, width=8), path)  # prefixes stripped, head left alone
    >>> len(report["loaded"]) > 0, report["missing"], report["mismatched"]
    (True, [], [])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; give the path of a local file (nothing is downloaded)."
        )
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = strip_prefixes(_state_dict(obj, str(path)), prefixes)
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    mismatched = sorted(k for k in state.keys() & own.keys() if state[k].shape != own[k].shape)
    report = {
        "loaded": sorted(k for k in state.keys() & own.keys() if k not in mismatched),
        "missing": sorted(own.keys() - state.keys()),
        "unexpected": sorted(state.keys() - own.keys()),
        "mismatched": mismatched,
    }
    problems = {k: v for k, v in report.items() if k != "loaded" and v}
    if not report["loaded"] or (strict and problems):
        detail = "; ".join(
            f"{k}: {', '.join(v[:8])}{' ...' if len(v) > 8 else ''} ({len(v)})" for k, v in problems.items()
        )
        raise ValueError(
            f"checkpoint {str(path)!r} does not match the backbone ({len(report['loaded'])} weights match). {detail}. "
            "Check the architecture (resnet18 vs resnet50, CIFAR stem) and the key prefixes, or pass strict=False "
            "to load what matches."
        )
    model.load_state_dict({k: state[k] for k in report["loaded"]}, strict=False)
    return report
