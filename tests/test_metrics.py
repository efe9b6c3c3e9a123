"""PSNR / SSIM / relative L2 against closed forms and an independent brute-force SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnsearch.metrics import compare, psnr, rel_l2, ssim


def naive_ssim(x: np.ndarray, y: np.ndarray, data_range: float, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. 2004 straight from the definition: loops over frames, channels, window positions."""
    t = np.arange(size) - (size - 1) / 2
    g1 = np.exp(-t**2 / (2 * sigma**2))
    win = np.outer(g1, g1)
    win /= win.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for fx, fy in zip(x, y):                       # frames [C, H, W]
        per_frame = []
        for cx, cy in zip(fx, fy):
            for i in range(cx.shape[0] - size + 1):
                for j in range(cx.shape[1] - size + 1):
                    px, py = cx[i:i + size, j:j + size], cy[i:i + size, j:j + size]
                    mx, my = (win * px).sum(), (win * py).sum()
                    vx = (win * (px - mx) ** 2).sum()
                    vy = (win * (py - my) ** 2).sum()
                    cxy = (win * (px - mx) * (py - my)).sum()
                    per_frame.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        vals.append(np.mean(per_frame))
    return float(np.mean(vals))


@pytest.fixture
def video():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 2, 16, 18, generator=g, dtype=torch.float64) * 2 - 1  # [B, C, F, H, W] in [-1, 1]


def test_identical_inputs(video):
    assert psnr(video, video, 2.0) == math.inf
    assert ssim(video, video, 2.0) == pytest.approx(1.0, abs=1e-12)
    assert rel_l2(video, video) == 0.0
    assert compare(video, video, 2.0) == {"psnr": math.inf, "ssim": pytest.approx(1.0, abs=1e-12),
                                          "rel_l2": 0.0, "data_range": 2.0}


def test_psnr_of_a_known_noise_level(video):
    sigma = 0.05
    signs = torch.randint(0, 2, video.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noisy = video + sigma * signs.double()                               # MSE = σ² exactly
    assert psnr(noisy, video, 2.0) == pytest.approx(20 * math.log10(2.0 / sigma), abs=1e-9)
    assert psnr(noisy, video, 255.0) == pytest.approx(20 * math.log10(255.0 / sigma), abs=1e-9)
    r = float(video.max() - video.min())                          # default range: the reference's
    assert psnr(noisy, video) == pytest.approx(20 * math.log10(r / sigma), abs=1e-9)


def test_rel_l2_of_a_known_perturbation(video):
    assert rel_l2(video * 1.03, video) == pytest.approx(0.03, rel=1e-9)
    assert rel_l2(torch.zeros(3), torch.zeros(3)) == 0.0


def test_ssim_of_a_constant_shift_on_a_constant_image():
    a, c, r = 0.3, 0.2, 2.0
    x = torch.full((1, 2, 3, 13, 12), a)
    c1 = (0.01 * r) ** 2                                         # no variance: only the luminance term
    expected = (2 * a * (a + c) + c1) / (a * a + (a + c) ** 2 + c1)
    assert ssim(x + c, x, r) == pytest.approx(expected, rel=1e-6)
    assert ssim(x + c, x, r) < 1.0


def test_ssim_matches_the_brute_force_definition(video):
    g = torch.Generator().manual_seed(2)
    cases = {
        "noise": video + 0.2 * torch.randn(video.shape, generator=g, dtype=torch.float64),
        "shift": video + 0.3,
        "contrast": 0.5 * video,
        "inverted": -video,
    }
    ref_frames = video[0].permute(1, 0, 2, 3).numpy().astype(np.float64)  # [F, C, H, W]
    for name, x in cases.items():
        want = naive_ssim(x[0].permute(1, 0, 2, 3).numpy().astype(np.float64), ref_frames, 2.0)
        got = ssim(x, video, 2.0)
        assert got == pytest.approx(want, abs=1e-10), name
    assert all(0 < ssim(cases[k], video, 2.0) < 1 for k in ("noise", "contrast"))


def test_ssim_is_symmetric_and_layouts_agree(video):
    x = video + 0.1 * torch.randn(video.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert ssim(x, video, 2.0) == pytest.approx(ssim(video, x, 2.0), abs=1e-12)
    per = ssim(x, video, 2.0, reduction="none")
    assert per.shape == (1, 2)
    swapped = ssim(x.permute(0, 2, 1, 3, 4), video.permute(0, 2, 1, 3, 4), 2.0, layout="BFCHW", reduction="none")
    assert torch.allclose(per, swapped, rtol=0, atol=1e-12)
    frames = ssim(x[:, :, 1], video[:, :, 1], 2.0, layout="CHW")
    assert frames == pytest.approx(float(per[0, 1]), abs=1e-12)


def test_errors_name_the_problem(video):
    with pytest.raises(ValueError, match="shape"):
        psnr(video, video[..., :5])
    with pytest.raises(ValueError, match="smaller than the 11×11 window"):
        ssim(video[..., :8, :8], video[..., :8, :8], 2.0)
    assert ssim(video[..., :8, :8], video[..., :8, :8], 2.0, window_size=5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="constant"):
        psnr(torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="non-finite"):
        rel_l2(torch.tensor([float("nan")]), torch.ones(1))
