"""DreamBench evaluation: the `dreambench` data stage and the `evaluate` stage (CLIP-I, CLIP-T, DINO-I).

Modules: dreambench (parse / fetch / build the data set), eval_models (tiny CLIP and DINO for the smoke
profile), metrics (embedding models and pairwise scores), generate (the resumable, shardable
generation plan), sweep (the lambda trade-off), report (metrics JSON, grids, markdown, FiftyOne),
stage (the `evaluate` stage end to end).
"""
