"""The factory-floor Q&A app: answer first, the computation it rests on, the reasoning, and a confidence.

    edgedistill serve --model runs/quickstart/export/student-Q4_K_M.gguf

Runs on 127.0.0.1 unless told otherwise, with Gradio's analytics off and no web fonts or CDN assets, so nothing
leaves the machine. One question costs one greedy answer with its reasoning plus `samples` short sampled answers
(stopped at the end of the Answer line); the confidence is how many of those agree with the greedy answer.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from edgedistill.calculator import ANNOTATION
from edgedistill.checkers import extract_answer
from edgedistill.formats import chat, split_answer_reason
from edgedistill.generate import Sampling

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Reply:
    answer: str
    computation: str
    rationale: str
    agreement: int
    samples: int
    sampled_answers: list[str]

    @property
    def confidence(self) -> float:
        return self.agreement / self.samples if self.samples else 0.0


def ask(generator, question: str, samples: int = 5, temperature: float = 0.7, max_new_tokens: int = 200) -> Reply:
    """Greedy answer and reasoning, then `samples` sampled answers to measure agreement."""
    messages = chat(question)
    text = generator.generate([messages], Sampling(max_new_tokens=max_new_tokens, stop_after_answer=False))[0]
    line, rationale = split_answer_reason(text)
    answer = extract_answer(text) or line or ""
    computation = "; ".join(f"{expr.strip()} = {value}" for expr, value in ANNOTATION.findall(line or ""))
    sampled = []
    if samples:
        texts = generator.generate([messages] * samples, Sampling(max_new_tokens=48, temperature=temperature,
                                                                  stop_after_answer=True, seed=1),
                                   batch_size=samples)
        sampled = [extract_answer(t) or "?" for t in texts]
    agreement = sum(1 for s in sampled if _same(s, answer))
    return Reply(answer=answer or "(no answer)", computation=computation, rationale=rationale or text,
                 agreement=agreement, samples=len(sampled), sampled_answers=sampled)


def _same(a: str, b: str) -> bool:
    try:
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    except (TypeError, ValueError):
        return str(a).strip().lower() == str(b).strip().lower()


def confidence_text(reply: Reply) -> str:
    if not reply.samples:
        return "confidence not measured (samples = 0)"
    level = "high" if reply.confidence >= 0.8 else "medium" if reply.confidence >= 0.5 else "low: check by hand"
    others = Counter(s for s in reply.sampled_answers if not _same(s, reply.answer))
    spread = f"; other answers: {', '.join(f'{a} ({n})' for a, n in others.most_common(3))}" if others else ""
    return f"{reply.agreement} of {reply.samples} samples agree ({level}){spread}"


def build_app(generator, model_name: str, samples: int = 5):
    import gradio as gr
    system_fonts = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                     font_mono=["ui-monospace", "monospace"])

    def answer(question: str):
        if not question or not question.strip():
            return "Type a question first.", "", "", ""
        reply = ask(generator, question.strip(), samples=samples)
        return (f"## {reply.answer}", reply.computation or "(no arithmetic)", reply.rationale,
                confidence_text(reply))

    with gr.Blocks(title="edgedistill: shop-floor Q&A", theme=system_fonts, analytics_enabled=False) as app:
        gr.Markdown(f"### Shop-floor Q&A\nModel: `{model_name}`. Runs on this machine; nothing is sent anywhere.")
        question = gr.Textbox(label="Question", lines=2, placeholder="Line 3 makes 48 housings an hour. "
                                                                    "How many in a 7.5-hour shift?")
        ask_button = gr.Button("Ask", variant="primary")
        answer_box = gr.Markdown(label="Answer")
        computation = gr.Textbox(label="Computation (done by the calculator)", interactive=False)
        confidence = gr.Textbox(label="Confidence", interactive=False)
        with gr.Accordion("Reasoning", open=False):
            rationale = gr.Markdown()
        outputs = [answer_box, computation, rationale, confidence]
        ask_button.click(answer, inputs=question, outputs=outputs, api_name="answer")
        question.submit(answer, inputs=question, outputs=outputs)
    return app


def serve(model: str, host: str = "127.0.0.1", port: int = 7860, samples: int = 5, allow_network: bool = False):
    from edgedistill.generate import load_generator
    generator = load_generator(model, allow_network)
    app = build_app(generator, model, samples)
    print(f"edgedistill: serving {model} ({generator.backend}) on http://{host}:{port}  (Ctrl+C stops)", flush=True)
    app.queue(default_concurrency_limit=1).launch(server_name=host, server_port=port, share=False,
                                                   inbrowser=False, show_error=True)
