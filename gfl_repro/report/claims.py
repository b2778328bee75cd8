"""The paper's claims, checked over seeds; and the paper-profile tolerance verdict per row.

A claim (:class:`gfl_repro.specs.spec.Claim`) compares rows of one table on one metric. Each
comparison of two rows a and b uses the seeds that are done:

* ``d`` = mean(a) − mean(b), the difference of the seed means;
* ``s_p`` = the seed standard deviation pooled over the claim's trained rows,
  ``s_p² = Σ (n_i − 1) s_i² / Σ (n_i − 1)``, with ``df = Σ (n_i − 1)`` degrees of freedom;
* ``SE = s_p · √(1/n_a + 1/n_b)`` (a reference row is the paper's number: no seed noise, its
  ``1/n`` term is 0);
* a comparison is *significant* when ``|d| > 2 · SE`` (:data:`THRESHOLD`).

``greater`` / ``order`` / ``best``: reproduced when every comparison the claim makes is
significant in the claimed direction, contradicted when any is significant against it,
inconclusive otherwise. ``flat`` (every two rows within ``w``): reproduced when every pair has
``|d| + 2·SE ≤ w``, contradicted when some pair has ``|d| − 2·SE > w``, inconclusive otherwise.
With fewer than :data:`MIN_DF` degrees of freedom (e.g. one seed per row) there is no noise
estimate and every claim is inconclusive. A claim whose rows have no result yet is "not
tested"; so is a claim against the paper's own numbers at toy scale.

At a profile that is not toy scale, each trained row also gets a tolerance verdict:
``|mean − paper| ≤ 0.3`` AP (:data:`TOLERANCE_AP`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..specs.spec import Claim

THRESHOLD = 2.0
MIN_DF = 2
TOLERANCE_AP = 0.3
REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED = "reproduced", "contradicted", "inconclusive", "not tested"

RULE = (f"d = difference of the seed means; SE = s_p·√(1/n_a + 1/n_b), s_p = the seed standard deviation pooled "
        f"over the claim's rows; a claim is reproduced when every comparison it makes has d > {THRESHOLD:g}·SE in "
        f"the claimed direction, contradicted when one has d < −{THRESHOLD:g}·SE, inconclusive otherwise "
        f"(always while s_p has fewer than {MIN_DF} degrees of freedom, e.g. one seed per row); "
        f"\"flat within w\": reproduced when every pair has |d| + {THRESHOLD:g}·SE ≤ w, contradicted when one has "
        f"|d| − {THRESHOLD:g}·SE > w")
TOLERANCE_RULE = f"|ours − paper| ≤ {TOLERANCE_AP:g} AP (mean over the seeds done)"


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str  # REPRODUCED / CONTRADICTED / INCONCLUSIVE / NOT_TESTED
    detail: str  # the numbers behind it, one line


@dataclass(frozen=True)
class _Noise:
    sd: float | None  # pooled seed standard deviation; None without enough degrees of freedom
    df: int


def _pooled(samples: list[list[float]]) -> _Noise:
    df = sum(len(s) - 1 for s in samples if len(s) >= 2)
    if df < MIN_DF:
        return _Noise(None, df)
    ss = sum((len(s) - 1) * statistics.variance(s) for s in samples if len(s) >= 2)
    return _Noise(math.sqrt(ss / df), df)


def _mean_n(values: list[float] | float) -> tuple[float, float]:
    """(mean, 1/n): a reference number has no seed noise (1/n = 0)."""
    if isinstance(values, list):
        return statistics.fmean(values), 1.0 / len(values)
    return float(values), 0.0


def _compare(a, b, noise: _Noise) -> tuple[float, float | None]:
    """(d, SE) of a − b; SE None without a noise estimate."""
    mean_a, inv_a = _mean_n(a)
    mean_b, inv_b = _mean_n(b)
    se = None if noise.sd is None else noise.sd * math.sqrt(inv_a + inv_b)
    return mean_a - mean_b, se


def _sign(d: float, se: float | None) -> int:
    """+1 / −1 when d is significantly above / below 0, else 0."""
    if se is None:
        return 0
    if d > THRESHOLD * se:
        return 1
    if d < -THRESHOLD * se:
        return -1
    return 0


def _fmt(d: float, se: float | None) -> str:
    return f"d = {d:+.2f}" + (f", SE {se:.2f}" if se is not None else ", SE unknown")


def evaluate_claim(claim: Claim, samples: dict[str, list[float]], references: dict[str, float],
                   toy_scale: bool) -> Verdict:
    """Judge one claim.

    Args:
        samples: trained row (display name) -> its metric over the seeds done (may be empty).
        references: reference row -> the paper's number (rows that are never trained).
        toy_scale: the profile's numbers are not comparable with the paper's.
    """
    values: dict[str, list[float] | float] = {}
    missing = []
    for name in claim.rows:
        if name in references:
            values[name] = references[name]
        elif samples.get(name):
            values[name] = list(samples[name])
        else:
            missing.append(name)
    if missing:
        return Verdict(claim, NOT_TESTED, f"no result yet for {', '.join(missing)}")
    if toy_scale and any(name in references for name in claim.rows):
        return Verdict(claim, NOT_TESTED, "toy scale: ours cannot be compared with the paper's own numbers")
    noise = _pooled([v for v in values.values() if isinstance(v, list)])
    seeds = ", ".join(f"{len(v)}" for v in values.values() if isinstance(v, list))
    tail = f"; seeds per row {seeds}; s_p " + (f"{noise.sd:.2f} ({noise.df} df)" if noise.sd is not None
                                                 else f"unknown ({noise.df} df)")
    if claim.kind == "flat":
        return _flat(claim, values, noise, tail)
    if claim.kind == "greater" or claim.kind == "order":
        pairs = list(zip(claim.rows, claim.rows[1:]))
    else:  # best: the first row against every other
        pairs = [(claim.rows[0], other) for other in claim.rows[1:]]
    results = [(a, b, *_compare(values[a], values[b], noise)) for a, b in pairs]
    signs = [_sign(d, se) for _, _, d, se in results]
    verdict = CONTRADICTED if -1 in signs else REPRODUCED if all(s == 1 for s in signs) else INCONCLUSIVE
    if len(results) == 1:
        detail = _fmt(results[0][2], results[0][3])
    else:  # the comparison closest to failing
        a, b, d, se = min(results, key=lambda r: r[2])
        detail = f"smallest: {a} − {b}: {_fmt(d, se)}"
    return Verdict(claim, verdict, detail + tail)


def _flat(claim: Claim, values: dict, noise: _Noise, tail: str) -> Verdict:
    within = claim.within
    pairs = [(a, b) for i, a in enumerate(claim.rows) for b in claim.rows[i + 1:]]
    compared = [_compare(values[a], values[b], noise) for a, b in pairs]
    means = [_mean_n(v)[0] for v in values.values()]
    spread = max(means) - min(means)
    if noise.sd is None:
        verdict = INCONCLUSIVE
    elif any(abs(d) - THRESHOLD * se > within for d, se in compared):
        verdict = CONTRADICTED
    elif all(abs(d) + THRESHOLD * se <= within for d, se in compared):
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    largest_se = max((se for _, se in compared if se is not None), default=None)
    detail = f"spread of the means {spread:.2f} (w = {within:g})" + (
        f", largest SE {largest_se:.2f}" if largest_se is not None else "")
    return Verdict(claim, verdict, detail + tail)


def evaluate_claims(claims, samples: dict[str, list[float]] | dict[str, dict[str, list[float]]],
                    references: dict[str, dict[str, float]], toy_scale: bool) -> list[Verdict]:
    """Every claim, each on its own metric: ``samples[metric][row]`` and ``references[metric][row]``."""
    return [evaluate_claim(c, samples.get(c.metric, {}), references.get(c.metric, {}), toy_scale) for c in claims]


def within_tolerance(ours: list[float], paper: float | None) -> bool | None:
    """True / False: the seed mean is / is not within :data:`TOLERANCE_AP` of the paper's AP;
    None when either is missing."""
    if not ours or paper is None:
        return None
    return abs(statistics.fmean(ours) - paper) <= TOLERANCE_AP + 1e-6  # printed to 0.1: no float edge


__all__ = ["CONTRADICTED", "INCONCLUSIVE", "MIN_DF", "NOT_TESTED", "REPRODUCED", "RULE", "THRESHOLD", "TOLERANCE_AP",
           "TOLERANCE_RULE", "Verdict", "evaluate_claim", "evaluate_claims", "within_tolerance"]
