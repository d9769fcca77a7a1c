"""Convert the authors' released checkpoints (global_mapper.pt, local_mapper.pt) to our format.

Their files are plain state dicts with keys `mapping_{i}.{j}.*`, `mapping_patch_{i}.{j}.*` and
`{attn2 path with '_' for '.'}_to_k.weight` / `_to_v.weight`. They are read with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from elite.errors import EliteError
from elite.models.elite_model import EliteModel, EliteModelConfig

_MLP = re.compile(r"^mapping(_patch)?_(\d+)\.(\d+)\.(weight|bias)$")
_KV = re.compile(r"^(.+)_(to_k|to_v)\.weight$")


def load_official(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EliteError(f"{path}: not a loadable weights-only torch checkpoint ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EliteError(f"{path}: expected a state dict of tensors")
    return state


def split_official(state: dict[str, torch.Tensor], path: Path) -> tuple[dict, dict]:
    """Authors' keys -> (mapper state for our GlobalMapper/LocalMapper, KV state for KVProjections)."""
    mapper, kv = {}, {}
    for key, tensor in state.items():
        if m := _MLP.match(key):
            group = "patch_mlps" if m.group(1) else "cls_mlps"
            mapper[f"{group}.{m.group(2)}.{m.group(3)}.{m.group(4)}"] = tensor
        elif m := _KV.match(key):
            kv[f"layers.{m.group(1)}.{m.group(2)}.weight"] = tensor
        else:
            raise EliteError(f"{path}: unexpected key {key!r} for an ELITE checkpoint")
    if not mapper or not kv:
        raise EliteError(f"{path}: has no mapping_* or no *_to_k/_to_v keys; is it an ELITE mapper checkpoint?")
    return mapper, kv


def convert_official(
    global_path: Path,
    local_path: Path | None,
    image_encoder: str,
    vision_depth: int = 24,
    feature_layers: list[int] | None = None,
) -> EliteModel:
    g_mapper, g_kv = split_official(load_official(global_path), global_path)
    num_layers = len({k.split(".")[1] for k in g_mapper})
    shapes: dict[str, list[int]] = {}
    for key, tensor in g_kv.items():
        layer, proj = key.split(".")[1], key.split(".")[2]
        entry = shapes.setdefault(layer, [tensor.shape[1], 0, 0])
        entry[1 if proj == "to_k" else 2] = tensor.shape[0]
    config = EliteModelConfig(
        vision_dim=g_mapper["cls_mlps.0.0.weight"].shape[1],
        text_dim=g_mapper["cls_mlps.0.6.weight"].shape[0],
        vision_depth=vision_depth,
        feature_layers=list(feature_layers or [24, 4, 8, 12, 16])[:num_layers],
        image_encoder=image_encoder,
        kv_shapes=shapes,
        has_local=local_path is not None,
    )
    model = EliteModel(config)
    _load(model.global_mapper, g_mapper, global_path)
    _load(model.global_kv, g_kv, global_path)
    if local_path is not None:
        l_mapper, l_kv = split_official(load_official(local_path), local_path)
        assert model.local_mapper is not None and model.local_kv is not None  # config.has_local
        _load(model.local_mapper, l_mapper, local_path)
        _load(model.local_kv, l_kv, local_path)
    return model


def _load(module: torch.nn.Module, state: dict, path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise EliteError(f"{path}: does not fit the ELITE architecture ({first})") from None
