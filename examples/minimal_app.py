"""The smallest downstream app: the champion ELITE model from a tracking server, one image, one prompt.

    MLFLOW_TRACKING_URI=http://mlflow.internal:5000 python examples/minimal_app.py dog.jpg dog_mask.png \
        "a S* on the beach" beach.png [models:/elite-paper@champion]

It needs mlflow and pandas only: the registered model carries its code and weights. examples/downstream_app.py
is the same with options (several prompts, steps, seed, lambda, scheduler) and one-line errors.
"""

import base64
import sys
from pathlib import Path

import mlflow
import pandas as pd


def b64(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


if __name__ == "__main__":
    image, mask, prompt, out = sys.argv[1:5]
    uri = sys.argv[5] if len(sys.argv) > 5 else "models:/elite-toy@champion"
    model = mlflow.pyfunc.load_model(uri)  # the tracking server comes from MLFLOW_TRACKING_URI
    result = model.predict(pd.DataFrame([{"image": b64(image), "mask": b64(mask), "prompt": prompt}]))
    Path(out).write_bytes(base64.b64decode(result["image"][0]))
    print(f"wrote {out}")
