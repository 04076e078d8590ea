"""The confidence signals and their fitted combination (edgedistill/confidence.py), against hand-computed values;
the calibration file that carries the combination; the app reading it."""
import math

import pytest

from edgedistill import UserError
from edgedistill.calibration import fit_calibration, load_calibration, save_calibration
from edgedistill.confidence import (Signals, cross_fitted, fit_combined, fit_logistic, grounded, precision_coverage,
                                    sane, selective, signals_of, signals_of_rows, threshold_for, vetoed, wilson_lower)
from edgedistill.records import Question
from edgedistill.results import ResultRow

SCRAP = Question(id="scrap", question="We scrap 3% of 4,500 castings. How many good castings do we get?",
                 answer="4365", answer_type="number")


def test_grounded_reads_the_questions_numbers_percentages_and_unit_constants():
    assert grounded("4500*(1-0.03)", SCRAP) and grounded("4500*0.97", SCRAP) and grounded("4500-4500*3/100", SCRAP)
    assert grounded("4500/60", SCRAP)                 # a unit constant (minutes in an hour)
    assert not grounded("4500*0.03*8", SCRAP)         # 8 comes from nowhere in the question
    assert not grounded("4400*0.97", SCRAP)           # a misread number
    assert grounded(None, SCRAP)                      # no computation: nothing brought in
    twelve = Question(id="w", question="A crate holds twelve boxes. How many boxes in 3 crates?", answer="36")
    assert grounded("12*3", twelve)                   # numbers written as words count


def test_sane_answers_read_as_their_type():
    assert sane("4365", SCRAP) and sane("0", SCRAP)
    assert not sane("-135", SCRAP)                    # a subtraction the wrong way round
    assert not sane(None, SCRAP) and not sane("no idea", SCRAP)
    choice = Question(id="c", question="Which?", answer="B", answer_type="choice", options=["A. x", "B. y"])
    assert sane("B", choice) and not sane("E", choice)


def test_signals_of_one_answer_by_hand():
    greedy = "Answer: <<4500*(1-0.03)=4365>>\nReason: 97% of 4500 are good."
    sampled = ["Answer: <<4500*(1-0.03)=4365>>", "<<4500*0.97=4365>>", "Answer: <<4500*0.03=135>>", None]
    signals = signals_of(SCRAP, greedy, sampled)
    # 2 of 4 samples reach 4365; 1 of those writes the greedy expression; 4500 and 0.03 are the question's
    assert signals == Signals(agreement=0.5, expression_agreement=0.25, grounded=1.0, sane=1.0)
    invented = signals_of(SCRAP, "Answer: <<4500*0.03*8=1080>>", ["Answer: <<4500*0.03*8=1080>>"])
    assert invented == Signals(agreement=1.0, expression_agreement=1.0, grounded=0.0, sane=1.0)
    assert signals_of(SCRAP, "no answer line", ["x"]) == Signals(0.0, 0.0, 1.0, 0.0)


def test_signals_of_stored_rows_read_each_with_its_question():
    rows = [ResultRow(id="scrap", reference="4365", predicted="4365", correct=True, text="Answer: <<4500*0.97=4365>>",
                      sampled=["<<4500*0.97=4365>>", "<<4500=4500>>"])]
    assert signals_of_rows(rows, [SCRAP]) == [Signals(0.5, 0.5, 1.0, 1.0)]


def test_logistic_fit_recovers_the_log_odds_by_hand():
    # one signal: right 3 times in 4 when it is 1, once in 4 when it is 0. Unpenalised, the fit is exact:
    # bias = log(1/3), weight = log(3) - log(1/3) = 2 log 3
    features = [[1.0]] * 4 + [[0.0]] * 4
    corrects = [True, True, True, False, True, False, False, False]
    (weight,), bias = fit_logistic(features, corrects, l2=0.0)
    assert bias == pytest.approx(-math.log(3), abs=1e-6) and weight == pytest.approx(2 * math.log(3), abs=1e-6)
    # the penalty shrinks the weight toward 0 and keeps a perfectly separating signal finite
    (shrunk,), _ = fit_logistic(features, corrects, l2=4.0)
    assert 0 < shrunk < weight
    (separating,), _ = fit_logistic([[1.0], [0.0]] * 5, [True, False] * 5, l2=1.0)
    assert math.isfinite(separating) and separating > 1


def test_combined_probability_is_the_sigmoid_of_the_fitted_score():
    signals = [Signals(1.0, 1.0, 1.0, 1.0)] * 6 + [Signals(0.25, 0.0, 0.0, 1.0)] * 6
    corrects = [True] * 5 + [False] + [False] * 5 + [True]
    model = fit_combined(signals, corrects)
    z = model.bias + sum(model.weights)
    assert model.probability(signals[0]) == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-4)
    assert model.probability(signals[0]) > 0.6 > 0.4 > model.probability(signals[-1])


def test_cross_fitted_probabilities_never_see_their_own_answer():
    signals = [Signals(i % 5 / 4, i % 3 / 2, float(i % 2), 1.0) for i in range(20)]
    corrects = [i % 5 >= 2 for i in range(20)]
    before = cross_fitted(signals, corrects, folds=5)
    flipped = list(corrects)
    flipped[7] = not flipped[7]
    after = cross_fitted(signals, flipped, folds=5)
    assert after[7] == before[7]                              # its own label played no part in its probability
    assert any(a != b for i, (a, b) in enumerate(zip(before, after)) if i != 7)   # it did in the others'


def test_likely_right_needs_evidence_of_90_percent_not_a_point_estimate():
    # one-sided 95% Wilson lower bound of r right of n, by hand for 31 of 31:
    # (1 + z^2/2n - z sqrt(z^2/4n^2)) / (1 + z^2/n) = 1 / (1 + z^2/n), z = 1.645
    assert wilson_lower(31, 31) == pytest.approx(1 / (1 + 1.645 ** 2 / 31), abs=1e-9)
    assert wilson_lower(31, 31) > 0.9 > wilson_lower(24, 24) and wilson_lower(42, 46) < 0.9
    probabilities = [0.95] * 31 + [0.9] * 4 + [0.8] * 11
    corrects = [True] * 31 + [True, False, False, True] + [True] * 10 + [False]
    # 31 of 31 at 0.95 is evidence of 90%; adding the 0.9s (33 of 35) or everything (43 of 46) is not
    assert threshold_for(probabilities, corrects) == {"at": 0.95, "coverage": round(31 / 46, 4), "precision": 1.0}
    # a point estimate of 91% (42 of 46) would have marked all: that threshold covered everything and was 83% right
    # on held-out questions harder than the fitting ones
    assert threshold_for([0.9] * 46, [True] * 42 + [False] * 4)["at"] is None
    assert threshold_for([0.99], [True])["at"] is None                 # 1 of 1 is no evidence


def test_vetoed_answers_are_never_likely_right_and_do_not_count_toward_the_threshold():
    ungrounded, fine = Signals(1.0, 1.0, 0.0, 1.0), Signals(1.0, 1.0, 1.0, 1.0)
    assert vetoed(ungrounded) and vetoed(Signals(1.0, 1.0, 1.0, 0.0)) and not vetoed(fine)
    probabilities, corrects = [0.95] * 35, [True] * 31 + [False] * 4
    vetoes = [False] * 31 + [True] * 4           # the four wrong ones used numbers the questions did not show
    assert threshold_for(probabilities, corrects)["at"] is None
    assert threshold_for(probabilities, corrects, vetoes=vetoes)["at"] == 0.95
    calibration = fit_calibration([2] * 31, [True] * 31, k=2, temperature=0.7)
    calibration.combined = fit_combined([fine] * 20 + [Signals(0.5, 0, 1, 1)] * 20, [True] * 20 + [False] * 20).to_dict()
    calibration.likely_right_at = 0.5
    found = selective(calibration, [fine, ungrounded, fine], [True, True, False])
    assert (found["likely_right_n"], found["likely_right_precision"]) == (2, 0.5)   # the ungrounded one is not marked
    top = found["precision_coverage"][0]            # nor counted above any threshold in the curve the report shows
    assert (top["coverage"], top["precision"]) == (0.6667, 0.5) and found["precision_coverage"][-1]["at"] == 0.0


def test_precision_coverage_curve_by_hand():
    probabilities = [0.95, 0.9, 0.8, 0.7, 0.6, 0.3]
    corrects = [True, True, True, True, False, False]
    curve = precision_coverage(probabilities, corrects, points=2)
    assert curve == [{"at": 0.8, "coverage": 0.5, "precision": 1.0},
                     {"at": 0.3, "coverage": 1.0, "precision": round(4 / 6, 4)}]


def test_calibration_file_carries_the_combination_and_refuses_a_damaged_one(tmp_path):
    calibration = fit_calibration([2, 1], [True, False], k=2, temperature=0.7)
    calibration.combined = fit_combined([Signals(1, 1, 1, 1), Signals(0.5, 0, 0, 1)], [True, False]).to_dict()
    save_calibration(calibration, tmp_path / "c.json")
    loaded = load_calibration(tmp_path / "c.json")
    strong, weak = Signals(1, 1, 1, 1), Signals(0.5, 0, 0, 1)
    assert loaded.probability_of(strong) > loaded.probability_of(weak)
    assert loaded.probability_of(strong) == calibration.probability_of(strong)
    plain = fit_calibration([2, 1], [True, False], k=2, temperature=0.7)       # without one: the agreement table
    assert plain.probability_of(Signals(0.5, 0, 0, 1)) == plain.probability(1)
    raw = (tmp_path / "c.json").read_text().replace('"grounded"', '"rm -rf"')
    (tmp_path / "bad.json").write_text(raw)
    with pytest.raises(UserError, match="not a fitted combination"):
        load_calibration(tmp_path / "bad.json")


def test_an_answer_below_90_percent_is_never_likely_right_however_easy_the_fitting_set():
    """Fitted on questions the student nearly always gets right, the precision above any threshold stays high, and
    the old rule took in answers the fit itself put at 10%."""
    probabilities = [0.95] * 60 + [0.6] * 10 + [0.1] * 5
    corrects = [True] * 60 + [True] * 9 + [False] + [True] * 4 + [False]
    found = threshold_for(probabilities, corrects)
    assert found["at"] == 0.95 and found["coverage"] == round(60 / 75, 4)
    assert threshold_for([0.89] * 100, [True] * 100)["at"] is None
