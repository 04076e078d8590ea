"""Labelled seeds: label-only targets, the teacher's rationales (explain, mask, check), and the packaged splits."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edgedistill import UserError
from edgedistill.config import Config
from edgedistill.records import Question, data_path, load_questions
from edgedistill.rundir import RationalizeFiles
from edgedistill.teacher import distill
from edgedistill.teacher.rationalize import answer_text, answer_words, clean_explanation, mask, run_rationalize, \
    write_rationalize_views

LABELS = ["Breakdown", "Leaking", "Plugged / choked"]


def fmc(i, text, label):
    return Question(id=f"wo-{i}", question=f'Maintenance work order: "{text}". Which failure mode is it? Answer with '
                                           f'one of:', answer=label, answer_type="label", options=LABELS)


def choice(i, answer="B"):
    return Question(id=f"mc-{i}", question="Which sensor shows a rotor winding fault in a motor?",
                    options=["A. oil debris", "B. current", "C. noise"], answer=answer, answer_type="choice")


class Scripted:
    """Explains by a script; answers the masked check by whatever the hint still says."""
    backend = "scripted"

    def __init__(self, explain):
        self.explain, self.generated_tokens, self.calls = explain, 0, []

    def generate(self, conversations, sampling, batch_size=16, progress=None):
        self.calls.append(conversations)
        out = []
        for messages in conversations:
            user = messages[-1]["content"]
            if "Hint:" in user:
                hint = user.split("Hint:", 1)[1].split("Options:")[0].lower()
                said = "Leaking" if "seep" in hint or "leak" in hint else "current" if "amps" in hint else "Breakdown"
                if "Options:" in user:   # a label set, asked as lettered options: answer with the letter
                    said = next(line[0] for line in user.split("Options:\n")[1].splitlines() if line.endswith(said))
                out.append(f"Answer: {said}")
            else:
                out.append(self.explain(user))
        self.generated_tokens += 5 * len(conversations)
        return out


def test_label_only_rows_are_trained_not_dropped(tmp_path):
    seeds = tmp_path / "wo.jsonl"
    seeds.write_text("".join(json.dumps(row) + "\n" for row in [
        {"question": "Work order: pump seal weeping. Failure mode?", "answer": "Leaking", "answer_type": "label",
         "options": LABELS},
        {"question": "Which sensor?", "answer": "B", "answer_type": "choice", "options": ["A. x", "B. y"]},
        {"question": "6 times 7?", "answer": "42"}]))
    config = Config()
    config.data.train, config.data.eval = str(seeds), "shopfloor:dev"
    summary = distill.run_teacher(config, tmp_path / "teacher")
    sft = [json.loads(line) for line in (tmp_path / "teacher" / "sft" / "train.jsonl").read_text().splitlines()]
    assert summary["kept"] == 3
    assert [r["completion"][0]["content"] for r in sft] == ["Answer: Leaking", "Answer: B. y", "Answer: 42"]
    assert [r["answer_type"] for r in sft] == ["label", "choice", "number"]


def test_masking_hides_the_answer_words_and_letter():
    q = fmc(1, "seal weeping", "Plugged / choked")
    assert answer_words(q) == {"plugged", "choked"}
    assert mask("The line was Plugged, then choked again and plugs up.", q) == "The line was ___, then ___ again and plugs up."
    mc = choice(1)
    assert answer_text(mc) == "B. current"
    assert mask("The current rises (B); option B is right. Currents show it.", mc) == \
        "The ___ rises ___; ___ is right. ___ show it."
    assert clean_explanation("Reason: It leaks. The seal is worn. And th") == "It leaks. The seal is worn."
    from edgedistill.teacher.rationalize import checked_answer
    labels = fmc(1, "seal weeping", "Leaking")                  # options: Breakdown, Leaking, Plugged / choked
    assert [checked_answer(t, labels) for t in ("Answer: B", "Answer: <B>", "Answer: leaking", "Answer: Z")] == \
        ["Leaking", "Leaking", "Leaking", "Z"]          # Z names no option: kept as said, judged wrong


def test_round_keeps_what_the_masked_hint_leads_back_to_and_resumes(tmp_path):
    seeds = [fmc(1, "seal weeping", "Leaking"), fmc(2, "hose burst", "Leaking"), choice(3),
             Question(id="n-4", question="6 times 7?", answer="42")]

    def explain(user):
        if "seal weeping" in user:
            return "Fluid seeps out past the worn seal, so it is leaking. The seal needs replacing."
        if "hose burst" in user:
            return "The hose is leaking, leaking."                          # says nothing once masked
        return "Winding faults change the amps the motor draws, which the current sensor reads."

    config = Config()
    config.teacher.rationalize.batch_size = 2
    files = RationalizeFiles(tmp_path / "rationalize")
    teacher = Scripted(explain)
    run_rationalize(config, seeds, files, teacher, "scripted")
    rows = {r["id"]: r for r in map(json.loads, files.log.read_text().splitlines())}
    assert set(rows) == {"wo-1~r0", "wo-2~r0", "mc-3~r0"}                      # numbers are not in answer_types
    assert "rejected" not in rows["wo-1~r0"] and "leaking" not in rows["wo-1~r0"]["masked"].lower()
    assert rows["wo-2~r0"]["rejected"] == "says little besides the answer"
    assert rows["mc-3~r0"]["predicted"] == "current" and "rejected" not in rows["mc-3~r0"]
    assert rows["wo-1~r0"]["teacher"]["prompt_sha256"] and rows["wo-1~r0"]["teacher"]["seed"] is not None
    # the closed label set is in the system turn (prefilled once per batch), the work order in the user turn
    assert "Plugged / choked" in teacher.calls[0][0][0]["content"] and "seal weeping" in teacher.calls[0][0][1]["content"]
    explained = write_rationalize_views(seeds, files)
    assert [q.rationale is not None for q in explained] == [True, False, True, False]
    assert json.loads(files.summary.read_text())["kept_by_answer_type"] == {"choice": "1/1", "label": "1/2"}
    calls = len(teacher.calls)
    run_rationalize(config, seeds, files, teacher, "scripted")                  # all written: nothing to redo
    assert len(teacher.calls) == calls


def test_a_killed_round_resumes_to_the_same_log(tmp_path):
    """kill -9 mid-round: the rerun writes only the missing chunks, and the log equals an uninterrupted run's."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_rationalize import Scripted, fmc
        from edgedistill.config import Config
        from edgedistill.rundir import RationalizeFiles
        from edgedistill.teacher.rationalize import run_rationalize
        slow = sys.argv[2] == "slow"
        class Slow(Scripted):
            def generate(self, conversations, *a, **k):
                if slow and len(self.calls) >= 2:
                    time.sleep(30)
                return super().generate(conversations, *a, **k)
        seeds = [fmc(i, f"seal weeping {{i}}", "Leaking") for i in range(6)]
        config = Config()
        config.teacher.rationalize.batch_size = 2
        run_rationalize(config, seeds, RationalizeFiles(sys.argv[1]),
                        Slow(lambda u: "Fluid seeps out past the worn seal, it is leaking badly."), "scripted")
    """)
    path = tmp_path / "round.py"
    path.write_text(script)
    killed = subprocess.Popen([sys.executable, str(path), str(tmp_path / "a"), "slow"])
    log = tmp_path / "a" / "log.jsonl"
    for _ in range(300):
        if log.exists() and log.read_text().count("\n") >= 2:
            break
        subprocess.run(["sleep", "0.1"])
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert log.read_text().count("\n") == 2
    subprocess.run([sys.executable, str(path), str(tmp_path / "a"), "fast"], check=True)
    subprocess.run([sys.executable, str(path), str(tmp_path / "b"), "fast"], check=True)
    first = sorted(log.read_text().splitlines())
    assert first == sorted((tmp_path / "b" / "log.jsonl").read_text().splitlines()) and len(first) == 6


def test_rationalize_needs_a_model():
    from edgedistill.config import ConfigValueError
    config = Config()
    config.teacher.rationalize.enabled = True
    with pytest.raises(ConfigValueError, match="teacher.rationalize"):
        config.teacher.check()


def test_packaged_task_splits_load_and_unknown_ones_say_what_exists():
    fmc_train, fsiq_dev = load_questions("fmc:train"), load_questions("fsiq:dev")
    assert fmc_train[0].answer_type == "label" and len(fmc_train[0].options) == 22
    assert fsiq_dev[0].answer_type == "choice" and fsiq_dev[0].answer in "ABCDE"
    with pytest.raises(UserError, match="fsiq:train"):
        data_path("fsiq:nonsense")
    # an untrained model's worked examples come from the benchmark's own task
    from edgedistill.datasets import worked_examples
    assert [q.answer_type for q in worked_examples("fsiq:dev", 2)] == ["choice", "choice"]
    assert worked_examples("fmc:dev", 1)[0].id == "fmc-train-1"
    assert worked_examples("../shared/data/gsm8k/train.jsonl", 1)[0].id.startswith("shop")
    assert worked_examples("fmc:dev", 0) == []


def test_macro_f1_and_mcnemar_by_hand():
    from edgedistill.label_metrics import macro_f1, mcnemar
    # labels a, b: a has tp 2, fn 0, fp 1 -> F1 4/5; b has tp 1, fn 1 -> F1 2/3; macro (0.8 + 0.6667) / 2
    assert macro_f1(["a", "a", "b", "b"], ["a", "a", "b", "a"]) == pytest.approx((0.8 + 2 / 3) / 2)
    assert macro_f1(["a", "b"], [None, None]) == 0.0
    # always the majority label: accuracy 3/4 but macro-F1 (6/7 + 0) / 2
    assert macro_f1(["a", "a", "a", "b"], ["a", "a", "a", "a"]) == pytest.approx(3 / 7)
    # b = 6 right only by the first, c = 0: p = 2 * (1/2)^6 = 0.03125; a tie b = c = 3 gives p = 1
    first = {f"q{i}": True for i in range(10)}
    second = {f"q{i}": i >= 6 for i in range(10)}
    assert mcnemar(first, second) == {"n": 10, "only_first": 6, "only_second": 0, "p_value": 0.0312}
    tie = mcnemar({f"q{i}": i < 3 for i in range(6)}, {f"q{i}": i >= 3 for i in range(6)})
    assert tie["p_value"] == 1.0 and (tie["only_first"], tie["only_second"]) == (3, 3)


def test_a_changed_check_prompt_rechecks_the_log_without_explaining_again(tmp_path):
    seeds = [fmc(1, "seal weeping", "Leaking")]
    config = Config()
    files = RationalizeFiles(tmp_path / "rationalize")
    files.log.parent.mkdir(parents=True)
    old = {"id": "wo-1~r0", "question_id": "wo-1", "answer_type": "label", "text": "t",
           "rationale": "Fluid seeps out past the worn seal, so it is leaking.",
           "masked": "Fluid seeps out past the worn seal, so it is ___.", "check": "Answer: Breakdown",
           "predicted": "Breakdown", "rejected": "the masked explanation does not lead to the gold answer",
           "check_version": "an older check", "teacher": {"model": "m"}}
    files.log.write_text(json.dumps(old) + "\n")
    teacher = Scripted(lambda user: pytest.fail("explained again"))
    run_rationalize(config, seeds, files, teacher, "scripted")
    assert len(teacher.calls) == 1 and "Hint:" in teacher.calls[0][0][-1]["content"]    # one call: the check
    (explained,) = write_rationalize_views(seeds, files)
    assert explained.rationale == old["rationale"]                                      # the last row counts
    run_rationalize(config, seeds, files, teacher, "scripted")
    assert len(teacher.calls) == 1                                                      # now settled

