"""Evaluation probes of the toy world: small CNN classifiers trained on the renderer's labels.

The identity probe predicts the (first) object's colour, pattern and class; the scene probe the scene. They
are trained on renders only (with light blur and noise so slightly soft generated images are read the
same way) and judged on fresh renders; they never see a generated image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from elite.toy.bank import COLOUR_NAMES, Bank
from elite.toy.fit import fit
from elite.toy.world import CLASSES, PATTERNS, SCENES

HEADS = {"colour": COLOUR_NAMES, "pattern": list(PATTERNS), "cls": list(CLASSES), "scene": list(SCENES)}


class Probe(nn.Module):
    def __init__(self, heads: list[str], width: int = 32):
        super().__init__()
        self.heads = list(heads)
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.out = nn.ModuleDict({h: nn.Linear(4 * w, len(HEADS[h])) for h in self.heads if h != "colour"})
        if "colour" in self.heads:  # per-pixel evidence, pooled by a soft maximum: blind to the pattern's layout
            self.colour = nn.Sequential(
                nn.Conv2d(3, w, 1), nn.GELU(), nn.Conv2d(w, w, 1), nn.GELU(), nn.Conv2d(w, len(HEADS["colour"]), 1)
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        if self.out:
            z = self.body(x)
            out = {h: self.out[h](z) for h in self.out}
        if "colour" in self.heads:
            evidence = self.colour(x).flatten(2)
            out["colour"] = torch.logsumexp(evidence, -1) - math.log(evidence.shape[-1])
        return {h: out[h] for h in self.heads}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
        self.eval()
        outs = [self(x[i : i + batch]) for i in range(0, len(x), batch)]
        return {h: torch.cat([o[h] for o in outs]).argmax(-1) for h in self.heads}


PERMUTATIONS = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def permute_colours(x: torch.Tensor, gen: torch.Generator, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap the colour channels of a share `p` of the images (a random non-identity order each); returns the
    images and which were permuted. The heads that must not read colour (pattern, class) learn them on colours the
    bank never pairs with them; the colour head skips those images."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < p
    order = PERMUTATIONS[1:][torch.randint(5, (b,), generator=gen)]
    order[~flip] = PERMUTATIONS[0]
    return torch.gather(x, 1, order[:, :, None, None].expand_as(x)), flip


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    blur = torch.rand(b, 1, 1, 1, generator=gen) < 0.5
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(blur, 0.5 * x + 0.5 * soft, x)
    return x + torch.randn(x.shape, generator=gen) * 0.05 * torch.rand(b, 1, 1, 1, generator=gen)


COLOUR_FREE = ("pattern", "cls")  # heads trained on colour-permuted images too


def train_probe(
    bank: Bank,
    heads: list[str],
    steps: int,
    seed: int,
    batch: int = 64,
    lr: float = 2e-3,
    permute_p: float = 0.5,
    progress=None,
) -> Probe:
    """`permute_p`: the share of images whose colour channels are swapped for the colour-free heads (the bank
    holds no held-out identity, so without it the pattern head only ever sees each pattern on the seen colours)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = Probe(heads)
    labels = {h: bank.labels(h) for h in heads}
    permute = permute_p if any(h in COLOUR_FREE for h in heads) else 0.0

    def step_loss() -> torch.Tensor:
        idx = torch.randint(len(bank), (batch,), generator=gen)
        x, permuted = permute_colours(bank.images[idx], gen, permute)
        out = probe(_augment(x, gen))
        keep = ~permuted
        return sum(
            F.cross_entropy(out[h], labels[h][idx])
            if h in COLOUR_FREE or h == "scene"
            else F.cross_entropy(out[h][keep], labels[h][idx][keep])
            for h in heads
        )

    probe.train()
    fit(probe.parameters(), steps, step_loss, lr, weight_decay=1e-4, progress=progress)
    return probe.eval()


def accuracy(probe: Probe, bank: Bank) -> dict[str, float]:
    pred = probe.predict(bank.images)
    return {h: float((pred[h] == bank.labels(h)).float().mean()) for h in probe.heads}


def save_probes(out: Path, **probes: Probe) -> None:
    """`<name>.safetensors` + `probes.json` ({name: heads}) per probe."""
    for name, probe in probes.items():
        save_file(probe.state_dict(), str(out / f"{name}.safetensors"))
    (out / "probes.json").write_text(json.dumps({n: p.heads for n, p in probes.items()}, indent=2) + "\n")


def load_probes(folder: Path) -> dict[str, Probe]:
    heads = json.loads((Path(folder) / "probes.json").read_text())
    out = {}
    for name, names in heads.items():
        probe = Probe(names)
        probe.load_state_dict(load_file(str(Path(folder) / f"{name}.safetensors")))
        out[name] = probe.eval()
    return out
