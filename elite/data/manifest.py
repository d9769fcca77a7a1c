"""JSON Lines manifests of the data stages (one sample per line, paths relative to the repository root).

`data/curated/{global,local}.jsonl`: {"image", "box": [x0, y0, x1, y1] pixels, "label", "image_id", "mask"}
`data/masks/local.jsonl`: the same plus "mask_source" ("release" | "sam") and "sam_iou" where both exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from elite.errors import EliteError
from elite.io import atomic_file, inside

CURATED_KEYS = ("image", "box", "label", "image_id", "mask")
IMAGE_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$")  # as elite.data.openimages checks them


def write_manifest(path: Path, rows: list[dict]) -> None:
    with atomic_file(Path(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=False) + "\n")


def read_manifest(path: Path, keys: tuple[str, ...] = CURATED_KEYS) -> list[dict]:
    """Rows of a manifest, each checked for `keys` and a sane box; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise EliteError(f"{path} not found: run the stage that writes it first (see docs/ARCHITECTURE.md)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EliteError(f"{path}:{n}: not JSON ({exc.msg}); rerun the stage that writes it") from None
            missing = [k for k in keys if not isinstance(row, dict) or k not in row]
            if missing:
                raise EliteError(f"{path}:{n}: missing {', '.join(missing)}; rerun the stage that writes it")
            # image_id names the mask file the mask stage writes; image and mask are read: neither may leave
            # the repository
            if "image_id" in keys and (not isinstance(row["image_id"], str) or not IMAGE_ID.match(row["image_id"])):
                raise EliteError(
                    f"{path}:{n}: image_id {row['image_id']!r} is not a plain Open Images ID; "
                    f"rerun the stage that writes it"
                )
            for key in ("image", "mask"):
                value = row.get(key)
                if (
                    key in keys
                    and (key == "image" or value is not None)
                    and (not isinstance(value, str) or not inside(value, "."))
                ):
                    raise EliteError(
                        f"{path}:{n}: {key} {value!r} is outside the repository; paths in manifests are "
                        f"relative to the repository root"
                    )
            box = row["box"]
            if not (
                isinstance(box, list)
                and len(box) == 4
                and all(isinstance(v, int) for v in box)
                and box[0] < box[2]
                and box[1] < box[3]
            ):
                raise EliteError(f"{path}:{n}: box must be [x0, y0, x1, y1] integer pixels with x0 < x1, y0 < y1")
            rows.append(row)
    return rows
