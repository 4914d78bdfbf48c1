"""pass@k and cons@k against hand-computed cases."""

from __future__ import annotations

import pytest

from distill.eval.metrics import majority, pass_at_k, problem_scores, summarize


def test_pass_at_k_hand_computed():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # C(3,3)/C(5,3)
    assert pass_at_k(5, 3, 3) == 1.0  # fewer than k wrong samples: every draw has a right one
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_pass_at_1_equals_mean_accuracy():
    for n in range(1, 7):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n)


def test_majority_and_cons():
    assert majority(["3", "4", "4", None]) == "4"
    assert majority(["3", "4", "4", "3"]) == "3"  # tie: the earliest answer to reach the top count
    assert majority([None, ""]) is None
    s = problem_scores([False, True, True, False], ["5", "7", "7", "5"], k=4)
    assert s == {"avg": 0.5, "pass": 1.0, "cons": 0.0}  # "5" wins the tie and is wrong
    s = problem_scores([True, None, True, False], ["7", None, "7", "2"], k=2)
    assert s["avg"] == 0.5 and s["cons"] == 1.0 and s["pass"] == pytest.approx(1 - 1 / 6)


def test_summarize():
    per = [{"avg": 1.0, "pass": 1.0, "cons": 1.0}, {"avg": 0.0, "pass": 0.0, "cons": 0.0}]
    s = summarize(per, [10, 20, 30, 40], [False, False, False, True])
    assert s["avg@k"] == 0.5 and s["median_tokens"] == 25 and s["truncation_rate"] == 0.25
