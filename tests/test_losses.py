"""Tests of gfl_repro.models.losses: the paper's identities (Eqs. 1-10), their
optima, and mmdet's reduction / eps conventions."""

import math

import pytest
import torch
import torch.nn.functional as F

from gfl_repro.models.losses import (
    FP32_EPS,
    bin_values,
    centerness_from_distances,
    centerness_loss,
    centerness_target,
    dfl_target,
    distribution_focal_loss,
    focal_loss,
    generalized_focal_loss,
    giou_loss,
    integral,
    num_bins,
    quality_focal_loss,
    reg_distribution,
    weight_reduce,
)

D = torch.float64
BETAS_SMOOTH = [0.0, 2.0, 2.5, 4.0]  # |y - sigma|^beta differentiable at sigma = y
QUALITIES = [0.05, 0.3, 0.5, 0.77, 0.95]


def _logit(p):
    p = torch.as_tensor(p, dtype=D)
    return torch.log(p) - torch.log1p(-p)


def _two_hot_logits(target_bins, bins, floor_logit=-80.0):
    """Logits whose softmax is the DFL optimum: (i+1-y) at i, (y-i) at i+1."""
    target_bins = torch.as_tensor(target_bins, dtype=D)
    left = target_bins.floor().long()
    probs = torch.zeros(target_bins.numel(), bins, dtype=D)
    rows = torch.arange(target_bins.numel())
    probs[rows, left] = (left + 1).to(D) - target_bins
    probs[rows, left + 1] = target_bins - left.to(D)
    return torch.where(probs > 0, probs.log(), torch.full_like(probs, floor_logit))


# --------------------------------------------------------------------------- #
# weight_reduce (mmdet 3.3 weight_reduce_loss)
# --------------------------------------------------------------------------- #
def test_weight_reduce_semantics():
    # float64 so that the ~1.2e-7 eps is visible (in float32, 2 + eps rounds to 2)
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D)
    w = torch.tensor([1.0, 0.0, 1.0, 0.5], dtype=D)
    assert weight_reduce(loss).item() == pytest.approx(2.5)
    assert weight_reduce(loss, reduction="sum").item() == pytest.approx(10.0)
    assert torch.equal(weight_reduce(loss, w, reduction="none"), loss * w)
    # "mean" without avg_factor averages over all elements, weighted or not
    assert weight_reduce(loss, w).item() == pytest.approx(6.0 / 4)
    # "mean" with avg_factor: sum / (avg_factor + float32 eps)
    assert FP32_EPS == torch.finfo(torch.float32).eps
    out = weight_reduce(loss, w, avg_factor=2.0)
    assert out.item() == pytest.approx(6.0 / (2.0 + FP32_EPS), rel=1e-7)
    assert out.item() != 3.0  # the eps really is added
    # avg_factor = 0 does not divide by zero
    assert math.isfinite(weight_reduce(loss, avg_factor=0.0).item())
    # tensor avg_factor works too
    assert weight_reduce(loss, avg_factor=torch.tensor(4.0, dtype=D)).item() == pytest.approx(2.5, rel=1e-6)
    # avg_factor with "none" -> unchanged; with "sum" -> error (as mmdet)
    assert torch.equal(weight_reduce(loss, avg_factor=3.0, reduction="none"), loss)
    with pytest.raises(ValueError):
        weight_reduce(loss, avg_factor=3.0, reduction="sum")
    with pytest.raises(ValueError):
        weight_reduce(loss, reduction="avg")


# --------------------------------------------------------------------------- #
# Focal Loss (Eq. 1) and Eq. 8
# --------------------------------------------------------------------------- #
def test_focal_loss_hand_values():
    logits = torch.tensor([[0.0, 2.0, -1.0]], dtype=D)
    targets = torch.tensor([[1.0, 1.0, 0.0]], dtype=D)
    out = focal_loss(logits, targets, gamma=2.0, alpha=0.25)
    p1 = 1 / (1 + math.exp(-2.0))
    pm1 = 1 / (1 + math.exp(1.0))
    expected = [
        0.25 * 0.5**2 * math.log(2.0),  # p = 0.5, y = 1
        0.25 * (1 - p1) ** 2 * -math.log(p1),  # y = 1
        0.75 * pm1**2 * -math.log(1 - pm1),  # y = 0
    ]
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=D), rtol=1e-12, atol=0)


def test_focal_loss_labels_with_background_and_weights():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    labels = torch.tensor([0, 2, 3, 1, 3, 0])  # 3 = background
    onehot = F.one_hot(labels, 4)[:, :3].float()
    assert (onehot[labels == 3] == 0).all()
    torch.testing.assert_close(focal_loss(logits, labels), focal_loss(logits, onehot))
    # per-sample weight broadcasts over classes; avg_factor as mmdet
    w = torch.rand(6, generator=gen)
    ref = (focal_loss(logits, onehot) * w[:, None]).sum() / (4.0 + FP32_EPS)
    torch.testing.assert_close(focal_loss(logits, labels, weight=w, reduction="mean", avg_factor=4.0), ref)
    # flattened per-element weight (N*C,) is reshaped to (N, C)
    we = torch.rand(18, generator=gen)
    torch.testing.assert_close(
        focal_loss(logits, labels, weight=we, reduction="sum"),
        (focal_loss(logits, labels) * we.view(6, 3)).sum(),
    )


@pytest.mark.parametrize("gamma", [0.0, 1.0, 1.5, 2.0, 3.0])
def test_eq8_focal_loss_is_gfl_with_binary_labels(gamma):
    logits = torch.linspace(-6, 6, 41, dtype=D)
    p = torch.sigmoid(logits)
    for y in (0.0, 1.0):
        targets = torch.full_like(logits, y)
        fl = focal_loss(logits[:, None], targets[:, None], gamma=gamma, alpha=None)[:, 0]
        gfl = generalized_focal_loss(1 - p, p, 0.0, 1.0, y, beta=gamma)
        torch.testing.assert_close(fl, gfl, rtol=1e-9, atol=1e-12)
        # and the -(1 - p_t)^gamma log(p_t) form of Eq. 1
        pt = p if y == 1.0 else 1 - p
        torch.testing.assert_close(fl, -((1 - pt) ** gamma) * torch.log(pt), rtol=1e-9, atol=1e-12)
    # alpha = 0.5 halves Eq. 1 for both classes
    t = (torch.arange(41) % 2).to(D)
    torch.testing.assert_close(
        2 * focal_loss(logits[:, None], t[:, None], gamma=gamma, alpha=0.5),
        focal_loss(logits[:, None], t[:, None], gamma=gamma, alpha=None),
    )


# --------------------------------------------------------------------------- #
# Quality Focal Loss (Eq. 2 / Eq. 9)
# --------------------------------------------------------------------------- #
def _mmdet_style_qfl(pred, label, score, beta):
    """Independent reference of mmdet's quality_focal_loss semantics: all
    entries supervised by 0, then the positive entry overwritten."""
    sig = pred.sigmoid()
    loss = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none") * sig.pow(beta)
    for n in range(pred.size(0)):
        c = int(label[n])
        if 0 <= c < pred.size(1):
            loss[n, c] = F.binary_cross_entropy_with_logits(pred[n, c], score[n], reduction="none") * (
                score[n] - sig[n, c]
            ).abs().pow(beta)
    return loss.sum(dim=1)


def test_qfl_matches_mmdet_semantics_and_shapes():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 5, generator=gen)
    labels = torch.tensor([0, 5, 4, 5, 2, 1, 5, 3, 5, -1, 4, 0])  # 5 = background, -1 ignored
    quality = torch.rand(12, generator=gen)
    out = quality_focal_loss(logits, labels, quality, beta=2.0)
    assert out.shape == (12,)
    torch.testing.assert_close(out, _mmdet_style_qfl(logits, labels, quality, 2.0), rtol=1e-6, atol=1e-7)
    w = torch.rand(12, generator=gen)
    torch.testing.assert_close(
        quality_focal_loss(logits, labels, quality, weight=w, reduction="mean", avg_factor=3.0),
        (out * w).sum() / (3.0 + FP32_EPS),
    )
    # quality of negatives is ignored
    q2 = quality.clone()
    q2[labels == 5] = 0.9
    torch.testing.assert_close(quality_focal_loss(logits, labels, q2), out)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 2.5, 4.0])
def test_eq9_qfl_is_gfl(beta):
    sigma = torch.linspace(0.01, 0.99, 50, dtype=D)
    logits = _logit(sigma)[:, None]
    positive = torch.zeros(50, dtype=torch.long)
    for y in QUALITIES:
        qfl = quality_focal_loss(logits, positive, torch.full((50,), y, dtype=D), beta)
        gfl = generalized_focal_loss(1 - sigma, sigma, 0.0, 1.0, y, beta)
        torch.testing.assert_close(qfl, gfl, rtol=1e-9, atol=1e-12)
    # negatives (background label) = GFL with y = 0
    neg = quality_focal_loss(logits, torch.ones(50, dtype=torch.long), torch.zeros(50, dtype=D), beta)
    gfl0 = generalized_focal_loss(1 - sigma, sigma, 0.0, 1.0, 0.0, beta)
    torch.testing.assert_close(neg, gfl0, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 2.5, 4.0])
def test_qfl_minimum_on_a_grid_is_at_sigma_equals_y(beta):
    step = 1e-4
    sigma = torch.arange(step, 1.0, step, dtype=D)
    logits = _logit(sigma)[:, None]
    labels = torch.zeros(sigma.numel(), dtype=torch.long)
    for y in QUALITIES:
        loss = quality_focal_loss(logits, labels, torch.full_like(sigma, y), beta)
        assert (loss >= -1e-12).all()
        best = sigma[loss.argmin()].item()
        assert abs(best - y) <= step, (y, beta, best)


@pytest.mark.parametrize("beta", BETAS_SMOOTH)
def test_qfl_gradient_vanishes_at_sigma_equals_y(beta):
    for y in QUALITIES:
        x = _logit(torch.tensor([y], dtype=D))[:, None].requires_grad_(True)
        loss = quality_focal_loss(x, torch.zeros(1, dtype=torch.long), torch.tensor([y], dtype=D), beta)
        (g,) = torch.autograd.grad(loss.sum(), x)
        assert abs(g.item()) < 1e-10, (y, beta, g.item())
        # and it points back towards y on both sides (a minimum, not a saddle)
        for delta, sign in ((-0.5, -1.0), (0.5, 1.0)):
            x2 = (x.detach() + delta).requires_grad_(True)
            l2 = quality_focal_loss(x2, torch.zeros(1, dtype=torch.long), torch.tensor([y], dtype=D), beta)
            (g2,) = torch.autograd.grad(l2.sum(), x2)
            assert g2.item() * sign > 0


# --------------------------------------------------------------------------- #
# Distribution Focal Loss (Eq. 6 / Eq. 10) and the integral (Eq. 5)
# --------------------------------------------------------------------------- #
def test_dfl_hand_value_and_mmdet_formula():
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5]], dtype=D)
    target = torch.tensor([1.3], dtype=D)
    logp = torch.log_softmax(logits, dim=1)[0]
    expected = -(0.7 * logp[1] + 0.3 * logp[2])
    torch.testing.assert_close(distribution_focal_loss(logits, target)[0], expected, rtol=1e-12, atol=0)


def test_eq10_dfl_is_gfl_with_beta_zero():
    gen = torch.Generator().manual_seed(0)
    bins = 17
    logits = torch.randn(64, bins, generator=gen, dtype=D)
    target = torch.rand(64, generator=gen, dtype=D) * (bins - 1 - 0.1)
    s = torch.softmax(logits, dim=1)
    i = target.floor().long()
    rows = torch.arange(64)
    gfl = generalized_focal_loss(s[rows, i], s[rows, i + 1], i.to(D), (i + 1).to(D), target, beta=0.0)
    torch.testing.assert_close(distribution_focal_loss(logits, target), gfl, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("delta", [0.5, 2.0, 4.0])
def test_dfl_in_bin_units_is_eq6_over_delta(delta):
    gen = torch.Generator().manual_seed(1)
    reg_max = 16
    bins = num_bins(reg_max, delta)
    logits = torch.randn(32, bins, generator=gen, dtype=D)
    y = torch.rand(32, generator=gen, dtype=D) * (reg_max - 0.1 * delta)  # stride units
    s = torch.softmax(logits, dim=1)
    i = (y / delta).floor().long()
    rows = torch.arange(32)
    values = bin_values(reg_max, delta, dtype=D)
    eq6 = generalized_focal_loss(s[rows, i], s[rows, i + 1], values[i], values[i + 1], y, beta=0.0)
    dfl = distribution_focal_loss(logits, dfl_target(y, reg_max, delta))
    torch.testing.assert_close(dfl, eq6 / delta, rtol=1e-10, atol=1e-12)


def test_dfl_global_minimum_gives_exact_integral():
    bins = 17
    targets = torch.tensor([0.0, 0.25, 3.5, 7.9, 12.01, 15.9], dtype=D)
    ideal = _two_hot_logits(targets, bins)
    # Sec. 3: at S_i = y_{i+1} - y, S_{i+1} = y - y_i the integral recovers y
    recovered = integral(ideal.repeat(1, 4), reg_max=16)[:, 0]
    torch.testing.assert_close(recovered, targets, rtol=0, atol=1e-12)
    best = distribution_focal_loss(ideal, targets)
    # its value is the binary entropy of (S_i, S_{i+1})
    w = targets - targets.floor()
    entropy = -(torch.xlogy(w, w) + torch.xlogy(1 - w, 1 - w))
    torch.testing.assert_close(best, entropy, rtol=1e-9, atol=1e-12)
    # the gradient w.r.t. the logits vanishes there ...
    x = ideal.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(distribution_focal_loss(x, targets).sum(), x)
    assert g.abs().max().item() < 1e-12
    # ... and random perturbations never do better
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        noisy = ideal + 0.5 * torch.randn(ideal.shape, generator=gen, dtype=D)
        assert (distribution_focal_loss(noisy, targets) >= best - 1e-12).all()


def test_dfl_gradient_descent_converges_to_label():
    gen = torch.Generator().manual_seed(0)
    targets = torch.tensor([2.3, 9.75, 14.5], dtype=D)
    x = (0.1 * torch.randn(3, 17, generator=gen, dtype=D)).requires_grad_(True)
    # a few lines of Adam (torch.optim's first step costs ~1 s of lazy imports)
    m, v, lr, b1, b2 = torch.zeros_like(x), torch.zeros_like(x), 1.0, 0.9, 0.999
    for k in range(1, 81):
        (g,) = torch.autograd.grad(distribution_focal_loss(x, targets).sum(), x)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        with torch.no_grad():
            x -= lr * (m / (1 - b1**k)) / ((v / (1 - b2**k)).sqrt() + 1e-8)
    assert (integral(x.detach().repeat(1, 4), reg_max=16)[:, 0] - targets).abs().max() < 1e-2


def test_integral_one_hot_two_hot_and_module():
    bins = 17
    logits = torch.full((2, 4 * bins), -1e4)
    for side, k in enumerate([0, 5, 16, 9]):
        logits[0, side * bins + k] = 0.0  # one-hot at bin k
    # two-hot: equal mass on bins 3 and 4 for every side -> 3.5
    for side in range(4):
        logits[1, side * bins + 3] = 0.0
        logits[1, side * bins + 4] = 0.0
    out = integral(logits, reg_max=16)
    torch.testing.assert_close(out, torch.tensor([[0.0, 5.0, 16.0, 9.0], [3.5] * 4]))
    # uniform distribution -> mid-range
    assert torch.allclose(integral(torch.zeros(1, 4 * bins)), torch.full((1, 4), 8.0))
    # leading dims are kept
    assert integral(torch.zeros(2, 3, 4 * bins)).shape == (2, 3, 4)
    # the bins are mmdet's Integral.project for Delta = 1
    assert torch.equal(bin_values(16, 1.0), torch.linspace(0, 16, 17))
    probs = reg_distribution(torch.zeros(5, 4 * bins), bins)
    assert probs.shape == (5, 4, bins)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, 4))
    with pytest.raises(ValueError):
        integral(torch.zeros(1, 4 * 16), reg_max=16)


def test_num_bins_and_values_for_table_2c():
    assert [num_bins(16, d) for d in (0.5, 1, 2, 4)] == [33, 17, 9, 5]
    assert [num_bins(n) for n in (12, 14, 16, 18)] == [13, 15, 17, 19]
    torch.testing.assert_close(bin_values(16, 4.0), torch.tensor([0.0, 4.0, 8.0, 12.0, 16.0]))
    torch.testing.assert_close(bin_values(16, 0.5)[:3], torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError):
        num_bins(16, 3.0)


def test_dfl_target_clamp():
    d = torch.tensor([-1.0, 0.0, 7.3, 15.95, 30.0])
    # Delta = 1 reproduces mmdet's clamp [0, reg_max - 0.1] exactly
    assert torch.equal(dfl_target(d, 16, 1.0), d.clamp(min=0, max=16 - 0.1))
    # Delta = 4: bins 0..4, clamp at 4 - 0.1 in bin units
    torch.testing.assert_close(dfl_target(d, 16, 4.0), torch.tensor([0.0, 0.0, 7.3 / 4, 3.9, 3.9]))
    # every target leaves room for floor(t) + 1
    for delta in (0.5, 1.0, 2.0, 4.0):
        t = dfl_target(torch.linspace(0, 40, 101), 16, delta)
        assert (t.floor() + 1 <= num_bins(16, delta) - 1).all()


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0, 4.0])
def test_delta_round_trip(delta):
    """distance -> DFL target -> ideal two-hot logits -> integral -> same distance."""
    gen = torch.Generator().manual_seed(int(delta * 10))
    reg_max = 16
    bins = num_bins(reg_max, delta)
    dist = torch.rand(50, 4, generator=gen, dtype=D) * (reg_max - 0.1 * delta)
    dist[0] = torch.tensor([0.0, delta, 2 * delta, reg_max - 0.1 * delta], dtype=D)  # bin edges
    t = dfl_target(dist, reg_max, delta)
    assert (t <= bins - 1 - 0.1 + 1e-12).all()
    logits = _two_hot_logits(t.reshape(-1), bins).reshape(50, 4 * bins)
    torch.testing.assert_close(integral(logits, reg_max, delta), dist, rtol=0, atol=1e-10)
    # these logits are DFL's optimum: zero gradient
    x = logits.reshape(-1, bins).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(distribution_focal_loss(x, t.reshape(-1)).sum(), x)
    assert g.abs().max().item() < 1e-12


# --------------------------------------------------------------------------- #
# Eq. 7 itself
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_gfl_global_minimum(beta):
    y_l, y_r = 2.0, 3.0
    p_r = torch.linspace(1e-4, 1 - 1e-4, 9999, dtype=D)
    for y in (2.1, 2.5, 2.9):
        loss = generalized_focal_loss(1 - p_r, p_r, y_l, y_r, y, beta)
        best = p_r[loss.argmin()].item()
        assert abs(best - (y - y_l) / (y_r - y_l)) <= 1e-4 + 1e-12


# --------------------------------------------------------------------------- #
# GIoU loss, centerness
# --------------------------------------------------------------------------- #
def test_giou_loss_values_and_mmdet_module_details():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 5.0, 2.0]])
    loss = giou_loss(pred, target)
    torch.testing.assert_close(loss, torch.tensor([0.0, 1.2]))
    w = torch.tensor([0.5, 2.0])
    torch.testing.assert_close(
        giou_loss(pred, target, weight=w, reduction="mean", avg_factor=1.0), (loss * w).sum() / (1.0 + FP32_EPS)
    )
    # (N, 4) weights are averaged over the last dim
    torch.testing.assert_close(
        giou_loss(pred, target, weight=w[:, None].expand(2, 4), reduction="sum"), (loss * w).sum()
    )
    # all-zero weights: a graph-connected zero, regardless of reduction
    zero = giou_loss(pred, target, weight=torch.zeros(2), reduction="none")
    assert zero.shape == () and zero.item() == 0.0
    zero.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_centerness_target_hand_values():
    gts = torch.tensor([[0.0, 0.0, 4.0, 2.0], [0.0, 0.0, 4.0, 2.0]])
    centers = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    out = centerness_target(centers, gts)
    torch.testing.assert_close(out, torch.tensor([1.0, math.sqrt(1 / 3)]))
    # anchors (xyxy) are reduced to their centres, as in ATSSHead
    anchors = torch.tensor([[0.0, -1.0, 4.0, 3.0], [-3.0, -3.0, 5.0, 5.0]])
    torch.testing.assert_close(centerness_target(anchors, gts), out)
    # FCOS form on ltrb distances
    torch.testing.assert_close(centerness_from_distances(torch.tensor([[1.0, 1.0, 3.0, 1.0]])), out[1:])


def test_centerness_loss_is_bce_with_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(10, generator=gen)
    targets = torch.rand(10, generator=gen)
    torch.testing.assert_close(
        centerness_loss(logits, targets), F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    )
    torch.testing.assert_close(
        centerness_loss(logits, targets, reduction="mean", avg_factor=7.0),
        F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / (7.0 + FP32_EPS),
    )
