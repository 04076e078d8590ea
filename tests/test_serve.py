"""The app: streams answer, computation and reasoning, measures a calibrated confidence, records feedback the
teacher can read, answers through its API (gradio_client), binds 127.0.0.1, refuses the LAN without a login."""
import socket

import pytest
import torch

from edgedistill import UserError
from edgedistill.calibration import fit_calibration
from edgedistill.config import ServeConfig
from edgedistill.generation import Token
from edgedistill.records import load_questions
from edgedistill.formats import computations, readable, split_stream
from edgedistill.serve.answering import QA, band
from edgedistill.serve.app import build_app, confidence_markdown
from edgedistill.serve.feedback import FeedbackLog
from edgedistill.serve.server import parse_auth, serve
from edgedistill.serve.process import free_port

GREEDY = "Answer: <<48*7.5=360>>\nReason: 48 an hour for 7.5 hours: <<48*7.5=360>> housings."


class ScriptedGenerator:
    """Stands in for a model: the greedy stream writes GREEDY a few characters at a time, each with probability
    0.9 (the calculator's value with none); samples return answers from a list."""
    backend = "scripted"

    def __init__(self, sampled):
        self.sampled = sampled

    def generate(self, conversations, sampling, batch_size=1, progress=None):
        assert sampling.temperature > 0 and sampling.stop_after_answer
        return [f"Answer: <<{a}=>>" if a != "x" else "no idea" for a in self.sampled][:len(conversations)]


def scripted_stream(generator, messages, sampling):
    text = GREEDY if not sampling.stop_after_answer else GREEDY.split("\n")[0] + "\n"
    for end in range(4, len(text) + 4, 4):
        yield Token(text[:end], None if "=3" in text[end - 4:end] else 0.9)


@pytest.fixture
def qa(monkeypatch):
    monkeypatch.setattr("edgedistill.serve.scheduler.stream_completion", scripted_stream)
    return lambda sampled, calibration=None: QA(ScriptedGenerator(sampled), ServeConfig(samples=len(sampled)),
                                                calibration)


def test_stream_shows_the_answer_first_then_the_reasoning(qa):
    steps = [text for text, _ in qa(["360"]).ask("How many?", answer_only=False).stream()]
    shown = [split_stream(t) for t in steps]
    first_reasoning = next(i for i, (_, reasoning, _) in enumerate(shown) if reasoning)
    assert all(done for _, _, done in shown[first_reasoning:])        # the reasoning only after the Answer line
    answer, reasoning, _ = shown[-1]
    assert readable(answer) == "360" and readable(reasoning) == "48 an hour for 7.5 hours: 360 housings."
    assert readable("Answer: <<48*7") == "Answer: "                   # a half-written computation is hidden
    assert computations(steps[-1]) == "Computation: `48*7.5 = 360`"


class CharModel:
    """A character-level model with the single-row decode the app streams from: it always writes `script` (GREEDY)
    in full and stops only when a decoding rule (the calculator, the end of the Answer line) makes it."""
    backend, eos = "scripted", {0}

    def __init__(self, script: str = GREEDY):
        self.script = script
        self.fed = []                                               # every token the app ran through the model

    def prompt_ids(self, messages):
        return [1]

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def single_row(self, ids, max_new_tokens=0):
        self.fed = []

        def logits():
            written = len(self.fed)
            return torch.nn.functional.one_hot(torch.tensor([ord(self.script[written])
                                                             if written < len(self.script) else 0]), 256).float()

        def feed(token):
            self.fed.append(token)
            return logits()
        return logits(), feed


def test_answer_only_stops_decoding_at_the_answer_line():
    """Through the real decoding loop, not a stand-in: the same model writes the reasoning unless answer-only."""
    model = CharModel()
    qa = QA(model, ServeConfig(samples=0))
    full = [text for text, _ in qa.ask("How many?", answer_only=False).stream()]
    assert full[-1] == GREEDY and split_stream(full[-1])[1] == "48 an hour for 7.5 hours: <<48*7.5=360>> housings."
    only = [text for text, _ in qa.ask("How many?", answer_only=True).stream()]
    assert only[-1] == "Answer: <<48*7.5=360>>\n" and split_stream(only[-1])[1] == ""     # no reasoning shown
    assert model.decode(model.fed) == "Answer: <<48*7.5=360>>"      # nor decoded: nothing run after the newline


def test_confidence_is_agreement_mapped_through_the_calibration(qa):
    model = qa(["48*7.5", "48*7.5", "360", "48*8", "x"])
    reply = model.confidence(model.question("How many?"), "360", [0.9, 0.8], model.ask("How many?", True).reply.texts()[1:])
    assert (reply.agreeing, reply.samples, reply.probability) == (3, 5, 0.6)    # uncalibrated: raw agreement
    assert reply.token_probability == pytest.approx((0.9 * 0.8) ** 0.5)
    assert reply.others == ["384 (1)", "no answer (1)"]
    text = confidence_markdown(reply, supervisor_below=0.7)
    assert text.startswith("### Confidence 60% · unsure: check with a supervisor") and "Not calibrated" in text
    # calibrated: on 20 held-out questions, 3 of 5 agreeing was right 2 times in 10 -> (2 + 1) / (10 + 2)
    calibration = fit_calibration([3] * 10 + [5] * 10, [True] * 2 + [False] * 8 + [True] * 10, k=5,
                                  temperature=0.7, data="heldout.jsonl")
    reply = qa(["48*7.5", "48*7.5", "360", "48*8", "x"], calibration).ask("How many?", True).confidence("360")
    assert reply.probability == pytest.approx(0.25, abs=1e-3)
    text = confidence_markdown(reply, supervisor_below=0.6)
    assert "25%" in text and "Calibrated on 20 questions of `heldout.jsonl`" in text and "supervisor" in text


def test_bands():
    assert band(0.9, 0.6, likely_right_at=0.85) == "likely right"
    assert band(0.84, 0.6, likely_right_at=0.85).startswith("probably right")   # dev said 90% only from 0.85 on
    assert band(0.99, 0.6).startswith("probably right")          # no calibration that says so: never likely right
    assert band(0.65, 0.6).startswith("probably right")
    assert band(0.59, 0.6) == "unsure: check with a supervisor"


def test_feedback_rows_are_seed_questions_for_the_teacher(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl", "student.gguf", "number")
    assert "reference answer '360'" in log.record("48 an hour for 7.5 hours?", "360", "up")
    assert "reference answer '42'" in log.record("6 times 7?", "41", "down", correction="42")
    assert "without an answer" in log.record("Which bearing?", "12", "down")
    assert "question first" in log.record("  ", "12", "up")
    seeds = load_questions(tmp_path / "feedback.jsonl")            # what `teacher` reads, answers required
    assert [(q.question, q.answer) for q in seeds] == [("48 an hour for 7.5 hours?", "360"), ("6 times 7?", "42")]
    unanswered = load_questions(tmp_path / "feedback.unanswered.jsonl", need_answers=False)
    assert [q.question for q in unanswered] == ["Which bearing?"] and unanswered[0].answer is None


def test_computations_list_only_values_the_calculator_computed():
    # the calculator refused the expression, so the model wrote the value itself: not a computation
    assert computations("Answer: <<sqrt(-1)=7>>\nReason: roots") == "Computation: none"
    assert computations("Answer: <<2**999=12>>") == "Computation: none"
    # the model closed the annotation with its own (wrong, or differently written) number
    assert computations("Answer: <<6*7=41>>") == "Computation: none"
    assert computations("Answer: <<6*7=42.0>>") == "Computation: none"
    assert computations("Answer: <<6*7=42>> or <<6*8=47>>") == "Computation: `6*7 = 42`"
    # nothing computed on the Answer line: the reasoning's computations
    assert computations("Answer: <<sqrt(-1)=7>>\nReason: <<1/3=0.3333>> each") == "Computation: `1/3 = 0.3333`"


def page_event(app, elem_id):
    """The handler of a click on the component `elem_id`: (fn, input blocks, output blocks)."""
    button = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == elem_id)
    fn = next(f for f in app.fns.values() if any(target[0] == button._id for target in f.targets))
    return fn.fn, fn.inputs, fn.outputs


def click(app, page, elem_id):
    """Click `elem_id` as the browser would: inputs from `page` (block id -> value), the last outputs back into it."""
    fn, inputs, outputs = page_event(app, elem_id)
    result = fn(*[page[block._id] for block in inputs])
    if hasattr(result, "__next__"):
        *_, result = result
    for block, value in zip(outputs, result if len(outputs) > 1 else [result]):
        page[block._id] = value
    return result


def test_thumbs_record_the_question_answered_not_the_edited_box(qa, tmp_path):
    app, _ = build_app(qa(["360"]), FeedbackLog(tmp_path / "feedback.jsonl", "student.gguf", "number"), "student")
    page = {block_id: getattr(block, "value", None) for block_id, block in app.blocks.items()}
    box = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "question")
    page[box._id] = "48 an hour for 7.5 hours?"
    click(app, page, "ask")
    page[box._id] = "A new question, typed after the answer came"        # edited, not asked
    assert "reference answer '360'" in click(app, page, "thumbs-up")
    seeds = load_questions(tmp_path / "feedback.jsonl")
    assert [(q.question, q.answer) for q in seeds] == [("48 an hour for 7.5 hours?", "360")]


def test_feedback_refuses_oversized_texts_and_writes_nothing(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl", "student.gguf", "number")    # questions: serve's 2000 chars
    assert "limit is 2000" in log.record("x" * 10_000_000, "360", "up")
    assert "limit is 1000" in log.record("6 times 7?", "41", "down", correction="4" * 1_000_000)
    assert "limit is" in log.record("6 times 7?", "4" * 1_000_000, "up")
    assert not (tmp_path / "feedback.jsonl").exists() and not (tmp_path / "feedback.unanswered.jsonl").exists()
    assert "Thanks" in log.record("x" * 2000, "41", "down", correction="4" * 1000)      # at the limits: kept


def refuse_to_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the pre-flight checks")


def test_serve_refuses_a_port_in_use_before_loading_the_model(tmp_path, capsys):
    from edgedistill.cli import main
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            serve("student.gguf", ServeConfig(port=port, feedback=str(tmp_path / "feedback.jsonl")),
                  load=refuse_to_load)
        # the CLI: no traceback; a load before the check would fail on the missing file, not the port
        assert main(["serve", "--model", "student.gguf", "--port", str(port)]) == 2
    assert "edgedistill: error: cannot listen" in capsys.readouterr().err


def test_serve_refuses_an_unwritable_feedback_folder_before_loading_the_model(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    settings = ServeConfig(port=free_port(), feedback=str(tmp_path / "a-file" / "feedback.jsonl"))
    with pytest.raises(UserError, match="cannot write the feedback file .*--feedback"):
        serve("student.gguf", settings, load=refuse_to_load)
    with pytest.raises(UserError, match="cannot write the feedback file"):      # a folder where the file should be
        serve("student.gguf", ServeConfig(port=free_port(), feedback=str(tmp_path)), load=refuse_to_load)


def test_auth_and_lan_binding():
    assert parse_auth("ops:s3cret", None) == [("ops", "s3cret")]
    assert parse_auth(None, None) is None
    with pytest.raises(UserError, match="USER:PASSWORD"):
        parse_auth("nopassword", None)
    with pytest.raises(UserError, match="--auth"):
        serve("anything.gguf", ServeConfig(host="0.0.0.0"))


@pytest.fixture
def running_app(tiny_model_dir, tmp_path):
    from edgedistill.serve.process import serving
    with serving(str(tiny_model_dir), "--samples", "2", "--feedback", str(tmp_path / "feedback.jsonl"),
                 log_path=tmp_path / "app.log") as url:
        yield url


def test_app_answers_through_api_and_binds_loopback_only(running_app):
    from gradio_client import Client
    client = Client(running_app, verbose=False)
    answer, computation, rationale, confidence, status = client.predict("What is 6 times 7?", False,
                                                                        api_name="/answer")
    assert answer.startswith("## ") and "sampled answers agree" in confidence and status == ""
    assert "%" in confidence and "Not calibrated" in confidence
    *_, status = client.predict("x" * 3000, False, api_name="/answer")
    assert "limit is 2000" in status
    assert "Thanks" in client.predict("6 times 7?", "42", "up", "", api_name="/feedback")
    assert listening_addresses(int(running_app.rstrip("/").rsplit(":", 1)[1])) == {"127.0.0.1"}


def listening_addresses(port):
    """Local addresses with a socket in LISTEN state on `port`, read from /proc/net/tcp{,6} (no tools needed)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    words = [bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8)]
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found


def test_each_kind_of_question_is_asked_and_headed_by_its_answer(qa):
    from edgedistill.serve.answering import chosen, with_options
    app = qa(["B"])
    # options from the box (letters added), or written in the question
    asked = app.question("Which sensor shows a rotor winding fault?", "choice", "oil debris\ncurrent\nnoise")
    assert asked.options == ["A. oil debris", "B. current", "C. noise"] and asked.answer_type == "choice"
    body, options = with_options("Which sensor?\nA) oil debris\nb. current")
    assert body == "Which sensor?" and options == ["A. oil debris", "B. current"]
    assert chosen(asked, "B") == "B. current" and chosen(asked, "current") == "B. current"
    with pytest.raises(UserError, match="needs the options"):
        app.question("Which sensor?", "choice")
    # a work-order line is asked the way the student was trained (the packaged label set as its options)
    work_order = app.question("pump seal weeping", "label")
    assert work_order.question == load_questions("fmc:dev")[0].question.replace('"inefficient"', '"pump seal weeping"')
    assert work_order.options == load_questions("fmc:train", limit=1)[0].options
    assert chosen(work_order, "leaking.") == "Leaking" and chosen(work_order, "a broken thing") == "a broken thing"
    assert app.question("6 times 7?").answer_type == "number"


def test_feedback_keeps_the_kind_of_question(tmp_path):
    import json
    log = FeedbackLog(tmp_path / "feedback.jsonl", "m", "number")
    log.record("Which sensor?", "B", "down", correction="C", answer_type="choice", options=["A. x", "B. y", "C. z"])
    row = json.loads((tmp_path / "feedback.jsonl").read_text())
    assert (row["answer_type"], row["options"], row["answer"]) == ("choice", ["A. x", "B. y", "C. z"], "C")
    (seed,) = load_questions(tmp_path / "feedback.jsonl")                 # a seed the teacher reads as a choice
    assert seed.answer_type == "choice" and seed.options[2] == "C. z"



def test_a_thumbs_up_on_an_answer_outside_the_label_set_keeps_the_question_for_an_expert(tmp_path):
    """The loader refuses a label answer that is none of the labels, so such a thumbs-up is not written as a
    reference (the next round would refuse the file) nor lost: the question waits for an expert's answer."""
    import json
    log = FeedbackLog(tmp_path / "feedback.jsonl", "m", "number")
    said = log.record("pump not turning", "It is probably the motor", "up", answer_type="label",
                      options=["Breakdown", "Electrical", "Leaking"])
    assert "saved to `feedback.unanswered.jsonl` without an answer" in said
    row = json.loads((tmp_path / "feedback.unanswered.jsonl").read_text())
    assert "answer" not in row and row["model_answer"].startswith("It is probably")
    refused = log.record("pump not turning", "x", "down", correction="Broken", answer_type="label",
                         options=["Breakdown", "Electrical", "Leaking"])
    assert "Nothing was saved" in refused                               # a person's correction must be a label


def test_confidence_reads_the_fitted_signals_when_the_calibration_has_them(qa):
    """With a combination in the calibration file, the page's probability is that combination of the answer's
    signals, and an answer whose computation uses a number the question does not show says so."""
    from edgedistill.confidence import Signals, fit_combined
    calibration = fit_calibration([5] * 4 + [1] * 4, [True] * 4 + [False] * 4, k=5, temperature=0.7, data="dev_reworded")
    calibration.combined = fit_combined([Signals(1, 1, 1, 1)] * 4 + [Signals(0.2, 0.2, 0, 1)] * 4,
                                        [True] * 4 + [False] * 4).to_dict()
    model = qa(["48*7.5", "48*7.5", "360", "48*8", "x"], calibration)
    question = model.question("Line 3 makes 48 housings an hour. How many in a 7.5-hour shift?")
    grounded = model.confidence(question, "360", [], ["Answer: <<48*7.5=360>>"] * 5, text=GREEDY)
    assert grounded.signals == Signals(1.0, 1.0, 1.0, 1.0)
    assert grounded.probability == pytest.approx(calibration.probability_of(grounded.signals))
    invented = model.confidence(question, "384", [], ["Answer: <<48*8=384>>"] * 5, text="Answer: <<48*8=384>>")
    assert invented.signals.grounded == 0.0 and invented.probability < grounded.probability
    text = confidence_markdown(invented, supervisor_below=0.6)
    assert "uses a number the question does not show" in text and "worded apart from the training" in text
    assert "does not show" not in confidence_markdown(grounded, supervisor_below=0.6)


def test_an_answer_over_a_number_the_question_does_not_show_is_never_likely_right(qa):
    from edgedistill.confidence import Signals, fit_combined
    calibration = fit_calibration([5] * 4, [True] * 4, k=5, temperature=0.7, data="dev_reworded")
    calibration.combined = fit_combined([Signals(1, 1, 1, 1)] * 4 + [Signals(0.2, 0.2, 1, 1)] * 4,
                                        [True] * 4 + [False] * 4).to_dict()
    calibration.likely_right_at = 0.5
    model = qa(["48*8"] * 5, calibration)
    question = model.question("Line 3 makes 48 housings an hour. How many in a 7.5-hour shift?")
    invented = model.confidence(question, "384", [], ["Answer: <<48*8=384>>"] * 5, text="Answer: <<48*8=384>>")
    assert invented.probability >= 0.5 and invented.likely_right_at is None      # agreed by all, yet vetoed
    assert "likely right" not in confidence_markdown(invented, supervisor_below=0.6).split("\n")[0]
