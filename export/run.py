"""The export stage: merged student -> GGUF (f16, then each quantization) and ONNX, each proven against the source.

    gguf     export/gguf.py: llama.cpp's converter and quantizer, offline; `quant` (the main one, which evaluation
             and the app take) and `more_quants`; an Ollama Modelfile and a server command beside each file
    onnx     export/onnx.py: onnxruntime-genai's builder; `onnx: auto` tries int4 settings smallest first and keeps
             the first that passes parity (else int8), or names one setting, or `none`
    parity   export/parity.py: top-1 agreement, KL, pass@1, template, size, load time, prefill/decode tokens/s and
             peak memory per artifact; parity.json beside each, parity.md and a table in the log
    gate     an artifact whose agreement is below `min_agreement`, or whose chat prompt differs from the source's,
             fails the export with a message naming it, unless `force`
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgedistill import UserError
from edgedistill.config import Config
from edgedistill.records import load_questions, write_json_atomic, write_text_atomic
from edgedistill.rundir import RunDir


def run(config: Config, rundir: RunDir) -> dict:
    """The export stage's entry point: <run>/student/merged -> <run>/export/. The importance matrix is steered by
    the student's own training conversations (what its answers look like); parity is measured on data.dev, so that the
    choice of the served file never reads the eval split the run reports as held out."""
    cfg = config.export
    if not cfg.gguf and cfg.onnx == "none":
        return {"gguf": None}
    from edgedistill.export.gguf import read_calibration
    calibration = read_calibration(rundir.teacher.sft_answer_first, cfg.calibration) if cfg.calibration else None
    questions = load_questions(config.data.dev, columns=config.data.columns) if cfg.parity else []
    tables = None
    if config.knowledge.tables and any(q.query for q in questions):   # dev questions about the tables: their
        from edgedistill.tables import as_served, open_tables             # schema in the prompt, queries answered
        tables = open_tables(config.knowledge.tables)
        questions = as_served(questions, tables, config.knowledge.value_hints, config.knowledge.name_hints)
    result = run_export(cfg, rundir.student.merged, rundir.export_dir, calibration, questions, tables=tables)
    if result.get("gguf"):
        print(f"[export] serves {result['gguf']} ({result['files'][result['quant']]['bytes'] / 2**20:.1f} MiB), "
              f"convert {result['convert_seconds']} s, quantize {result['quantize_seconds']} s", flush=True)
    return {"gguf": None, **result}


def run_export(cfg, merged: Path, out: Path, calibration: list[list[dict]] | None = None, questions=(),
               base: str | None = None, tables=None) -> dict:
    """`cfg` is an ExportConfig; `questions` the evaluation split parity is measured on. `merged` may also be a
    LoRA adapter folder: it is merged into `base` (default: the base its adapter_config.json names) first."""
    from edgedistill.export.gguf import export_gguf
    from edgedistill.export.onnx import AUTO_ORDER, build_onnx
    from edgedistill.export.parity import SourceModel, accuracy, parity_path, parity_report, table
    out.mkdir(parents=True, exist_ok=True)
    if (merged / "adapter_config.json").is_file():
        merged = merge_adapter(merged, out / "merged", base)
    if not (merged / "config.json").is_file():
        raise UserError(f"{merged}: not a Hugging Face model folder (no config.json); export needs the merged student "
                        f"(student/merged of a run, a folder with config.json and safetensors, or a LoRA adapter "
                        f"folder with adapter_config.json)")
    result: dict = {}
    artifacts: dict[str, tuple[str, Path]] = {}
    if cfg.gguf:
        result = export_gguf(merged, out, [cfg.quant, *[q for q in cfg.more_quants if q != cfg.quant]],
                             cfg.keep_f16, calibration)
        artifacts = {f"GGUF {q}": ("gguf", Path(result["files"][q]["path"])) for q in result["quants"]}
    questions = list(questions)
    checking = cfg.parity and bool(questions)
    source = SourceModel(merged) if checking else None
    from edgedistill.generation.transformers import TransformersGenerator
    source_accuracy = accuracy(TransformersGenerator(source.model, source.tokenizer), questions[:cfg.parity_eval],
                               tables=tables) if checking and cfg.parity_eval else None

    def check(kind: str, path: Path) -> dict:
        return parity_report(kind, path, source, questions, source_accuracy, cfg.parity_eval, cfg.parity_prompts,
                             cfg.threads, tables=tables)

    reports = {name: check(kind, path) for name, (kind, path) in artifacts.items()} if checking else {}
    if cfg.onnx != "none":
        settings = AUTO_ORDER if cfg.onnx == "auto" else [cfg.onnx]
        tried = {}
        for setting in settings:
            candidate = out / f"onnx-{setting}"
            built = build_onnx(merged, candidate, setting, cfg.threads)
            report = check("onnx", candidate) if checking else None
            passed = report is None or _passes(report, cfg.min_agreement)
            tried[setting] = report and report["agreement"]
            if passed or setting == settings[-1]:
                target = out / "onnx"
                shutil.rmtree(target, ignore_errors=True)
                candidate.replace(target)
                result["onnx"] = {**built, "path": str(target), "tried": tried}
                artifacts[f"ONNX {setting}"] = ("onnx", target)
                if report is not None:
                    report["artifact"] = str(target)
                    write_json_atomic(parity_path(target), report)
                    reports[f"ONNX {setting}"] = report
                break
            shutil.rmtree(candidate)
            print(f"[export] ONNX {setting}: agreement {report['agreement']:.1%} < {cfg.min_agreement:.0%}, "
                  f"trying the next setting", flush=True)
    if cfg.gguf:
        result.update(serve_choice(cfg, result, reports))
    if reports:
        text = table(reports)
        served = f"\n**Served:** {result['served']['reason']}\n" if result.get("served") else ""
        write_text_atomic(out / "parity.md", f"# Parity of each exported artifact with {merged}\n\n{text}\n{served}")
        print(text, flush=True)
        result["parity"] = {name: {k: v for k, v in r.items() if k != "artifact"} for name, r in reports.items()}
        result["parity_files"] = {name: str(parity_path(artifacts[name][1])) for name in reports}
        failing = [f"{name} (agreement {r['agreement']:.1%}{'' if r['template_ok'] else ', chat prompt differs'})"
                   for name, r in reports.items() if not _passes(r, cfg.min_agreement)]
        if failing and not cfg.force:
            raise UserError(f"export: {', '.join(failing)} below export.min_agreement {cfg.min_agreement:.0%}: the "
                            f"file does not behave like the student (see {out / 'parity.md'}). Use a higher-precision "
                            f"setting, or --force / export.force: true to keep it anyway")
    return result


def serve_choice(cfg, result: dict, reports: dict[str, dict]) -> dict:
    """The GGUF the app serves, chosen by the serving bar (export/serving.py): {"gguf", "quant", "served"}, which
    the eval stage, the report and the printed serve command follow."""
    from edgedistill.export.serving import ServingBar, choose_served
    measured = {q: reports[f"GGUF {q}"] for q in result["quants"] if f"GGUF {q}" in reports}
    choice = choose_served(measured, cfg.quant, ServingBar(cfg.serve_min_agreement, cfg.serve_max_kl))
    print(f"[export] {'warning: ' if choice.overruled or not choice.holds_bar and measured else ''}{choice.reason}",
          flush=True)
    return {"gguf": result["files"][choice.quant]["path"], "quant": choice.quant, "preferred_quant": cfg.quant,
            "served": choice.to_dict()}


def merge_adapter(adapter: Path, target: Path, base: str | None = None) -> Path:
    """A PEFT LoRA adapter merged into its base in full precision: the base is loaded in fp32 (a GGUF base, like
    the packaged SmolLM2, is dequantised first), never into quantized weights, whose rounding would swallow the
    adapter's small update. The merged folder (safetensors, tokenizer) appears at `target` by atomic rename."""
    import json
    from peft import PeftModel
    from edgedistill.device import exact_cpu
    from edgedistill.models import load_model
    if not (adapter / "adapter_model.safetensors").is_file():
        raise UserError(f"{adapter}: no adapter_model.safetensors (edgedistill never loads pickled adapter_model.bin)")
    config = json.loads((adapter / "adapter_config.json").read_text())
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{adapter}/adapter_config.json names no base model: pass --base")
    model, tokenizer = load_model(base, placement=exact_cpu())
    try:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"{adapter}: this adapter does not fit the base {base} ({str(exc)[:200]})") from None
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    print(f"[export] merged the adapter {adapter} into {base} (fp32): {target}", flush=True)
    return target


def _passes(report: dict, min_agreement: float) -> bool:
    return report["template_ok"] and report["agreement"] >= min_agreement
