"""The learning tests' four runs over several training seeds (the suite runs params' seed only):
`python tests/toy/learning_seeds.py 0 1 2` writes tests/toy/learning_seeds.json (`--out FILE`: another file, e.g.
one per process when seeds run side by side), one block per seed with the
five retrieval scores of test_toy_learning.py's training runs and the two differences its claims rest on (trained minus
detached, for stage 1 and stage 2). About 8 CPU-minutes a seed on one thread."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from test_toy_learning import (
    FIXTURE,
    MARGIN,
    GlobalDetached,
    LocalDetached,
    make_world,
    retrieval,
    run,
)
from toy_helpers import toy_params

from elite.train.stages import GlobalStage, LocalStage

OUT = Path(__file__).with_name("learning_seeds.json")


def measure(toy, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="elite-learning-") as tmp:
        world = make_world(toy, Path(tmp))
        scores = {"elite lambda 0.0": retrieval(toy, FIXTURE / "elite", 0.0, keep=False)}
        for name, cls in (("global", GlobalStage), ("global-detached", GlobalDetached)):
            scores[f"{name} lambda 0.0"] = retrieval(
                toy, run(cls, "train_global", toy, world, FIXTURE / "elite", name, seed), 0.0, False
            )
        stage1 = world / "global"
        for name, cls in (("local", LocalStage), ("local-detached", LocalDetached)):
            scores[f"{name} lambda 0.8"] = retrieval(
                toy, run(cls, "train_local", toy, world, stage1, name, seed), 0.8, False
            )
    return {
        "scores": {k: round(v, 4) for k, v in scores.items()},
        "stage1 trained - detached": round(scores["global lambda 0.0"] - scores["global-detached lambda 0.0"], 4),
        "stage2 trained - detached": round(scores["local lambda 0.8"] - scores["local-detached lambda 0.8"], 4),
    }


def main(seeds: list[int], out: Path = OUT) -> None:
    torch.set_num_threads(1)
    toy = toy_params()
    found = json.loads(out.read_text()) if out.is_file() else {"margin": MARGIN, "seeds": {}}
    for seed in seeds:
        found["seeds"][str(seed)] = measure(toy, seed)
        out.write_text(json.dumps(found, indent=2) + "\n")
        print(seed, json.dumps(found["seeds"][str(seed)]), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args.pop(args.index("--out") + 1)) if "--out" in args else OUT
    main([int(a) for a in args if a != "--out"] or [0, 1, 2], out)
