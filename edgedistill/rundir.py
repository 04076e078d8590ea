"""The run directory is the contract between stages: every path one stage writes and another reads is named here.

    runs/<name>/manifest.json   per stage: status, fingerprint of its inputs and config, outputs, seconds
    runs/<name>/config.yaml     the resolved config the run used
    runs/<name>/teacher/        TeacherFiles: samples, sft/train.jsonl, sft/rationale_first.jsonl,
                                preferences/train.jsonl, selection.json, dataset/
    runs/<name>/student/        StudentFiles: merged/ (what export and evaluation take)
    runs/<name>/export/ eval/   the exports (their paths are in the manifest's outputs) and the evaluations
    runs/<name>/report.json report.md

A stage whose fingerprint is unchanged and whose status is "done" is skipped. A stage that was interrupted
resumes from what it wrote (append-only JSONL, checkpoints); its final files appear only by atomic rename.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from edgedistill import UserError
from edgedistill.records import write_json_atomic, write_text_atomic


def writable_folder(path: str | Path, what: str = "--out") -> Path:
    """`path` as a folder we can write in (created if missing), or a UserError saying why not, before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path}: is a file, not a folder; give a folder (it is created if missing)")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{what} {path}: {parent} is a file, so no folder can be made under it")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check.")   # as root, os.access always says yes
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot write there ({exc.strerror}); choose another folder") from None
    return path


def fingerprint(*parts) -> str:
    """sha256 of JSON-serialised parts (config sections, input hashes): what decides whether a stage reruns."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes; of a folder (a datasets folder, a folder of tables), of its files' names and
    bytes in name order."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


class TeacherFiles:
    """What the teacher stage writes in its folder (`<run>/teacher`, or any folder `edgedistill teach` is given)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.samples = self.root / "samples.jsonl"                       # every teacher sample, append-only
        self.sft_answer_first = self.root / "sft" / "train.jsonl"         # the student's SFT records
        self.sft_rationale_first = self.root / "sft" / "rationale_first.jsonl"   # the same, rationale first
        self.preferences = self.root / "preferences" / "train.jsonl"      # DPO pairs
        self.selection = self.root / "selection.json"                     # what selection kept and dropped, and why
        self.dataset = self.root / "dataset"                              # the same views as a datasets folder
        self.evolve = EvolveFiles(self.root / "evolve")                   # the self-generation round
        self.rationalize = RationalizeFiles(self.root / "rationalize")    # rationales for labelled seeds
        self.tables = TableTeachFiles(self.root / "tables")              # questions about knowledge.tables

    def sft(self, student_format: str) -> Path:
        """The SFT file a student of this format (student.format) trains on."""
        return {"answer_first": self.sft_answer_first, "rationale_first": self.sft_rationale_first}[student_format]


class TableTeachFiles:
    """What the teacher writes about the plant's tables (`<teacher>/tables`): its rule questions, then the model
    teacher's two append-only logs, then the questions kept."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.rule = self.root / "rule.jsonl"               # questions written by rule, verified by construction
        self.proposals = self.root / "proposals.jsonl"     # every question the model teacher wrote, with its checks
        self.solves = self.root / "solves.jsonl"           # the teacher's solves of those that passed
        self.kept = self.root / "kept.jsonl"               # the written and reworded questions kept


class EvolveFiles:
    """What the self-generation round writes (`<teacher>/evolve`): two append-only logs, then the views."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.proposals = self.root / "proposals.jsonl"     # every question the teacher wrote, with its checks
        self.solves = self.root / "solves.jsonl"           # the teacher's solves of those questions
        self.kept = self.root / "kept.jsonl"               # kept questions in the seed schema, with provenance
        self.rejected = self.root / "rejected.jsonl"       # every rejected question with the reason
        self.progress = self.root / "progress.json"        # teacher tokens and seconds so far, over every resume
        self.summary = self.root / "summary.json"          # counts by kind, kept rate, tokens/s
        self.card = self.root / "README.md"                # the card shipped with the split


class RationalizeFiles:
    """What the rationale round writes (`<teacher>/rationalize`): one append-only log, then the seeds it explains."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.log = self.root / "log.jsonl"                 # every explanation, its masked check and the verdict
        self.explained = self.root / "explained.jsonl"     # the seeds with the kept rationales, in the seed schema
        self.progress = self.root / "progress.json"        # teacher tokens and seconds so far, over every resume
        self.summary = self.root / "summary.json"          # kept and rejected by reason, by answer type


class StudentFiles:
    """What the student stage writes in its folder (`<run>/student`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.merged = self.root / "merged"                                # the last stage's merged model


def served_by_run(path: str | Path) -> Path | None:
    """The model a run folder serves: its export's served GGUF (the one the serving bar chose), else its ONNX
    folder, else its merged student. None when `path` is not a run folder (no manifest.json), so any other model
    spec passes through; a run with no model yet is a UserError saying what to run."""
    root = Path(path)
    if not (root / "manifest.json").is_file():
        return None
    stages = manifest_stages(root)
    if stages is None:
        raise UserError(f"{root}/manifest.json is not a run manifest; give the model file instead")
    export = stages.get("export", {})
    outputs = export.get("outputs") or {} if export.get("status") == "done" else {}
    onnx = outputs.get("onnx") or {}
    for written in (outputs.get("gguf"), onnx.get("path") if isinstance(onnx, dict) else None):
        found = written_in_run(root, written, "export")
        if found is not None:
            return found
    merged = StudentFiles(root / "student").merged
    if stages.get("train", {}).get("status") == "done" and (merged / "config.json").is_file():
        return merged
    raise UserError(f"{root}: this run has no exported or trained model yet; finish it with "
                    f"`edgedistill run --config {root / 'config.yaml'} --out {root}`")


def manifest_stages(root: Path) -> dict | None:
    """The stages a run folder's manifest records ({name: {status, outputs, ...}}); None when it has no manifest or
    one that cannot be read as such."""
    try:
        stages = json.loads((Path(root) / "manifest.json").read_text()).get("stages", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return stages if isinstance(stages, dict) else None


def written_in_run(root: Path, written, folder: str) -> Path | None:
    """A path a stage recorded in the manifest, where it exists: as written (relative to where the run was started),
    else by its name in the run's `folder` (the run opened from elsewhere); None when neither exists."""
    if not isinstance(written, str):
        return None
    for candidate in (Path(written), Path(root) / folder / Path(written).name):
        if candidate.exists():
            return candidate
    return None


def run_folder_of(model: str | Path) -> Path | None:
    """The run folder a model file or folder was written into (export/x.gguf, export/onnx, student/merged), else
    None."""
    path = Path(str(model))
    for folder in list(path.parents)[:3]:
        if (folder / "manifest.json").is_file():
            return folder
    return None


class RunDir:
    def __init__(self, root: str | Path):
        self.root = writable_folder(root)
        self.manifest_path = self.root / "manifest.json"
        self.teacher = TeacherFiles(self.root / "teacher")
        self.student = StudentFiles(self.root / "student")
        self.export_dir = self.root / "export"
        self.eval_dir = self.root / "eval"
        self.report_json = self.root / "report.json"
        self.report_md = self.root / "report.md"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def stage_folder(self, stage: str) -> Path:
        """The folder a pipeline stage (teach, train, export, eval) writes, and a changed config clears."""
        return {"teach": self.teacher.root, "train": self.student.root, "export": self.export_dir,
                "eval": self.eval_dir}[stage]

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError:
            return {"stages": {}}   # only written by atomic rename, so this means someone edited it by hand

    def stage(self, name: str) -> dict:
        return self.manifest()["stages"].get(name, {})

    def is_done(self, name: str, key: str) -> bool:
        entry = self.stage(name)
        return entry.get("status") == "done" and entry.get("fingerprint") == key

    def _update(self, name: str, **fields) -> None:
        manifest = self.manifest()
        manifest["stages"].setdefault(name, {}).update(fields)
        write_json_atomic(self.manifest_path, manifest)

    def start(self, name: str, key: str) -> float:
        previous = self.stage(name)
        if previous.get("fingerprint") not in (None, key):
            self._update(name, status="stale")
        self._update(name, status="running", fingerprint=key, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        return time.time()

    def finish(self, name: str, started: float, outputs: dict) -> None:
        seconds = round(time.time() - started + self.stage(name).get("seconds_before_resume", 0.0), 1)
        self._update(name, status="done", outputs=outputs, seconds=seconds)

    def fail(self, name: str, started: float, error: str) -> None:
        # keep the time spent so a resumed stage still reports its full cost
        spent = time.time() - started + self.stage(name).get("seconds_before_resume", 0.0)
        self._update(name, status="interrupted", error=error, seconds_before_resume=round(spent, 1))

    def write_config(self, config_dict: dict) -> None:
        write_text_atomic(self.path("config.yaml"), yaml.safe_dump(config_dict, sort_keys=False))
