"""The confidence's calibration (kernel): per-level accuracy with a Beta(1, 1) prior, monotone in agreement;
ECE, Brier and reliability bins against hand-computed values; the file beside the model."""
import pytest

from edgedistill import UserError
from edgedistill.calibration import (brier_score, calibration_path_for, expected_calibration_error, fit_calibration,
                                     load_calibration, pool_adjacent_violators, reliability_bins, save_calibration)


def test_fit_is_smoothed_accuracy_per_agreement_level():
    # k = 2: level 0 has 4 questions (1 right), level 1 none, level 2 has 8 (7 right)
    cal = fit_calibration([0] * 4 + [2] * 8, [True] + [False] * 3 + [True] * 7 + [False], k=2, temperature=0.7)
    assert cal.counts == [4, 0, 8] and cal.n == 12
    assert cal.probability(0) == pytest.approx(2 / 6, abs=1e-4)        # (1 + 1) / (4 + 2)
    assert cal.probability(2) == pytest.approx(8 / 10, abs=1e-4)       # (7 + 1) / (8 + 2)
    assert cal.probability(1) == pytest.approx(0.5, abs=1e-4)          # empty: the prior, already in order
    assert cal.probability(7) == cal.probability(2)                    # clamped to 0..k


def test_more_agreement_never_means_less_confidence():
    # level 1 is right less often than level 0 in this sample: pooled to their weighted mean
    assert pool_adjacent_violators([0.6, 0.2, 0.9], [10, 10, 5]) == pytest.approx([0.4, 0.4, 0.9])
    cal = fit_calibration([0] * 10 + [1] * 10, [True] * 5 + [False] * 5 + [True] + [False] * 9, k=1, temperature=1)
    assert cal.accuracy[0] == cal.accuracy[1] == pytest.approx((6 / 12 + 2 / 12) / 2, abs=1e-3)


def test_ece_brier_and_reliability_by_hand():
    confidences = [0.9, 0.9, 0.9, 0.9, 0.2, 0.2]
    corrects = [True, True, True, False, False, True]
    bins = reliability_bins(confidences, corrects, bins=10)
    assert [(b["n"], round(b["accuracy"], 4)) for b in bins] == [(2, 0.5), (4, 0.75)]
    # ECE = 2/6 * |0.2 - 0.5| + 4/6 * |0.9 - 0.75| = 0.1 + 0.1
    assert expected_calibration_error(confidences, corrects) == pytest.approx(0.2)
    # Brier = (3 * 0.01 + 0.81 + 0.04 + 0.64) / 6
    assert brier_score(confidences, corrects) == pytest.approx((0.03 + 0.81 + 0.04 + 0.64) / 6)
    assert reliability_bins([1.0], [True])[0]["hi"] == 1.0             # 1.0 lands in the last bin
    assert expected_calibration_error([], []) == 0.0


def test_file_beside_the_model_round_trips_and_damage_is_a_clear_error(tmp_path):
    gguf = tmp_path / "student-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    assert calibration_path_for(gguf).name == "student-Q4_K_M.gguf.calibration.json"
    assert calibration_path_for(tmp_path) == tmp_path / "calibration.json"
    cal = fit_calibration([0, 1, 2], [False, True, True], k=2, temperature=0.7, data="d.jsonl", model=str(gguf))
    save_calibration(cal, calibration_path_for(gguf))
    assert load_calibration(calibration_path_for(gguf)) == cal
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a calibration file"):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(UserError, match="no such calibration file"):
        load_calibration(tmp_path / "missing.json")


def test_likely_right_threshold_is_the_lowest_probability_whose_answers_were_90_percent_right_with_confidence():
    from edgedistill.calibration import likely_right_threshold, selective
    # levels 0..4 agreeing; at 4: 40 of 40 right, at 3: 38 of 40, at 2: 8 of 10
    agreements = [4] * 40 + [3] * 40 + [2] * 10
    corrects = [True] * 40 + [True] * 38 + [False] * 2 + [True] * 8 + [False] * 2
    calibration = fit_calibration(agreements, corrects, k=4, temperature=0.7)
    threshold = likely_right_threshold(calibration, agreements, corrects)
    # the 95% lower bound of the precision: levels 3-4 78/80 -> 0.927; levels 2-4 86/90 -> 0.905, also >= 0.9, but
    # level 2's own probability is 9/12 = 0.75: an answer at 75% is not "likely right", whatever carries the average
    assert calibration.probability(2) == 0.75 and calibration.probability(3) >= 0.9
    assert threshold == {"at": calibration.probability(3), "coverage": round(80 / 90, 4), "precision": round(78 / 80, 4)}
    # 27 of 30 is 90% as a point estimate but not with confidence: no level then
    few = [4] * 20 + [3] * 10
    assert likely_right_threshold(fit_calibration(few, [True] * 19 + [False] + [True] * 8 + [False] * 2, k=4,
                                                  temperature=0.7), few,
                                  [True] * 19 + [False] + [True] * 8 + [False] * 2)["at"] is None
    calibration.likely_right_at = threshold["at"]
    assert calibration.likely_right(3) and calibration.likely_right(4) and not calibration.likely_right(2)
    # judged on other questions: 2 marked (levels 3, 4), 1 of them right
    assert selective(calibration, [4, 3, 2, 0], [True, False, True, True]) == \
        {"likely_right_coverage": 0.5, "likely_right_precision": 0.5, "likely_right_n": 2}


def test_no_likely_right_when_no_level_is_90_percent_right():
    from edgedistill.calibration import likely_right_threshold, selective
    agreements, corrects = [4, 4, 3, 0], [True, False, True, False]
    calibration = fit_calibration(agreements, corrects, k=4, temperature=0.7)
    assert likely_right_threshold(calibration, agreements, corrects)["at"] is None
    assert selective(calibration, [4], [True])["likely_right_coverage"] == 0.0   # likely_right_at None: none marked


def test_the_app_finds_a_runs_calibration_through_its_manifest(tmp_path):
    """The eval stage keeps the calibration in its own folder and names it in the manifest; a model file of the run,
    given alone, finds it there; one with a file beside it (edgedistill eval --calibrate) takes that one."""
    import json
    from edgedistill.calibration import calibration_of
    run = tmp_path / "run"
    gguf = run / "export" / "student-Q6_K.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF")
    (run / "eval").mkdir()
    fitted = run / "eval" / "calibration-gguf.json"
    save_calibration(fit_calibration([2, 1], [True, False], k=2, temperature=0.7), fitted)
    assert calibration_of(gguf) is None                                           # no manifest yet
    (run / "manifest.json").write_text(json.dumps({"stages": {"eval": {"outputs": {
        "report": "x", "calibration": {"runs/elsewhere/export/student-Q6_K.gguf": "runs/elsewhere/eval/calibration-gguf.json"}}}}}))
    assert calibration_of(gguf) == fitted             # written from another working folder: found by name in the run
    assert calibration_of(run / "export" / "student-Q8_0.gguf") is None           # not the model it was fitted for
    beside = calibration_path_for(gguf)
    save_calibration(fit_calibration([1], [True], k=2, temperature=0.7), beside)
    assert calibration_of(gguf) == beside
    (run / "manifest.json").write_text("{not json")
    assert calibration_of(run / "export" / "student-Q8_0.gguf") is None           # a damaged manifest: none, no crash
