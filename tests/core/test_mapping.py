import torch

from elite.models.features import scaled_layers
from elite.models.mapping import GlobalMapper, LocalMapper, patch_mask


def _feats(batch=2, patches=16, dim=12, layers=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1 + patches, dim, generator=g) for _ in range(layers)]


def test_global_mapper_shape_and_word_order():
    mapper = GlobalMapper(vision_dim=12, text_dim=7, num_layers=5)
    words = mapper(_feats())
    assert words.shape == (2, 5, 7)
    # word i depends only on layer i
    feats = _feats()
    feats[3] = feats[3] + 1.0
    changed = (mapper(feats) - words).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [False, False, False, True, False]


def test_global_mapper_applies_mlp_before_the_patch_mean():
    torch.manual_seed(0)
    mapper = GlobalMapper(vision_dim=12, text_dim=7, num_layers=1)
    (h,) = feats = _feats(layers=1)
    expected = mapper.cls_mlps[0](h[:, 0]) + torch.stack([mapper.patch_mlps[0](h[:, 1 + p]) for p in range(16)]).mean(
        0
    )
    mean_first = mapper.cls_mlps[0](h[:, 0]) + mapper.patch_mlps[0](h[:, 1:].mean(1))
    out = mapper(feats)[:, 0]
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, mean_first, atol=1e-4)


def test_local_mapper_shape_average_and_mask():
    torch.manual_seed(0)
    mapper = LocalMapper(vision_dim=12, text_dim=7, num_layers=5)
    feats = _feats(patches=16)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :4, :] = 1  # top half of a 4x4 patch grid
    out = mapper(feats, mask)
    assert out.shape == (2, 16, 7)
    per_layer = [c(h[:, :1]) + p(h[:, 1:]) for h, c, p in zip(feats, mapper.cls_mlps, mapper.patch_mlps)]
    full = torch.stack(per_layer).mean(0)
    torch.testing.assert_close(out[:, :8], full[:, :8])
    assert torch.count_nonzero(out[:, 8:]) == 0


def test_patch_mask_nearest_grid():
    mask = torch.zeros(1, 1, 224, 224)
    mask[..., :112, :] = 1
    grid = patch_mask(mask, 256)
    assert grid.shape == (1, 256, 1)
    assert grid[0, :128].eq(1).all() and grid[0, 128:].eq(0).all()


def test_feature_layers_scale_to_smaller_towers():
    assert scaled_layers([24, 4, 8, 12, 16], 24, 24) == [24, 4, 8, 12, 16]
    assert scaled_layers([24, 4, 8, 12, 16], 24, 6) == [6, 1, 2, 3, 4]
    assert scaled_layers([24, 4, 8, 12, 16], 24, 12) == [12, 2, 4, 6, 8]
