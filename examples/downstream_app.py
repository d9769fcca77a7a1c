"""A downstream app: generate images with the registered ELITE model, knowing nothing of this repository.

It needs only mlflow and pandas (the model brings its own code and weights): it loads the version
that holds the `champion` alias once, with `mlflow.pyfunc.load_model`, and writes one PNG per prompt.

    python examples/downstream_app.py --image dog.jpg --mask dog_mask.png \
        --prompt "a S* on the beach" --prompt "a S* wearing sunglasses" --out-dir out/

The model is `models:/elite-<profile>@champion` (one registered model per profile: elite-toy, elite-smoke,
elite-paper). The tracking store comes from --tracking-uri, else MLFLOW_TRACKING_URI (a team server, e.g.
http://mlflow.internal:5000), else the pipeline's `mlflow.db` in the working directory (run it from the
repository root); with none of these it stops with a one-line error rather than create an empty store.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path


def b64_file(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/elite-toy@champion", help="default: %(default)s")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--image", required=True, help="concept image (JPEG/PNG)")
    parser.add_argument("--mask", help="object mask, white = object (optional)")
    parser.add_argument("--prompt", action="append", required=True, help="prompt with S*; repeat for more images")
    parser.add_argument("--out-dir", required=True, help="folder for the PNGs (image_0.png, ...)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--lam", type=float, help="local weight lambda (default: the model's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    parser.add_argument("--seed", type=int, help="random seed (default: the model's)")
    parser.add_argument("--scheduler", help="lms | dpm++ | ddim | euler | pndm (default: the model's)")
    args = parser.parse_args(argv)

    for path in filter(None, [args.image, args.mask]):
        if not Path(path).is_file():
            print(f"error: {path}: file not found", file=sys.stderr)
            return 2

    if not (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlflow.db").is_file()):
        print(
            f"error: {args.model_uri}: no MLflow store here (no ./mlflow.db) and MLFLOW_TRACKING_URI is not set; "
            "set MLFLOW_TRACKING_URI (e.g. sqlite:////path/to/elite-pipeline/mlflow.db or "
            "http://mlflow-server:5000), pass --tracking-uri, or run from the repository root",
            file=sys.stderr,
        )
        return 2

    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(args.model_uri)
    except MlflowException as exc:
        print(
            f"error: cannot load {args.model_uri} from {mlflow.get_tracking_uri()}: {exc.message.splitlines()[0]}",
            file=sys.stderr,
        )
        return 2

    image, mask = b64_file(args.image), b64_file(args.mask) if args.mask else None
    options = {
        k: v
        for k, v in {"steps": args.steps, "lam": args.lam, "guidance": args.guidance, "seed": args.seed}.items()
        if v is not None
    }
    rows = [
        {"image": image, "prompt": prompt, **({"mask": mask} if mask else {}), **options} for prompt in args.prompt
    ]
    try:
        result = model.predict(pd.DataFrame(rows), params={"scheduler": args.scheduler} if args.scheduler else None)
    except MlflowException as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, png in enumerate(result["image"]):
        path = out / f"image_{i}.png"
        path.write_bytes(base64.b64decode(png))
        print(f"wrote {path}  ({args.prompt[i]!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
