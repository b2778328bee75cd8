r"""Losses of Generalized Focal Loss (Li et al., NeurIPS 2020), Sec. 3.

Everything a GFL / ATSS / FCOS style head needs, written as plain functions:

==============================  ==============================================
paper                           here
==============================  ==============================================
Eq. 1  Focal Loss (+ alpha)     :func:`focal_loss`
Eq. 2/9  Quality Focal Loss     :func:`quality_focal_loss`
Eq. 5  integral of P(x)         :func:`integral`
Eq. 6/10  Distribution FL       :func:`distribution_focal_loss`, :func:`dfl_target`
Eq. 7  GFL (two-variable form)  :func:`generalized_focal_loss`
GIoU loss (paper ref. [24])     :func:`giou_loss`
centerness (FCOS / ATSS)        :func:`centerness_target`, :func:`centerness_loss`
IoU-balanced weights (ref [28]) :func:`iou_balanced_weights`
L1 / Smooth L1 (RetinaNet, ...)  :func:`l1_loss`, :func:`smooth_l1_loss`
SSD's softmax CE, 3:1 negatives  :func:`softmax_hard_negative_loss`
KL loss, Gaussian (ref. [10])   :func:`kl_loss`
mmdet ``weight_reduce_loss``    :func:`weight_reduce`
==============================  ==============================================

Numerical contract: the formulas, eps values and reductions follow mmdetection
3.3 (``mmdet/models/losses/{focal_loss,gfocal_loss,iou_loss,cross_entropy_loss,
utils}.py``, ``GFLHead.Integral``, ``ATSSHead.centerness_target``) so that the
native engine matches mmdet within fp32 rounding.

Reduction convention: every loss returns the *elementwise* loss by default
(``reduction="none"``); pass ``weight`` / ``reduction`` / ``avg_factor`` to get
mmdet's ``weight_reduce_loss`` behaviour. mmdet's ``loss_weight`` is *not*
applied here; mmdet multiplies it after the reduction
(``loss_weight * reduced``), and callers should do the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .box_ops import aligned_giou, box_centers

__all__ = [
    "FP32_EPS",
    "reduce_loss",
    "weight_reduce",
    "focal_loss",
    "quality_focal_loss",
    "distribution_focal_loss",
    "generalized_focal_loss",
    "giou_loss",
    "centerness_from_distances",
    "centerness_target",
    "centerness_loss",
    "iou_balanced_weights",
    "l1_loss",
    "smooth_l1_loss",
    "softmax_hard_negative_loss",
    "kl_loss",
    "num_bins",
    "bin_values",
    "reg_distribution",
    "integral",
    "dfl_target",
]

#: eps added to ``avg_factor`` by mmdet 3.x's ``weight_reduce_loss``.
FP32_EPS: float = torch.finfo(torch.float32).eps

_REDUCTIONS = ("none", "mean", "sum")


# --------------------------------------------------------------------------- #
# reductions
# --------------------------------------------------------------------------- #
def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Plain reduction: ``"none"`` (identity), ``"mean"`` or ``"sum"`` over all
    elements."""
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def weight_reduce(
    loss: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Apply an elementwise weight, then reduce (mmdet 3.3 ``weight_reduce_loss``).

    * ``weight`` (broadcastable to ``loss``) multiplies the loss first.
    * ``avg_factor is None``: plain ``reduce_loss(loss, reduction)`` -- note that
      ``"mean"`` then averages over *all* elements, weighted or not.
    * ``avg_factor`` given and ``reduction == "mean"``:
      ``loss.sum() / (avg_factor + FP32_EPS)`` with
      ``FP32_EPS = torch.finfo(torch.float32).eps`` (~1.19e-7) -- the eps is
      always added, also when ``avg_factor`` is large.
    * ``avg_factor`` given and ``reduction == "none"``: returned unreduced.
    * ``avg_factor`` given and ``reduction == "sum"``: ``ValueError``.

    Args:
        loss: elementwise loss, any shape.
        weight: elementwise weight or ``None``.
        reduction: ``"none" | "mean" | "sum"``.
        avg_factor: normaliser for ``"mean"`` (e.g. number of positives).

    Returns:
        A scalar, or ``loss``'s shape for ``"none"``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    if reduction == "mean":
        return loss.sum() / (avg_factor + FP32_EPS)
    if reduction == "none":
        return loss
    raise ValueError('avg_factor can not be used with reduction="sum"')


# --------------------------------------------------------------------------- #
# Focal Loss (Eq. 1)
# --------------------------------------------------------------------------- #
def focal_loss(
    logits: Tensor,
    targets: Tensor,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    weight: Tensor | None = None,
    reduction: str = "none",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    r"""Sigmoid Focal Loss, Eq. 1 of the paper plus RetinaNet's alpha balance.

    .. math::
        \mathrm{FL}(p) = -\alpha_t (1 - p_t)^\gamma \log(p_t),\quad
        p_t = p \text{ if } y = 1 \text{ else } 1 - p,\quad
        \alpha_t = \alpha \text{ if } y = 1 \text{ else } 1 - \alpha

    computed per class as mmdet's ``py_sigmoid_focal_loss`` (the path mmdet's
    ``FocalLoss`` takes on CPU): ``BCEWithLogits(x, t) * (alpha*t + (1-alpha)*(1-t))
    * pt**gamma`` with ``pt = (1-p)*t + p*(1-t)``. (On CUDA mmdet uses mmcv's
    fused kernel, which evaluates the same formula with ``log(max(p, FLT_MIN))``.)

    Args:
        logits: ``(N, C)`` class logits.
        targets: either ``(N,)`` integer labels in ``[0, C]`` where ``C`` is the
            background index (turned into one-hot over ``C + 1`` and the last
            column dropped, as mmdet does), or ``(N, C)`` one-hot / float targets.
        gamma: focusing parameter (paper: gamma = 2).
        alpha: balance of positives; ``None`` drops the factor (pure Eq. 1).
        weight: ``(N,)`` per-sample (broadcast over classes), ``(N, C)``, or
            ``(N*C,)`` per-element weights, as mmdet.
        reduction, avg_factor: see :func:`weight_reduce`.

    Returns:
        ``(N, C)`` elementwise loss for ``reduction="none"``, else a scalar.
    """
    if targets.dim() == logits.dim() - 1:
        num_classes = logits.size(-1)
        # one-hot over C + 1 with the background column dropped, by comparison (F.one_hot
        # reads the labels' range back to the host to check it)
        targets = targets.long()[..., None] == torch.arange(num_classes, device=targets.device)
    targets = targets.type_as(logits)
    p = logits.sigmoid()
    pt = (1 - p) * targets + p * (1 - targets)
    if alpha is None:
        focal_weight = pt.pow(gamma)
    else:
        focal_weight = (alpha * targets + (1 - alpha) * (1 - targets)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * focal_weight
    if weight is not None and weight.shape != loss.shape:
        if weight.size(0) == loss.size(0):
            weight = weight.reshape(-1, 1)
        else:
            if weight.numel() != loss.numel():
                raise ValueError("focal_loss weight must have N or N*C elements")
            weight = weight.reshape(loss.size(0), -1)
    return weight_reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- #
# Quality Focal Loss (Eq. 2 / Eq. 9)
# --------------------------------------------------------------------------- #
def quality_focal_loss(
    logits: Tensor,
    labels: Tensor,
    quality: Tensor,
    beta: float = 2.0,
    weight: Tensor | None = None,
    reduction: str = "none",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    r"""Quality Focal Loss on the joint classification-IoU score (Eq. 2 = Eq. 9).

    .. math::
        \mathrm{QFL}(\sigma) = -|y - \sigma|^\beta
            \big((1 - y)\log(1 - \sigma) + y \log \sigma\big)

    applied to every class of every sample with a per-element soft label
    ``y``: for a positive sample (``0 <= label < C``) ``y = quality`` at its
    class and 0 at all other classes; for a negative (``label == C`` or any
    out-of-range label) ``y = 0`` everywhere. The cross-entropy part is
    ``BCEWithLogits(x, y)``; the loss is summed over classes, as mmdet's
    ``quality_focal_loss`` (``QualityFocalLoss(use_sigmoid=True)``).

    Args:
        logits: ``(N, C)`` joint-score logits.
        labels: ``(N,)`` integer labels, ``C`` = background.
        quality: ``(N,)`` quality (IoU) targets in ``[0, 1]``, read only at
            positives.
        beta: modulating exponent (paper: beta = 2).
        weight: ``(N,)`` per-sample weight (mmdet: ``label_weights``).
        reduction, avg_factor: see :func:`weight_reduce` (GFLHead: ``"mean"``
            with ``avg_factor = num_pos`` averaged over GPUs, at least 1).

    Returns:
        ``(N,)`` per-sample loss for ``reduction="none"``, else a scalar.
    """
    num_classes = logits.size(1)
    labels = labels.long()
    pos = (labels >= 0) & (labels < num_classes)
    safe_labels = torch.where(pos, labels, torch.zeros_like(labels))
    is_target_class = (safe_labels[:, None] == torch.arange(num_classes, device=labels.device)) & pos[:, None]
    target = quality.to(logits.dtype)[:, None]
    soft = torch.where(is_target_class, target, 0.0)
    sigma = logits.sigmoid()
    # |y - σ| is σ wherever y = 0 (|0 - σ| = σ exactly): σ with each positive's target-class
    # entry replaced by |y - σ| (elementwise exact either way), then one dense power, so every
    # number is what |soft - σ|^β gives, with one (N, C) tensor fewer kept for backward
    column = safe_labels[:, None]
    sigma_t = sigma.gather(1, column)
    distance = sigma.scatter(1, column, torch.where(pos[:, None], (target - sigma_t).abs(), sigma_t))
    modulating = distance.pow(beta)
    loss = F.binary_cross_entropy_with_logits(logits, soft, reduction="none") * modulating
    loss = loss.sum(dim=1)
    return weight_reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- #
# Distribution Focal Loss (Eq. 6 / Eq. 10)
# --------------------------------------------------------------------------- #
def distribution_focal_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "none",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    r"""Distribution Focal Loss (Eq. 6 = Eq. 10), in units of the bin width.

    .. math::
        \mathrm{DFL}(S_i, S_{i+1}) = -\big((y_{i+1} - y)\log S_i
            + (y - y_i)\log S_{i+1}\big)

    with ``i = floor(y)``, ``S = softmax(logits)`` over the ``n + 1`` bins and
    ``y`` expressed in bins (so ``y_{i+1} - y_i = 1``). Implemented as mmdet:
    ``CE(logits, i) * (i + 1 - y) + CE(logits, i + 1) * (y - i)``.

    For a bin width ``Delta != 1`` pass ``target = distance / Delta`` (see
    :func:`dfl_target`); this is Eq. 6 divided by ``Delta``, i.e. the two weights
    are the normalised ones of the paper's global minimum
    ``S_i = (y_{i+1} - y) / Delta``, so the DFL scale does not change with
    ``Delta``.

    Args:
        logits: ``(M, n + 1)`` bin logits (one row per box side).
        target: ``(M,)`` targets in bins, ``0 <= target < n`` (strictly below the
            last bin so that ``i + 1`` is a valid index; GFL clamps to
            ``n - 0.1``).
        weight: ``(M,)`` weights (GFLHead: the positive's max class score,
            repeated for the 4 sides).
        reduction, avg_factor: see :func:`weight_reduce` (GFLHead: ``"mean"``,
            ``avg_factor = 4.0``).

    Returns:
        ``(M,)`` per-side loss for ``reduction="none"``, else a scalar.
    """
    left = target.long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = target - left.to(target.dtype)
    loss = (
        F.cross_entropy(logits, left, reduction="none") * w_left
        + F.cross_entropy(logits, right, reduction="none") * w_right
    )
    return weight_reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- #
# Generalized Focal Loss (Eq. 7)
# --------------------------------------------------------------------------- #
def generalized_focal_loss(
    p_left: Tensor | float,
    p_right: Tensor | float,
    y_left: Tensor | float,
    y_right: Tensor | float,
    y: Tensor | float,
    beta: float,
) -> Tensor:
    r"""Generalized Focal Loss in its two-variable form (Eq. 7).

    .. math::
        \mathrm{GFL}(p_{y_l}, p_{y_r}) = -\big|y - (y_l p_{y_l} + y_r p_{y_r})\big|^\beta
            \big((y_r - y)\log p_{y_l} + (y - y_l)\log p_{y_r}\big)

    with ``y_l <= y <= y_r``, ``p_{y_l}, p_{y_r} >= 0``. Its global minimum is at
    ``p_{y_l} = (y_r - y) / (y_r - y_l)``, ``p_{y_r} = (y - y_l) / (y_r - y_l)``.
    Special cases: FL (Eq. 8: ``beta = gamma, y_l = 0, y_r = 1, y in {0, 1}``),
    QFL (Eq. 9: ``y_l = 0, y_r = 1``), DFL (Eq. 10: ``beta = 0``). This is the
    reference formula used to verify those identities; heads use the dedicated
    functions above.

    Args:
        p_left, p_right: probabilities of ``y_l`` and ``y_r`` (any broadcastable
            shapes).
        y_left, y_right: the two support values.
        y: the continuous label.
        beta: modulating exponent (``0**0 = 1``).

    Returns:
        Elementwise loss (broadcast shape of the inputs).
    """
    values = (p_left, p_right, y_left, y_right, y)
    # Python numbers take the floating dtype of the tensor arguments (so a float64
    # check is not silently rounded through float32).
    dtype = next(
        (v.dtype for v in values if isinstance(v, Tensor) and v.is_floating_point()),
        torch.get_default_dtype(),
    )
    p_left, p_right, y_left, y_right, y = (torch.as_tensor(v, dtype=dtype) for v in values)
    y_hat = y_left * p_left + y_right * p_right
    modulating = (y - y_hat).abs().pow(beta)
    cross_entropy = (y_right - y) * torch.log(p_left) + (y - y_left) * torch.log(p_right)
    return -modulating * cross_entropy


# --------------------------------------------------------------------------- #
# GIoU loss
# --------------------------------------------------------------------------- #
def giou_loss(
    pred: Tensor,
    target: Tensor,
    eps: float = 1e-6,
    weight: Tensor | None = None,
    reduction: str = "none",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """GIoU loss ``1 - GIoU(pred, target)`` for paired ``xyxy`` boxes.

    Same as mmdet's ``GIoULoss`` (module default ``eps = 1e-6``; eps floors the
    union and the enclosing area, see :func:`~gfl_repro.models.box_ops.aligned_giou`).
    Two details of the module are kept:

    * if ``weight`` is given and no entry is ``> 0``, the result is
      ``(pred * weight).sum()`` (a zero that keeps the graph), whatever the
      reduction;
    * a ``(N, 4)`` weight is averaged over its last dim to ``(N,)``.

    Args:
        pred: ``(N, 4)`` predicted boxes.
        target: ``(N, 4)`` target boxes.
        eps: floor for union / enclosing area.
        weight: ``(N,)`` or ``(N, 4)`` weights (GFLHead: max class score of the
            positive, with ``avg_factor = 1.0``).
        reduction, avg_factor: see :func:`weight_reduce`.

    Returns:
        ``(N,)`` for ``reduction="none"``, else a scalar.
    """
    if weight is None:
        return weight_reduce(1 - aligned_giou(pred, target, eps=eps), None, reduction, avg_factor)
    zero = (pred * (weight.unsqueeze(1) if pred.dim() == weight.dim() + 1 else weight)).sum()
    any_positive = torch.any(weight > 0)
    if reduction == "none" and not any_positive:  # the result's shape depends on it: read it here only
        return zero
    loss = 1 - aligned_giou(pred, target, eps=eps)
    reduced = weight_reduce(loss, weight.mean(-1) if weight.dim() > 1 else weight, reduction, avg_factor)
    if reduction == "none":
        return reduced
    # chosen on the device (a training step does not wait for the host here)
    return torch.where(any_positive, reduced, zero)


# --------------------------------------------------------------------------- #
# centerness (FCOS / ATSS quality branch)
# --------------------------------------------------------------------------- #
def centerness_from_distances(ltrb: Tensor) -> Tensor:
    r"""FCOS centerness of ``ltrb`` distances.

    .. math::
        \mathrm{centerness} = \sqrt{\frac{\min(l, r)}{\max(l, r)}
            \cdot \frac{\min(t, b)}{\max(t, b)}}

    (mmdet ``FCOSHead.centerness_target``). Only meaningful for points inside
    their box (positive distances); otherwise NaN can appear.

    Args:
        ltrb: ``(N, 4)`` distances.

    Returns:
        ``(N,)`` centerness in ``[0, 1]``.
    """
    left_right = ltrb[..., 0::2]  # slices, not list indices (a list index is copied to the device)
    top_bottom = ltrb[..., 1::2]
    ratio_lr = left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]
    ratio_tb = top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0]
    return torch.sqrt(ratio_lr * ratio_tb)


def centerness_target(anchor_or_point_centers: Tensor, gt_boxes: Tensor) -> Tensor:
    r"""Centerness target of positive anchors / points w.r.t. their GT boxes.

    Same value as mmdet ``ATSSHead.centerness_target(anchors, gts)``:
    ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` with ``l, t, r, b`` the
    distances from the anchor centre to the GT sides. Call it for positives only.

    Args:
        anchor_or_point_centers: ``(N, 2)`` centres, or ``(N, 4)`` anchors
            (their centres ``((x1 + x2) / 2, (y1 + y2) / 2)`` are used).
        gt_boxes: ``(N, 4)`` matched GT boxes ``xyxy``.

    Returns:
        ``(N,)`` centerness targets.
    """
    centers = anchor_or_point_centers
    if centers.size(-1) == 4:
        centers = box_centers(centers)
    left = centers[..., 0] - gt_boxes[..., 0]
    top = centers[..., 1] - gt_boxes[..., 1]
    right = gt_boxes[..., 2] - centers[..., 0]
    bottom = gt_boxes[..., 3] - centers[..., 1]
    return centerness_from_distances(torch.stack([left, top, right, bottom], dim=-1))


def centerness_loss(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    reduction: str = "none",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """Binary cross-entropy with logits for the centerness (or IoU) branch.

    mmdet: ``CrossEntropyLoss(use_sigmoid=True)`` -> ``BCEWithLogits(x, t)``
    then :func:`weight_reduce` (ATSS: ``reduction="mean"``,
    ``avg_factor = num_pos``; FCOS: ``avg_factor = num_pos``).

    Args:
        logits: ``(N,)`` branch logits.
        targets: ``(N,)`` soft targets in ``[0, 1]``.
        weight, reduction, avg_factor: see :func:`weight_reduce`.

    Returns:
        ``(N,)`` for ``reduction="none"``, else a scalar.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return weight_reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- #
# regression losses on encoded targets, and SSD's classification loss
# --------------------------------------------------------------------------- #
def l1_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "none",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    """``|pred - target|`` elementwise (RetinaNet's box loss on its deltas; mmdet ``L1Loss``)."""
    return weight_reduce((pred - target).abs(), weight, reduction, avg_factor)


def smooth_l1_loss(
    pred: Tensor,
    target: Tensor,
    beta: float = 1.0,
    weight: Tensor | None = None,
    reduction: str = "none",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    r"""Smooth L1 (Fast R-CNN): :math:`0.5 d^2 / \beta` for :math:`d < \beta`, else
    :math:`d - 0.5 \beta`, with :math:`d = |pred - target|` (mmdet ``smooth_l1_loss``; FoveaBox
    uses β = 0.11, SSD β = 1)."""
    if beta <= 0:
        raise ValueError("beta must be > 0")
    diff = (pred - target).abs()
    loss = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return weight_reduce(loss, weight, reduction, avg_factor)


def softmax_hard_negative_loss(
    logits: Tensor,
    labels: Tensor,
    num_images: int,
    avg_factor: float | Tensor,
    neg_pos_ratio: int = 3,
) -> Tensor:
    """SSD's classification loss (Liu et al., 2016; mmdet ``SSDHead.loss_by_feat_single``):
    softmax cross-entropy over ``C + 1`` classes (background last), on every positive and, per
    image, on the ``neg_pos_ratio × #positives`` negatives of highest loss (hard negative
    mining), summed over images and divided by ``avg_factor`` (Σ max(#positives, 1), no eps).

    Args:
        logits: ``(N, C + 1)``; labels ``(N,)`` with ``C`` the background; the rows image-major,
            ``N / num_images`` per image (:meth:`DenseHead.flatten`'s order).

    The per-image numbers of positives and negatives are read to the host once for the batch
    (``topk`` takes its ``k`` there); the positives and the negatives of each image are then
    gathered in row order by index (a stable sort puts their rows first), which sums the same
    values in the same order as boolean indexing without a read per image.
    """
    background = logits.size(1) - 1
    losses = F.cross_entropy(logits, labels, reduction="none").view(num_images, -1)
    labels = labels.view(num_images, -1)
    pos = (labels >= 0) & (labels < background)
    neg = labels == background
    counts = torch.stack([pos.sum(1), neg.sum(1)], 1).tolist()
    pos_rows = torch.argsort((~pos).to(torch.uint8), dim=1, stable=True)
    neg_rows = torch.argsort((~neg).to(torch.uint8), dim=1, stable=True)
    total = losses.new_zeros(())
    for b, (num_pos, num_negatives) in enumerate(counts):
        hard, _ = losses[b, neg_rows[b, :num_negatives]].topk(min(neg_pos_ratio * num_pos, num_negatives))
        total = total + (losses[b, pos_rows[b, :num_pos]].sum() + hard.sum()) / avg_factor
    return total


# --------------------------------------------------------------------------- #
# implicit quality: IoU-balanced classification weights (paper ref. [28])
# --------------------------------------------------------------------------- #
def iou_balanced_weights(gt_class_losses: Tensor, quality: Tensor, eta: float = 1.5, eps: float = 1e-6) -> Tensor:
    r"""Per-positive weights of the IoU-balanced classification loss (Wu & Li 2019, the
    paper's ref. [28]; Table 1a's centerness-/IoU-guided rows, Fig. 6):

    .. math::
        w_i = q_i^{\eta}\, \frac{\sum_j L_j}{\sum_j q_j^{\eta} L_j + \epsilon}

    where ``L_j`` is positive ``j``'s classification loss at its GT class and ``q_j`` its
    localization quality (IoU or centerness). The weights keep the total positive loss
    unchanged and move it towards well-localised positives; they are detached (no gradient
    flows through the quality or the normaliser), so, as the GFL paper notes, they do not
    change the optimum of the classification objective.

    Args:
        gt_class_losses: ``(P,)`` losses of the positives at their GT class.
        quality: ``(P,)`` qualities in ``[0, 1]``.
        eta: the exponent (the reference implementation's 1.5).
        eps: added to the denominator.

    Returns:
        ``(P,)`` detached weights.
    """
    q = quality.detach().clamp(min=0).pow(eta)
    losses = gt_class_losses.detach()
    return q * losses.sum() / ((q * losses).sum() + eps)


# --------------------------------------------------------------------------- #
# Gaussian box: KL loss (paper ref. [10])
# --------------------------------------------------------------------------- #
def kl_loss(
    mean: Tensor,
    log_var: Tensor,
    target: Tensor,
    beta: float = 1.0,
    weight: Tensor | None = None,
    reduction: str = "none",
    avg_factor: float | Tensor | None = None,
) -> Tensor:
    r"""The KL loss of a Gaussian box coordinate (He et al., CVPR 2019, the paper's ref. [10],
    their Eqs. 9-10), with :math:`\alpha = \log \sigma^2` predicted:

    .. math::
        L = e^{-\alpha}\, \mathrm{SmoothL1}_\beta(\mu - y) + \tfrac{1}{2}\alpha

    i.e. :math:`e^{-\alpha}(\mu - y)^2 / 2 + \alpha / 2` for :math:`|\mu - y| < \beta = 1`,
    else :math:`e^{-\alpha}(|\mu - y| - 1/2) + \alpha / 2`: the KL divergence between a Dirac
    delta at the target and :math:`\mathcal{N}(\mu, \sigma^2)` up to constants, with the
    quadratic replaced by its linear continuation beyond ``beta`` as in Smooth L1.

    Args:
        mean, log_var, target: same shape (one entry per box side).
        beta: the Smooth L1 switch point (1, in the units of ``target``).
        weight, reduction, avg_factor: see :func:`weight_reduce`.
    """
    diff = (mean - target).abs()
    smooth_l1 = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    loss = torch.exp(-log_var) * smooth_l1 + 0.5 * log_var
    return weight_reduce(loss, weight, reduction, avg_factor)


# --------------------------------------------------------------------------- #
# General distribution: integral (Eq. 5) and DFL targets, with bin width Delta
# --------------------------------------------------------------------------- #
def num_bins(reg_max: float = 16, bin_width: float = 1.0) -> int:
    """Number of bins ``n + 1`` discretising ``[y_0, y_n] = [0, reg_max]`` with step
    ``Delta = bin_width`` (Sec. 3; Table 2c uses ``y_n = 16``, ``Delta`` in
    ``{0.5, 1, 2, 4}`` -> 33, 17, 9, 5 bins). ``reg_max / bin_width`` must be an
    integer."""
    if bin_width <= 0:
        raise ValueError("bin_width must be > 0")
    n = reg_max / bin_width
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ValueError(f"reg_max / bin_width must be a positive integer, got {reg_max}/{bin_width}")
    return int(round(n)) + 1


def bin_values(reg_max: float = 16, bin_width: float = 1.0, dtype=torch.float32, device=None) -> Tensor:
    """The discrete set ``{y_0, ..., y_n} = {0, Delta, ..., reg_max}`` (stride units): ``i * Delta``
    (exact in floating point for every Delta of Table 2c; for Delta = 1 the same values as
    mmdet's ``Integral.project = linspace(0, reg_max, reg_max + 1)``).

    Returns:
        ``(n + 1,)`` tensor.
    """
    return torch.arange(num_bins(reg_max, bin_width), dtype=dtype, device=device) * bin_width


def reg_distribution(reg_logits: Tensor, bins: int) -> Tensor:
    """Per-side discrete distribution ``P(y_i) = softmax`` (Sec. 3, before Eq. 5).

    Args:
        reg_logits: ``(..., 4 * bins)`` regression logits, side-major
            (``l`` bins, then ``t``, ``r``, ``b``) as GFLHead lays them out.
        bins: ``n + 1``.

    Returns:
        ``(..., 4, bins)`` probabilities (kept for Fig. 3 style plots).
    """
    lead = reg_logits.shape[:-1]
    probs = F.softmax(reg_logits.reshape(-1, bins), dim=1)
    return probs.reshape(*lead, 4, bins)


def integral(reg_logits: Tensor, reg_max: float = 16, bin_width: float = 1.0) -> Tensor:
    r"""Expected distance per side from the General distribution (Eq. 5).

    .. math:: \hat{y} = \sum_{i=0}^{n} P(y_i)\, y_i,\qquad y_i = i\,\Delta

    ``P = softmax`` over the ``n + 1 = reg_max / Delta + 1`` bins of each side;
    the result is in stride units in ``[0, reg_max]`` (the caller multiplies by
    the stride, or divides the anchor centres by it, as GFLHead). mmdet's
    ``Integral`` computes the same sum as ``F.linear(softmax, project)``; the
    elementwise product summed here differs from it by float32 rounding only
    (≤ 2e-6 in the parity tests), and is the form the engine has always trained with.

    Args:
        reg_logits: ``(..., 4 * (n + 1))`` logits.
        reg_max: ``y_n``.
        bin_width: ``Delta``.

    Returns:
        ``(..., 4)`` distances ``(l, t, r, b)``.
    """
    bins = num_bins(reg_max, bin_width)
    if reg_logits.size(-1) != 4 * bins:
        raise ValueError(f"expected last dim 4 * {bins} = {4 * bins}, got {reg_logits.size(-1)}")
    probs = reg_distribution(reg_logits, bins)
    values = bin_values(reg_max, bin_width, dtype=probs.dtype, device=reg_logits.device)
    return (probs * values).sum(-1)


def dfl_target(
    distances: Tensor,
    reg_max: float = 16,
    bin_width: float = 1.0,
    eps: float = 0.1,
) -> Tensor:
    """DFL target in bins from distances in stride units.

    ``target = clamp(distance / Delta, 0, (n + 1 - 1) - eps)`` where ``n + 1`` is
    :func:`num_bins`. For ``Delta = 1`` this equals mmdet's
    ``bbox2distance(points, boxes, max_dis=reg_max, eps=0.1)`` clamp
    ``[0, reg_max - 0.1]`` bit for bit (it is idempotent on already-clamped
    values). For ``Delta != 1`` the eps margin is kept at 0.1 *in bin units*
    (i.e. ``0.1 * Delta`` in stride units) so that ``floor(target) + 1`` is
    always a valid bin -- a choice of this repo, since mmdet hard-codes
    ``Delta = 1``.

    Args:
        distances: ``(...)`` distances ``>= 0`` in stride units (e.g. the
            ``(M, 4)`` output of ``bbox2distance`` on stride-normalised boxes).
        reg_max: ``y_n``.
        bin_width: ``Delta``.
        eps: margin below the last bin.

    Returns:
        Same shape, targets in bins for :func:`distribution_focal_loss`.
    """
    last = num_bins(reg_max, bin_width) - 1
    return (distances / bin_width).clamp(min=0, max=last - eps)

