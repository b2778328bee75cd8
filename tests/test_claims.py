"""The claims' statistical rule on hand-made seed values (no result files)."""

from __future__ import annotations

import math

from gfl_repro.report.claims import (CONTRADICTED, INCONCLUSIVE, NOT_TESTED, REPRODUCED, RULE, evaluate_claim,
                                     within_tolerance)
from gfl_repro.specs.spec import Claim


def greater(a="A", b="B"):
    return Claim("greater", (a, b))


def test_difference_against_twice_the_pooled_standard_error():
    # s_a = s_b = 1 (3 seeds each): s_p = 1, SE = sqrt(1/3 + 1/3) = 0.816; 2 SE = 1.63
    base = [9.0, 10.0, 11.0]
    above = [v + 1.7 for v in base]
    v = evaluate_claim(greater(), {"A": above, "B": base}, {}, toy_scale=True)
    assert v.verdict == REPRODUCED and "d = +1.70, SE 0.82" in v.detail and "s_p 1.00 (4 df)" in v.detail
    close = [v + 1.5 for v in base]
    assert evaluate_claim(greater(), {"A": close, "B": base}, {}, True).verdict == INCONCLUSIVE
    assert evaluate_claim(greater(), {"A": base, "B": above}, {}, True).verdict == CONTRADICTED


def test_one_seed_per_row_is_always_inconclusive():
    v = evaluate_claim(greater(), {"A": [50.0], "B": [10.0]}, {}, True)
    assert v.verdict == INCONCLUSIVE and "SE unknown" in v.detail and "(0 df)" in v.detail


def test_a_row_without_results_is_not_tested():
    v = evaluate_claim(greater(), {"A": [1.0, 2.0], "B": []}, {}, True)
    assert v.verdict == NOT_TESTED and v.detail == "no result yet for B"


def test_order_and_best_need_every_comparison():
    values = {"A": [12.0, 12.2, 12.4], "B": [11.0, 11.2, 11.4], "C": [10.0, 10.2, 10.4]}  # s_p = 0.2
    assert evaluate_claim(Claim("order", ("A", "B", "C")), values, {}, True).verdict == REPRODUCED
    assert evaluate_claim(Claim("order", ("A", "C", "B")), values, {}, True).verdict == CONTRADICTED
    best = evaluate_claim(Claim("best", ("B", "A", "C")), values, {}, True)
    assert best.verdict == CONTRADICTED and best.detail.startswith("smallest: B − A: d = -1.00")


def test_flat_within_a_bound():
    tight = {"A": [40.0, 40.1, 40.2], "B": [40.05, 40.15, 40.25]}  # s_p 0.1, SE 0.082
    claim = Claim("flat", ("A", "B"), within=0.3)
    assert evaluate_claim(claim, tight, {}, True).verdict == REPRODUCED  # 0.05 + 0.16 <= 0.3
    apart = {"A": [40.0, 40.1, 40.2], "B": [41.0, 41.1, 41.2]}
    assert evaluate_claim(claim, apart, {}, True).verdict == CONTRADICTED  # 1.0 - 0.16 > 0.3
    near = {"A": [40.0, 40.1, 40.2], "B": [40.25, 40.35, 40.45]}
    assert evaluate_claim(claim, near, {}, True).verdict == INCONCLUSIVE


def test_reference_numbers_only_outside_toy_scale():
    claim = greater("A", "Ref")
    values = {"A": [45.0, 45.2, 45.4]}
    assert evaluate_claim(claim, values, {"Ref": 43.6}, toy_scale=True).verdict == NOT_TESTED
    v = evaluate_claim(claim, values, {"Ref": 43.6}, toy_scale=False)
    assert v.verdict == REPRODUCED  # d = 1.6, SE = 0.2 / sqrt(3)
    assert f"SE {0.2 / math.sqrt(3):.2f}" in v.detail


def test_tolerance_and_rule_text():
    assert within_tolerance([39.6, 39.8], 40.0) is True  # mean 39.7: |−0.3| <= 0.3
    assert within_tolerance([39.5], 40.0) is False
    assert within_tolerance([], 40.0) is None and within_tolerance([1.0], None) is None
    assert "2·SE" in RULE and "pooled" in RULE


def test_sample_values_are_not_modified():
    values = {"A": [2.0, 3.0], "B": [1.0, 1.5]}
    evaluate_claim(greater(), values, {}, True)
    assert values == {"A": [2.0, 3.0], "B": [1.0, 1.5]}
