"""save/load and the authors' checkpoint format."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from elite.errors import EliteError
from elite.models.elite_model import EliteModel
from elite.models.official import convert_official


@pytest.fixture(scope="module")
def trained_like(smoke_models):
    """The smoke ELITE weights with every parameter perturbed, so nothing equals its init."""
    model = EliteModel.from_pretrained(smoke_models / "elite")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _feats(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 257, model.config.vision_dim, generator=g) for _ in model.config.feature_layers]


def authors_state_dict(model: EliteModel, branch: str) -> dict:
    """Write our weights in the authors' key scheme (mapping_i.j, mapping_patch_i.j, <path>_to_k.weight)."""
    mapper, kv = (model.global_mapper, model.global_kv) if branch == "global" else (model.local_mapper, model.local_kv)
    state = {}
    for i, (c, p) in enumerate(zip(mapper.cls_mlps, mapper.patch_mlps)):
        for j in (0, 1, 3, 4, 6):
            for t in ("weight", "bias"):
                state[f"mapping_{i}.{j}.{t}"] = getattr(c[j], t).detach().clone()
                state[f"mapping_patch_{i}.{j}.{t}"] = getattr(p[j], t).detach().clone()
    for key, pair in kv.layers.items():
        state[f"{key}_to_k.weight"] = pair["to_k"].weight.detach().clone()
        state[f"{key}_to_v.weight"] = pair["to_v"].weight.detach().clone()
    return state


def authors_global_words(state: dict, feats: list[torch.Tensor]) -> torch.Tensor:
    """The authors' global mapping computed functionally from their raw state dict."""

    def mlp(prefix, x):
        for j in (0, 3):
            x = F.linear(x, state[f"{prefix}.{j}.weight"], state[f"{prefix}.{j}.bias"])
            x = F.layer_norm(x, x.shape[-1:], state[f"{prefix}.{j + 1}.weight"], state[f"{prefix}.{j + 1}.bias"])
            x = F.leaky_relu(x)
        return F.linear(x, state[f"{prefix}.6.weight"], state[f"{prefix}.6.bias"])

    return torch.stack(
        [mlp(f"mapping_{i}", h[:, 0]) + mlp(f"mapping_patch_{i}", h[:, 1:]).mean(1) for i, h in enumerate(feats)], 1
    )


def test_save_load_roundtrip_gives_identical_outputs(trained_like, tmp_path):
    trained_like.save_pretrained(tmp_path / "w")
    loaded = EliteModel.from_pretrained(tmp_path / "w")
    feats = _feats(trained_like)
    mask = torch.ones(1, 1, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.global_mapper(feats), trained_like.global_mapper(feats))
        assert torch.equal(loaded.local_mapper(feats, mask), trained_like.local_mapper(feats, mask))
    for (k1, v1), (k2, v2) in zip(trained_like.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert not list(tmp_path.glob(".w.*")), "no temporary folder left behind"


def test_import_official_roundtrip_and_authors_math(trained_like, tmp_path):
    for branch in ("global", "local"):
        torch.save(authors_state_dict(trained_like, branch), tmp_path / f"{branch}_mapper.pt")
    model = convert_official(
        tmp_path / "global_mapper.pt", tmp_path / "local_mapper.pt", "some/encoder", vision_depth=6
    )
    for (k1, v1), (k2, v2) in zip(sorted(trained_like.state_dict().items()), sorted(model.state_dict().items())):
        assert k1 == k2 and torch.equal(v1, v2)
    feats = _feats(model, seed=5)
    with torch.no_grad():
        ours = model.global_mapper(feats)
        theirs = authors_global_words(torch.load(tmp_path / "global_mapper.pt", weights_only=True), feats)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_import_official_cli(trained_like, tmp_path, repo_root):
    torch.save(authors_state_dict(trained_like, "global"), tmp_path / "g.pt")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "elite.cli",
            "import-official",
            "--global",
            str(tmp_path / "g.pt"),
            "--out",
            str(tmp_path / "out"),
            "--image-encoder",
            "x",
            "--vision-depth",
            "6",
        ],
        capture_output=True,
        text=True,
        cwd=repo_root,
    )
    assert run.returncode == 0, run.stderr
    loaded = EliteModel.from_pretrained(tmp_path / "out")
    assert loaded.local_mapper is None and loaded.config.has_local is False
    assert torch.equal(
        loaded.global_kv.layers[next(iter(loaded.global_kv.layers))]["to_k"].weight,
        trained_like.global_kv.layers[next(iter(loaded.global_kv.layers))]["to_k"].weight,
    )


def test_bad_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EliteError, match="junk.pt"):
        convert_official(tmp_path / "junk.pt", None, "x")
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(EliteError, match="unexpected key"):
        convert_official(tmp_path / "other.pt", None, "x")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"mapping_0.0.weight": Evil()}, tmp_path / "evil.pt", _use_new_zipfile_serialization=True)
    with pytest.raises(EliteError, match="weights-only"):
        convert_official(tmp_path / "evil.pt", None, "x")
    with pytest.raises(EliteError, match="no ELITE weights"):
        EliteModel.from_pretrained(tmp_path / "nowhere")
