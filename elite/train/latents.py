"""Optional cache of the VAE latent distributions of the stage-1 targets.

Stage-1 targets are the padded box crops, not augmented, so their latent distributions (mean and
log-variance) can be computed once and reused every epoch: the VAE encoder then never runs in the
training loop, and each draw still samples its own latent from the cached distribution (with the
draw's generator, exactly as without the cache). One safetensors file per row, in a folder named by a
fingerprint of the VAE, the resolution and the crop padding; a row's file name hashes its image path,
size, modification time and box, so an edited image or box is encoded again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from elite.io import atomic_file


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _stat(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


class LatentCache:
    def __init__(self, directory: str | Path, rows, vae_dir: Path, resolution: int, pad: int) -> None:
        vae_dir = Path(vae_dir)
        vae_key = [(vae_dir / "config.json").read_text()] + [_stat(p) for p in sorted(vae_dir.glob("*.safetensors"))]
        self.dir = Path(directory) / _digest([vae_key, resolution, pad])[:16]
        self.names = [_digest([_stat(Path(r.image)), list(r.box)])[:32] + ".safetensors" for r in rows]

    def path(self, index: int) -> Path:
        return self.dir / self.names[index]

    def load(self, index: int) -> torch.Tensor:
        return load_file(self.path(index))["moments"]

    def missing(self) -> list[int]:
        return [i for i in range(len(self.names)) if not self.path(i).is_file()]

    @torch.no_grad()
    def build(self, dataset, vae, accelerator, batch_size: int) -> int:
        """Encode the rows without a cache file; processes split the work. Returns how many were encoded."""
        todo = self.missing()
        mine = todo[accelerator.process_index :: accelerator.num_processes]
        self.dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(
            total=len(todo), desc="caching VAE latents", disable=not accelerator.is_local_main_process or not todo
        )
        for start in range(0, len(mine), batch_size):
            chunk = mine[start : start + batch_size]
            pixels = torch.stack([dataset.target_crop(i) for i in chunk]).to(accelerator.device, vae.dtype)
            dist = vae.encode(pixels).latent_dist
            moments = torch.cat([dist.mean, dist.logvar], dim=1).float().cpu()
            for i, m in zip(chunk, moments):
                with atomic_file(self.path(i)) as tmp:
                    save_file({"moments": m.contiguous()}, tmp)
            bar.update(len(chunk) * accelerator.num_processes)
        bar.close()
        accelerator.wait_for_everyone()
        return len(todo)
