"""The paper profile trains as the authors trained (github csyxwei/ELITE): each rule of theirs is re-computed
here from their code's formula on fixed inputs (written out in the test, not through our code path) and
compared with ours: the learning rate, the stage-2 scale augmentation and its loss mask, the masked loss,
the CLIP preprocessing, the stage-1 CLIP augmentation and the stage-2 tight box."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from train_helpers import REPO

from elite.config import load_params
from elite.images import mask_box
from elite.pixels import clip_inputs, masked_clip_pixels
from elite.train.augment import global_clip_augment, global_clip_pipeline, local_clip_augment, scale_augment
from elite.train.losses import ldm_loss

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def paper():
    return load_params(REPO / "params.yaml", profile="paper")


# --- 1. learning rate --------------------------------------------------------------------------------------
def test_paper_learning_rate_is_the_authors_at_their_launch_settings(paper):
    # train_global.sh / train_local.sh: 4 GPUs, --train_batch_size 4 / 2, --gradient_accumulation_steps 4,
    # --learning_rate 1e-06 / 1e-5 --scale_lr; train_*.py: lr * accumulation * batch * num_processes
    authors_global = 1e-06 * 4 * 4 * 4
    authors_local = 1e-5 * 4 * 2 * 4
    assert authors_global == pytest.approx(6.4e-5) and authors_local == pytest.approx(3.2e-4)
    g, loc = paper.train_global, paper.train_local
    assert g.scale_lr and loc.scale_lr
    assert g.effective_learning_rate(4) == pytest.approx(authors_global, rel=1e-12)
    assert loc.effective_learning_rate(4) == pytest.approx(authors_local, rel=1e-12)
    assert (g.effective_batch(4), loc.effective_batch(4)) == (64, 32)
    # on one GPU the per-sample rate stays theirs
    assert g.effective_learning_rate(1) == pytest.approx(1e-6 * 16) and loc.effective_learning_rate(
        1
    ) == pytest.approx(1e-5 * 8)


# --- 2. stage-2 scale augmentation -------------------------------------------------------------------------
def _authors_shares(size: int) -> dict:
    """Exact shares of datasets.py custom_aug: randint(0, 3) < 2 -> randint(size // 3, size + 1), else
    randint(int(1.2 size), int(1.4 size)); odd +1; < 0.6 size pasted, > size enlarged, else the full frame."""
    shares = {"paste": 0.0, "full": 0.0, "enlarge": 0.0}
    for weight, sides in ((2 / 3, range(size // 3, size + 1)), (1 / 3, range(int(1.2 * size), int(1.4 * size)))):
        for s in sides:
            s += s % 2
            kind = "paste" if s < 0.6 * size else "enlarge" if s > size else "full"
            shares[kind] += weight / len(sides)
    return shares


def _authors_mask(cy: int, cx: int, side: int, size: int) -> np.ndarray:
    mask = np.zeros((size // 8, size // 8))
    mask[
        (cy - side // 2) // 8 + 1 : (cy + side // 2) // 8 - 1, (cx - side // 2) // 8 + 1 : (cx + side // 2) // 8 - 1
    ] = 1.0
    return mask


def test_scale_augmentation_shares_masks_and_canvas(paper):
    cfg = paper.train_local
    assert _authors_shares(512)["full"] == pytest.approx(0.4004, abs=1e-4)  # the ~40% full-frame samples at 512
    size, draws = 128, 3000
    expected = _authors_shares(size)
    crop = Image.new("RGB", (30, 20), (255, 255, 255))
    rng_crop = np.random.default_rng(7)
    textured = Image.fromarray(rng_crop.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    counts = {"paste": 0, "full": 0, "enlarge": 0}
    for draw in range(draws):
        target, mask, prefix = scale_augment(crop, size, 8, np.random.default_rng([3, draw]), cfg)
        assert target.shape == (3, size, size) and mask.shape == (1, size // 8, size // 8)
        inside = (target[0] != 0).numpy()  # the white crop is +1; the canvas is exactly 0 (mid-grey)
        if prefix in cfg.far_prefixes:
            counts["paste"] += 1
            ys, xs = np.nonzero(inside)
            side = ys.max() - ys.min() + 1
            assert xs.max() - xs.min() + 1 == side and side % 2 == 0 and size // 3 <= side < 0.6 * size
            assert (target[:, ~torch.from_numpy(inside)] == 0).all() and (
                target[:, torch.from_numpy(inside)] == 1
            ).all()
            cy, cx = ys.min() + side // 2, xs.min() + side // 2
            assert np.array_equal(mask[0].numpy(), _authors_mask(cy, cx, side, size))
        elif prefix in cfg.near_prefixes:
            counts["enlarge"] += 1
            assert mask.all() and inside.all()
        else:
            assert prefix is None
            counts["full"] += 1
            assert mask.all() and inside.all()
    for kind, share in expected.items():
        assert counts[kind] / draws == pytest.approx(share, abs=0.025), (kind, counts)
    # a full-frame sample is the crop resized to the frame (PIL bicubic, /127.5 - 1), as custom_aug's else branch
    for draw in range(200):
        target, mask, prefix = scale_augment(textured, size, 8, np.random.default_rng([3, draw]), cfg)
        if prefix is None:
            authors = np.asarray(textured.resize((size, size), Image.BICUBIC)).astype(np.float32) / 127.5 - 1.0
            np.testing.assert_allclose(target.permute(1, 2, 0).numpy(), authors, atol=1e-6)
            break
    else:
        pytest.fail("no full-frame sample in 200 draws")


# --- 3. stage-2 masked loss ------------------------------------------------------------------------------
def test_masked_loss_is_the_authors_normalisation():
    g = torch.Generator().manual_seed(0)
    pred, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 1:5, 2:7] = 1
    mask[1] = 1
    # train_local.py: mse(reduction="none") * mask_values summed over dims 1, 2, 3 / mask_values summed, mean
    per_sample = []
    for b in range(2):
        num = sum(
            float((pred[b, c, y, x] - noise[b, c, y, x]) ** 2) * float(mask[b, 0, y, x])
            for c in range(4)
            for y in range(8)
            for x in range(8)
        )
        per_sample.append(num / float(mask[b].sum()))
    assert ldm_loss(pred, noise, mask).item() == pytest.approx(np.mean(per_sample), rel=1e-5)
    # an all-ones mask is 4 (latent channels) x the per-element mean
    assert ldm_loss(pred, noise, torch.ones(2, 1, 8, 8)).item() == pytest.approx(
        4 * F.mse_loss(pred, noise).item(), rel=1e-5
    )
    # an empty mask (only at tiny resolutions; theirs would give 0 / 0) adds 0 instead of NaN
    empty = mask.clone()
    empty[0] = 0
    assert ldm_loss(pred, noise, empty).item() == pytest.approx(per_sample_all_ones(pred, noise)[1] / 2, rel=1e-5)
    # stage 1 stays the plain mean (train_global.py)
    assert ldm_loss(pred, noise).item() == pytest.approx(F.mse_loss(pred, noise).item(), rel=1e-6)


def per_sample_all_ones(pred, noise) -> list[float]:
    return [float(((pred[b] - noise[b]) ** 2).sum()) / 64 for b in range(pred.shape[0])]


# --- 4. CLIP preprocessing ------------------------------------------------------------------------------
def _photo(width: int, height: int) -> Image.Image:
    """A large image with detail finer than the 224 grid (fine stripes and noise), where sampling aliases."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    arr = np.stack(
        [(np.sin(xx * 1.7) > 0) * 200, ((yy // 3) % 2) * 180 + 40, rng.integers(0, 256, (height, width))], -1
    )
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def test_large_photo_preprocessing_is_pil_antialiased_bicubic():
    photo = _photo(2400, 1600)  # 3.8 MP, a DreamBench-sized photo
    full, obj, m = clip_inputs(photo, Image.new("L", photo.size, 255), 224, CLIP_MEAN, CLIP_STD)
    pil = np.asarray(photo.resize((224, 224), Image.BICUBIC), np.float32) / 255.0
    mean, std = np.array(CLIP_MEAN, np.float32), np.array(CLIP_STD, np.float32)
    ours = full[0].permute(1, 2, 0).numpy() * std + mean  # back to [0, 1]
    assert np.abs(ours - pil).max() <= 1 / 255 + 1e-6
    assert torch.equal(full, obj) and m.all()
    # the plain bicubic interpolation it replaces aliases on such a photo
    rgb = torch.from_numpy(np.asarray(photo, np.float32) / 255.0).permute(2, 0, 1)[None]
    aliased = F.interpolate(rgb, size=(224, 224), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(aliased - pil).max() > 20 / 255


def test_object_is_cut_out_at_full_resolution():
    photo = _photo(900, 600)
    arr = np.zeros((600, 900), np.uint8)
    arr[100:500, 200:700] = 255
    arr[:, ::4] = 0  # thin gaps that a 224 px mask cannot show
    mask = Image.fromarray(arr)
    full, obj, m = masked_clip_pixels(photo, mask, 224)
    cut = np.asarray(photo) * (arr[..., None] > 0)  # the authors: image * mask at the image's resolution, then resize
    expected = np.asarray(Image.fromarray(cut.astype(np.uint8)).resize((224, 224), Image.BICUBIC), np.float32) / 255.0
    assert np.abs(obj.permute(1, 2, 0).numpy() - expected).max() <= 1 / 255 + 1e-6
    assert np.array_equal(m[0].numpy() > 0, np.asarray(mask.resize((224, 224), Image.NEAREST)) >= 128)


# --- 5. stage-1 CLIP augmentation (albumentations 1.3.0's effect) ----------------------------------------
def _authors_affine(offsets: np.ndarray, h: int, w: int) -> np.ndarray:
    """albumentations 1.3.0 elastic_transform's affine: points centre + (s, s), (s, -s), -(s, s) with
    centre (h, w) // 2 and s = min(h, w) // 3, each moved by the drawn offsets."""
    centre = np.array((h, w), np.float32) // 2
    s = min(h, w) // 3
    pts1 = np.array([centre + s, [centre[0] + s, centre[1] - s], centre - s], np.float32)
    return cv2.getAffineTransform(pts1, pts1 + offsets.astype(np.float32))


def test_stage1_elastic_is_the_control_point_affine_with_reflect_101(paper):
    cfg = paper.train_global.model_copy(
        update={
            "clip_flip_p": 0.0,
            "clip_rotate_p": 0.0,
            "clip_blur_p": 0.0,
            "clip_elastic_p": 1.0,
            "clip_elastic_alpha": 0.0,
        }
    )
    pipeline = global_clip_pipeline(cfg)
    x = torch.from_numpy(np.asarray(_photo(224, 224), np.float32) / 255.0).permute(2, 0, 1).contiguous()
    image = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
    for draw in range(3):
        out, applied = global_clip_augment(x, np.random.default_rng([9, draw]), pipeline)
        params = dict(applied)["ControlPointAffine"]
        offsets = params["offsets"]
        assert np.abs(offsets).max() <= 50 and np.abs(offsets).max() > 5
        authors = cv2.warpAffine(
            image,
            _authors_affine(offsets, 224, 224),
            (224, 224),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )
        np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), np.clip(authors, 0, 1), atol=1e-5)


def test_stage1_augmentation_probabilities_ranges_and_borders(paper):
    cfg = paper.train_global
    assert (cfg.clip_flip_p, cfg.clip_rotate_p, cfg.clip_blur_p, cfg.clip_elastic_p) == (0.5, 0.5, 0.3, 0.3)
    assert (
        cfg.clip_rotate_deg,
        cfg.clip_blur_kernel,
        cfg.clip_elastic_alpha,
        cfg.clip_elastic_sigma,
        cfg.clip_elastic_affine,
    ) == (20.0, [3, 7], 1.0, 50.0, 50.0)  # albumentations 1.3.0 defaults
    pipeline = global_clip_pipeline(cfg)
    x = torch.ones(3, 224, 224)
    seen: dict[str, int] = {}
    draws = 300
    for draw in range(draws):
        out, applied = global_clip_augment(x, np.random.default_rng([4, draw]), pipeline)
        assert out.min() > 0.999  # reflect-101 borders: rotation and affine never bring in black corners
        for name, params in applied:
            seen[name] = seen.get(name, 0) + 1
            if name == "Blur":
                assert params["kernel"] in (3, 5, 7)
        names = [n for n, _ in applied]
        assert ("ControlPointAffine" in names) == ("ElasticTransform" in names)  # one ElasticTransform event
    for name, p in (("HorizontalFlip", 0.5), ("Rotate", 0.5), ("Blur", 0.3), ("ControlPointAffine", 0.3)):
        assert seen.get(name, 0) / draws == pytest.approx(p, abs=0.09), (name, seen)
    # a draw is a pure function of its generator
    a, _ = global_clip_augment(
        torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(1)), np.random.default_rng(5), pipeline
    )
    b, _ = global_clip_augment(
        torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(1)), np.random.default_rng(5), pipeline
    )
    assert torch.equal(a, b)


# --- stage-2 object augmentation (the authors' aug_cv2) ---------------------------------------------------
def _authors_aug_cv2(img: np.ndarray, seg: np.ndarray, applied: dict) -> tuple[np.ndarray, np.ndarray]:
    """datasets.py aug_cv2 with the draws it made: resize (cubic / nearest) and crop rows start_x, columns
    start_y; rotate about (112, 112); translate; cubic for the image, nearest for the mask, black outside."""
    if "crop" in applied:
        n, start_x, start_y = applied["crop"]
        img = cv2.resize(img, (n, n), interpolation=cv2.INTER_CUBIC)[start_x : start_x + 224, start_y : start_y + 224]
        seg = cv2.resize(seg, (n, n), interpolation=cv2.INTER_NEAREST)[
            start_x : start_x + 224, start_y : start_y + 224
        ]
    if "rotate" in applied:
        M = cv2.getRotationMatrix2D((112, 112), applied["rotate"], 1)
        img = cv2.warpAffine(img, M, (224, 224), flags=cv2.INTER_CUBIC)
        seg = cv2.warpAffine(seg, M, (224, 224), flags=cv2.INTER_NEAREST)
    if "translate" in applied:
        H = np.float32([[1, 0, applied["translate"][0]], [0, 1, applied["translate"][1]]])
        img = cv2.warpAffine(img, H, (224, 224), flags=cv2.INTER_CUBIC)
        seg = cv2.warpAffine(seg, H, (224, 224), flags=cv2.INTER_NEAREST)
    return img, seg


def test_stage2_object_augmentation_is_the_authors_aug_cv2(paper):
    cfg = paper.train_local
    photo = np.asarray(_photo(224, 224), np.float32) / 255.0
    seg = np.zeros((224, 224), np.float32)
    seg[40:190, 60:170] = 1.0
    x = torch.from_numpy(photo * seg[..., None]).permute(2, 0, 1).contiguous()
    m = torch.from_numpy(seg)[None]
    seen = {"crop": 0, "rotate": 0, "translate": 0}
    angles, sizes, shifts = set(), set(), set()
    draws = 300
    for draw in range(draws):
        obj, mask, applied = local_clip_augment(x, m, np.random.default_rng([6, draw]), cfg)
        for key in applied:
            seen[key] += 1
        angles.add(applied.get("rotate", 0))
        sizes.add(applied.get("crop", (224,))[0])
        shifts.update(applied.get("translate", ()))
        if draw < 20:  # the warps themselves, re-computed as their code does
            img, moved = _authors_aug_cv2(photo * seg[..., None], seg, applied)
            assert np.array_equal(mask[0].numpy(), moved)
            np.testing.assert_allclose(obj.permute(1, 2, 0).numpy(), np.clip(img, 0, 1) * moved[..., None], atol=1e-5)
    for key, count in seen.items():  # random.choice([0, 1]) == 0 for each step
        assert count / draws == pytest.approx(0.5, abs=0.1), (key, seen)
    # random.randint(224, 256), randint(-30, 30), randint(-60, 60): integers, both ends included
    assert min(sizes) >= 224 and max(sizes) <= 256 and {-30, 30} & angles and min(angles) >= -30 and max(angles) <= 30
    assert all(isinstance(v, int) for v in angles | sizes | shifts) and min(shifts) >= -60 and max(shifts) <= 60


# --- 6. stage-2 tight box -------------------------------------------------------------------------------
def _authors_box(seg: np.ndarray) -> tuple[int, int, int, int]:
    """data_scripts/cal_bbox_by_seg.py: extreme points of the external contours, odd spans grown by one."""
    contours = cv2.findContours(seg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = contours[0] if len(contours) == 2 else contours[1]
    cntr = np.vstack(contours)
    hs, he = int(cntr[:, :, 1].min()), int(cntr[:, :, 1].max())
    ws, we = int(cntr[:, :, 0].min()), int(cntr[:, :, 0].max())
    h, w = seg.shape
    if (he - hs) % 2 == 1 and he + 1 <= h:
        he += 1
    if (he - hs) % 2 == 1 and hs - 1 >= 0:
        hs -= 1
    if (we - ws) % 2 == 1 and we + 1 <= w:
        we += 1
    if (we - ws) % 2 == 1 and ws - 1 >= 0:
        ws -= 1
    return ws, hs, we, he


def test_stage2_box_is_the_masks_tight_box():
    rng = np.random.default_rng(2)
    for _ in range(10):
        seg = np.zeros((90, 120), np.uint8)
        for _ in range(int(rng.integers(1, 4))):  # one or more blobs
            y0, x0 = int(rng.integers(0, 80)), int(rng.integers(0, 110))
            seg[y0 : y0 + int(rng.integers(2, 40)), x0 : x0 + int(rng.integers(2, 40))] = 255
        assert mask_box(Image.fromarray(seg)) == _authors_box(seg)
