"""ELITE training: stage 1 (global mapping) and stage 2 (local mapping) on one `accelerate` loop.

- `templates`: the 27 training captions (paper supplement B.3) and the stage-2 caption prefixes.
- `augment`: box crops, CLIP-input augmentations, the stage-2 scale augmentation with its loss mask.
- `data`: manifests, datasets that turn a draw number into a sample, the per-process draw sampler.
- `latents`: optional cache of the VAE latent distributions of the stage-1 targets.
- `losses`: (masked) L_LDM and the regularisers.
- `stages`: what each stage trains and how it computes its loss (a module DDP can wrap).
- `checkpoint`: atomic checkpoints (weights, optimiser, scheduler, RNG states, loss history) and resume.
- `loop`: the training loop (mixed precision, accumulation, clipping, any number of processes), MLflow.
"""
