"""Per-concept optimisation baselines: Textual Inversion (one word) and Extended Textual Inversion
(one word per UNet cross-attention layer, the P+ space), on the same base model and data as ELITE."""
