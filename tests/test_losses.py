"""Each distillation term against a naive loop reference, plus its properties."""

import math

import pytest
import torch

from yolo_tsd.method.losses import (
    FeatureAdapters,
    binary_kl,
    box_iou_distance,
    dfl_kl,
    distance_l1,
    expected_distance,
    feature_distance,
    split_bins,
    weighted_mean,
)


def naive_binary_kl(zs, zt, tau):
    out = torch.zeros(zs.shape[:2], dtype=torch.float64)
    for b in range(zs.shape[0]):
        for a in range(zs.shape[1]):
            for c in range(zs.shape[2]):
                pt = 1 / (1 + math.exp(-zt[b, a, c].item() / tau))
                ps = 1 / (1 + math.exp(-zs[b, a, c].item() / tau))
                out[b, a] += pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
    return out * tau**2


def naive_dfl_kl(ds, dt, tau):
    b_, a_, sides, r_ = ds.shape
    out = torch.zeros(b_, a_, dtype=torch.float64)
    for b in range(b_):
        for a in range(a_):
            for s in range(sides):
                es = [math.exp(ds[b, a, s, r].item() / tau) for r in range(r_)]
                et = [math.exp(dt[b, a, s, r].item() / tau) for r in range(r_)]
                for r in range(r_):
                    pt, ps = et[r] / sum(et), es[r] / sum(es)
                    out[b, a] += pt * math.log(pt / ps) / sides
    return out * tau**2


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_binary_kl_matches_loop(tau):
    zs, zt = torch.randn(2, 5, 3) * 3, torch.randn(2, 5, 3) * 3
    assert torch.allclose(binary_kl(zs, zt, tau).double(), naive_binary_kl(zs, zt, tau), atol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_dfl_kl_matches_loop(tau):
    ds, dt = torch.randn(2, 4, 4, 16) * 2, torch.randn(2, 4, 4, 16) * 2
    assert torch.allclose(dfl_kl(ds, dt, tau).double(), naive_dfl_kl(ds, dt, tau), atol=1e-5)


def test_feature_distance_matches_loop_and_anchor_order():
    s = [torch.randn(2, 3, 4, 5), torch.randn(2, 3, 2, 3)]
    t = [torch.randn(2, 3, 4, 5), torch.randn(2, 3, 2, 3)]
    d = feature_distance(s, t)
    assert d.shape == (2, 4 * 5 + 2 * 3)
    for b in range(2):
        a = 0
        for sl, tl in zip(s, t):
            for y in range(sl.shape[2]):
                for x in range(sl.shape[3]):
                    ref = sum((sl[b, c, y, x] - tl[b, c, y, x]).item() ** 2 for c in range(3)) / 3
                    assert d[b, a].item() == pytest.approx(ref, rel=1e-5)
                    a += 1


def test_distance_terms_match_loop():
    ds, dt = torch.rand(2, 3, 4) * 5, torch.rand(2, 3, 4) * 5
    l1 = distance_l1(ds, dt)
    assert l1[1, 2].item() == pytest.approx(sum(abs(ds[1, 2, i] - dt[1, 2, i]).item() for i in range(4)) / 4)
    anchors = torch.tensor([[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]])
    d = torch.tensor([[[1.0, 1.0, 1.0, 1.0]] * 3])  # 2x2 box around each anchor
    d2 = torch.tensor([[[1.0, 1.0, 3.0, 1.0]] * 3])  # 4x2 box: IoU 0.5
    assert box_iou_distance(d, d2, anchors)[0].tolist() == pytest.approx([0.5] * 3, abs=1e-5)


def test_zero_when_student_equals_teacher_and_non_negative_otherwise():
    z = torch.randn(2, 7, 4) * 4
    bins = torch.randn(2, 7, 4, 16)
    assert binary_kl(z, z).abs().max() < 1e-5
    assert dfl_kl(bins, bins).abs().max() < 1e-5
    assert feature_distance([z[:, None]], [z[:, None]]).abs().max() == 0
    for _ in range(5):
        assert (binary_kl(torch.randn(2, 7, 4) * 5, torch.randn(2, 7, 4) * 5) >= 0).all()
        assert (dfl_kl(torch.randn(2, 7, 4, 16) * 5, torch.randn(2, 7, 4, 16) * 5) >= 0).all()


def test_weighted_mean_and_zero_weights():
    v = torch.tensor([[1.0, 2.0, 3.0]])
    assert weighted_mean(v, torch.tensor([[1.0, 0.0, 1.0]])).item() == pytest.approx(2.0)
    zero = weighted_mean(v.requires_grad_(), torch.zeros(1, 3))
    assert zero.item() == 0 and zero.requires_grad  # still in the graph: no special case for DDP


def test_bins_layout_and_expected_distance():
    raw = torch.zeros(1, 4 * 16, 3)  # (B, 4*R, A) as the Detect head emits
    raw[0, 16 * 2 + 5, 1] = 50.0  # side 2 of anchor 1 puts all mass on bin 5
    assert split_bins(raw, 16)[0, 1, 2].argmax() == 5
    dist = expected_distance(raw, 16)
    assert dist[0, 1, 2].item() == pytest.approx(5.0, abs=1e-4)
    assert dist[0, 0, 0].item() == pytest.approx(7.5, abs=1e-4)  # uniform bins: mean of 0..15
    r1 = torch.rand(2, 4, 5)
    assert torch.equal(expected_distance(r1, 1), r1.permute(0, 2, 1))


def test_adapters_map_widths_and_identity_where_equal():
    ad = FeatureAdapters([16, 32], [64, 32])
    out = ad([torch.randn(1, 16, 4, 4), torch.randn(1, 32, 2, 2)])
    assert out[0].shape == (1, 64, 4, 4) and out[1].shape == (1, 32, 2, 2)
    assert isinstance(ad.levels[1], torch.nn.Identity)
    assert sum(p.numel() for p in ad.parameters()) == 16 * 64 + 64
