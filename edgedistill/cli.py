"""The `edgedistill` command. Each subcommand imports its stage only when it runs.

    edgedistill run   --config configs/quickstart.yaml --out runs/quickstart   teacher -> student -> eval -> report
    edgedistill teach --config C --out DIR        only the teacher stage (writes DIR/teacher/)
    edgedistill train --config C --out DIR        only the student stage: student.stages (sft, dpo, online) on DIR/teacher/
    edgedistill eval  --model M --data FILE.jsonl [--limit N] [--shots K] [--json]
    edgedistill eval  --model A --model B --data X --data Y --out DIR [--k 4] [--calibrate]   comparison report
    edgedistill export --model runs/x/student/merged --out DIR [--quant Q4_K_M] [--calibration SFT.jsonl]
    edgedistill serve --model M [--host 127.0.0.1] [--port 7860] [--samples 5]   the Q&A web app

Errors the user can fix print one line and exit with code 2; nothing half-written is left behind.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path

from edgedistill import UserError, __version__
from edgedistill.config import DataConfig, EvalConfig, ExportConfig, ServeConfig, describe, obeys
from edgedistill.results import EvalResult

EPILOG = """examples:
  edgedistill run --config configs/quickstart.yaml --out runs/quickstart
  edgedistill eval --model runs/quickstart/student/merged --data shopfloor:heldout --limit 50
  edgedistill eval --model smollm2-135m-instruct --data my_questions.jsonl --shots 2 --json
  edgedistill eval --model qwen2.5-coder-0.5b-instruct --model runs/quickstart --shots 2,0 \
      --data ../shared/data/svamp/SVAMP.json --data ../shared/data/fmc_mwo2kg/dev.txt --out runs/evals --calibrate
  edgedistill serve --model runs/quickstart

models: a packaged name (qwen2.5-coder-0.5b-instruct, smollm2-135m-instruct, qwen2.5-coder-1.5b-instruct), a hub
id already in the local Hugging Face cache, a folder with config.json + *.safetensors, a .gguf file, or a run folder
(the model its export chose to serve).
data: shopfloor:train|dev|heldout (shipped) or JSONL lines {"question": ..., "answer": ...}; GSM8K's
"... #### 42" answers work as they are."""


class Parser(argparse.ArgumentParser):
    """argparse, with a wrong flag reported as one line (and exit code 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def checked(kind, rules: dict, none_word: str | None = None):
    """An argparse type: the text as `kind` (int, float, str, or list: comma-separated, '' for none) that obeys
    `rules` (config.option's: low, above, high, choices, each, text), refused in the config's words; `none_word`
    says what leaving the flag out means."""
    def parse(text: str):
        if kind in (int, float):
            try:
                value = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
        else:
            value = [item.strip() for item in text.split(",") if item.strip()] if kind is list else text
        if not obeys(value, rules):
            hint = f"; leave the flag out for {none_word}" if none_word else ""
            raise argparse.ArgumentTypeError(f"must be {describe(rules)}, got {text}{hint}")
        return value
    return parse


def number(kind=int, low=None, high=None, none_word: str | None = None):
    """An argparse type for a flag no config key mirrors: a `kind` number in [low, high]."""
    return checked(kind, {k: v for k, v in dict(low=low, high=high).items() if v is not None}, none_word)


def flag(parser, name: str, section: type, key: str, *, override: bool = False, help: str | None = None,
         **narrower):
    """Add the flag `name` that mirrors the config key `section.key`: its type, allowed values, default and help
    are the field's (written once, in config.py). override: the flag's default is None, so it replaces the value of
    a config read elsewhere (serve --config) only when given. narrower: rules the flag tightens (low=1 where
    leaving the flag out, not 0, means none). `help` replaces the field's where the flag says it for its command."""
    field = next(f for f in dataclasses.fields(section) if f.name == key)
    kind = typing.get_type_hints(section)[key]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):   # int | None: None is leaving the flag out
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    rules = {**field.metadata.get("rules", {}), **narrower}
    convert = list if typing.get_origin(kind) is list else str if "choices" in rules else kind
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    shown = ",".join(default) if isinstance(default, list) else default
    dotted = f"{section.SECTION}.{key}"
    where = f"default {shown}, or --config's {dotted}" if override else \
        f"{dotted} in a config" if default is None else f"default {shown}; {dotted} in a config"
    parser.add_argument(name, type=checked(convert, rules), default=None if override else default,
                        metavar="{" + ",".join(rules["choices"]) + "}" if "choices" in rules else None,
                        help=f"{help or field.metadata.get('help', '')} ({where})".replace("%", "%%"))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgedistill", description="Distil reasoning into a small model that runs "
                                     "offline on a workstation: teacher data -> student -> evaluation.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgedistill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in [("run", "run every stage from one config (skips stages whose inputs are unchanged)"),
                       ("teach", "teacher stage only: verified answer-first SFT data, preference pairs, selection, "
                                  "a datasets folder (DIR/teacher/)"),
                       ("train", "student stage only: the stages in student.stages (sft, then optionally dpo and "
                                  "online RL: grao, pass@k, maj@k) on DIR/teacher/, merged into DIR/student/merged")]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", required=True, help="YAML config (see configs/quickstart.yaml)")
        p.add_argument("--out", required=True, help="run directory (created; reused to resume or skip)")
        if name != "train":
            p.add_argument("--feedback", action="append", default=[], metavar="FILE",
                           help="the app's feedback JSONL (edgedistill serve --feedback), trained on as one more "
                                "data.train source: corrections at weight 1, thumbs-up (the model's own answer) at "
                                "0.5; repeat for several files")
            p.add_argument("--tables", nargs="+", default=None, metavar="PATH",
                           help="the plant's tables (replaces knowledge.tables): CSV, TSV, Excel or Parquet files, "
                                "folders of them, `plant` or a postgresql:// URL (docs/tables.md)")
    p = sub.add_parser("eval", help="score models on benchmarks; with --out, a comparison report with plots",
                       description="Greedy decoding with the calculator, stopped at the end of the Answer line. One "
                                   "--model and --data without --out prints pass@1. With --out (or several models or "
                                   "benchmarks): pass@1 with its interval, pass@k, maj@k, ECE and Brier of the "
                                   "app's confidence, with and without the calculator, tokens and seconds, a "
                                   "math-verify cross-check; DIR/report.md, report.json and PNG plots.")
    p.add_argument("--model", required=True, action="append",
                   help="packaged name, hub id, HF folder, ONNX folder or .gguf file (repeat to compare)")
    p.add_argument("--data", required=True, action="append",
                   help="benchmark file: GSM8K JSONL, SVAMP.json, FailureSensorIQ JSONL, FMC work orders (.txt), "
                        "JSONL or CSV of {question, answer[, options]}, or a packaged split: shopfloor:heldout, "
                        "fsiq:dev, fmc:dev (repeatable)")
    p.add_argument("--tables", nargs="+", default=[], metavar="PATH",
                   help="the plant's tables the models' queries run on: CSV, TSV, Excel or Parquet files, folders "
                        "of them, `plant` (the shipped example) or a postgresql:// URL (docs/tables.md)")
    p.add_argument("--value-hints", action="store_true",
                   help="name the table and column of the values each question uses, under it (for a student "
                        "trained with knowledge.value_hints)")
    p.add_argument("--name-hints", action="store_true",
                   help="the value hints, and also the columns and tables each question's words say (for a "
                        "student trained with knowledge.name_hints)")
    p.add_argument("--format", default=None, choices=("gsm8k", "svamp", "fsiq", "fmc", "jsonl", "csv", "table"),
                   help="benchmark format (default: from the file's name and shape)")
    p.add_argument("--out", default=None, help="folder for report.md, report.json and the plots")
    p.add_argument("--limit", type=number(low=1, none_word="all"), default=None, help="N questions per benchmark only")
    p.add_argument("--skip", type=number(low=0), default=0, help="leave out the first N questions of each benchmark")
    p.add_argument("--shots", default="0", help="worked examples in the prompt (for untrained models): one number "
                                                "for all models, or one per --model, comma-separated (2,0)")
    flag(p, "--k", EvalConfig, "samples")
    flag(p, "--temperature", EvalConfig, "temperature")
    p.add_argument("--no-calculator-row", action="store_true", help="skip the greedy decode without the calculator")
    p.add_argument("--end-subset", type=number(low=0), default=32, help="questions decoded past the answer to measure tokens "
                                                              "and seconds to the end (default 32; 0: none)")
    p.add_argument("--calibrate", action="store_true", help="write each model's confidence calibration where the "
                                                            "app reads it (beside a .gguf, inside a folder)")
    flag(p, "--batch-size", EvalConfig, "batch_size")
    flag(p, "--max-new-tokens", EvalConfig, "max_new_tokens")
    flag(p, "--threads", EvalConfig, "threads")
    p.add_argument("--allow-network", action="store_true", help="let the resolver download a hub model")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p = sub.add_parser("export", help="merged student -> GGUF (quantized) and ONNX, each checked against it",
                       description="Convert a Hugging Face folder to GGUF with llama.cpp's converter and quantizer, "
                                   "and to ONNX with onnxruntime-genai's builder, offline; then prove each file "
                                   "behaves like the source (top-1 agreement, KL, pass@1, size, speed: parity.md). "
                                   "Fails when agreement is below --min-agreement, unless --force.")
    p.add_argument("--model", required=True, help="a Hugging Face folder (e.g. runs/quickstart/student/merged), or "
                                                  "a LoRA adapter folder (merged into its base in fp32 first)")
    p.add_argument("--base", default=None, help="the base model of a LoRA adapter (default: the one its "
                                                "adapter_config.json names)")
    p.add_argument("--out", required=True, help="folder for the GGUF files, onnx/ and parity.md")
    flag(p, "--quant", ExportConfig, "quant")
    flag(p, "--more-quants", ExportConfig, "more_quants", help="more GGUF types, comma-separated ('' for none)")
    flag(p, "--onnx", ExportConfig, "onnx")
    flag(p, "--eval-data", DataConfig, "dev", help="questions for the parity check (worded apart from the eval split "
                                                  "you report, so the choice of the served file never reads it)")
    flag(p, "--min-agreement", ExportConfig, "min_agreement", help="top-1 agreement an artifact needs; below it the "
                                                                   "export fails, unless --force")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.add_argument("--force", action="store_true", help="keep artifacts that fail the parity check")
    p.add_argument("--calibration", default=None, metavar="SFT.jsonl",
                   help="training conversations (e.g. runs/x/teacher/sft/train.jsonl) whose activations steer the "
                        "rounding (an importance matrix, as llama-imatrix makes); default: plain rounding")
    flag(p, "--calibration-rows", ExportConfig, "calibration", help="how many of them", low=1)
    p = sub.add_parser("serve", help="the factory-floor Q&A web app (answer, computation, reasoning, confidence)",
                       description="A Gradio app: the answer streams first, then the reasoning (collapsible), then a "
                                   "confidence calibrated on held-out questions (the calibration file `edgedistill "
                                   "eval --calibrate` writes beside the model). Binds 127.0.0.1 unless --host says "
                                   "otherwise; sends nothing off the machine. Programs can call it with "
                                   "gradio_client (see the README).",
                       epilog="examples:\n"
                              "  edgedistill serve --model runs/plant            (a run: the file its export chose)\n"
                              "  edgedistill serve --model runs/plant/export/student-Q5_K_M.gguf\n"
                              "  edgedistill serve --model runs/quickstart/export/onnx --config my.yaml\n"
                              "  edgedistill serve --model runs/plant_tables --tables fmea.xlsx logs/   (the plant's "
                              "tables)\n"
                              "  edgedistill serve --model student.gguf --host 0.0.0.0 --auth-file users.txt \\\n"
                              "      --tls-cert plant.crt --tls-key plant.key     (the LAN: HTTPS, docs/serve.md)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a run folder (serves the GGUF its export chose by the serving "
                                                  "bar), a .gguf file (llama.cpp), an ONNX export folder, or anything "
                                                  "the resolver takes (HF folder, packaged name)")
    p.add_argument("--config", default=None, help="YAML config whose `serve:` section sets the defaults below, "
                                                  "the example questions and the supervisor threshold")
    flag(p, "--host", ServeConfig, "host", override=True,
         help="address to bind: 127.0.0.1 is this machine only; 0.0.0.0 needs --auth")
    flag(p, "--port", ServeConfig, "port", override=True)
    flag(p, "--tls-cert", ServeConfig, "tls_cert", override=True)
    flag(p, "--tls-key", ServeConfig, "tls_key", override=True)
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="require a login")
    p.add_argument("--auth-file", default=None, help="a file of USER:PASSWORD lines")
    flag(p, "--samples", ServeConfig, "samples", override=True)
    p.add_argument("--calibration", default=None, help="calibration JSON (default: the one beside the model)")
    p.add_argument("--tables", nargs="+", default=[], metavar="PATH",
                   help="the plant's tables the student may query: CSV, TSV, Excel or Parquet files, folders of "
                        "them, `plant` (the shipped example) or a postgresql:// URL with a read-only role; the page "
                        "gets a Plant data kind and /v1 answers from them (docs/tables.md). Default: a run's "
                        "knowledge.tables")
    p.add_argument("--value-hints", action="store_true",
                   help="name the table and column of the values a question uses, under it, as a student trained "
                        "with knowledge.value_hints expects (default: the run's setting)")
    p.add_argument("--name-hints", action="store_true",
                   help="the value hints, and also the columns and tables a question's words say, as a student "
                        "trained with knowledge.name_hints expects (default: the run's setting)")
    flag(p, "--feedback", ServeConfig, "feedback", override=True)
    flag(p, "--max-question-chars", ServeConfig, "max_question_chars", override=True)
    flag(p, "--concurrency", ServeConfig, "concurrency", override=True)
    flag(p, "--threads", ServeConfig, "threads", override=True)
    p.add_argument("--allow-network", action="store_true", help="let the resolver download a hub model")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:   # --help (0) or a wrong flag (2, one line already printed)
        return int(exc.code or 0)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # the hub is reached only through the resolver, when asked
    try:
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "serve":
            return cmd_serve(args)
        from edgedistill.config import TrainSource, load_config
        from edgedistill.pipeline import run_pipeline
        config = load_config(args.config)
        if getattr(args, "feedback", None):
            config.data.train = config.data.sources() + [TrainSource(path) for path in args.feedback]
        if getattr(args, "tables", None):
            config.knowledge.tables = list(args.tables)
        run_pipeline(config, args.out, only=None if args.command == "run" else args.command)
        if args.command == "run":
            out = Path(args.out)
            print((out / "report.md").read_text())
            serve = json.loads((out / "report.json").read_text()).get("serve")
            if serve:   # the last line: what to type next
                print(f"open the app:  {serve}")
        return 0
    except UserError as exc:
        print(f"edgedistill: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:   # a path we were given cannot be read or written: the user's to fix, not a bug
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"edgedistill: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgedistill: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def cmd_export(args) -> int:
    """The export stage on any folder: an ExportConfig from the flags (checked like a config's export: section),
    run by the function the pipeline's export stage runs."""
    from pathlib import Path
    from edgedistill.export.gguf import read_calibration
    from edgedistill.export.run import run_export
    from edgedistill.records import load_questions
    from edgedistill.rundir import writable_folder
    cfg = ExportConfig(quant=args.quant, more_quants=args.more_quants, onnx=args.onnx, parity=not args.no_parity,
                       min_agreement=args.min_agreement, force=args.force,
                       calibration=args.calibration_rows if args.calibration else 0)
    writable_folder(args.out)
    calibration = read_calibration(Path(args.calibration), cfg.calibration) if cfg.calibration else None
    questions = load_questions(args.eval_data) if cfg.parity else []
    result = run_export(cfg, Path(args.model), Path(args.out), calibration, questions, args.base)
    print(json.dumps({k: v for k, v in result.items() if k != "parity"}, indent=2))
    return 0


def cmd_serve(args) -> int:
    import dataclasses
    from edgedistill.config import ServeConfig, load_config
    from edgedistill.serve.server import parse_auth, serve
    settings = load_config(args.config).serve if args.config else ServeConfig()
    overrides = {"host": args.host, "port": args.port, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
                 "samples": args.samples, "feedback": args.feedback,
                 "max_question_chars": args.max_question_chars, "concurrency": args.concurrency,
                 "threads": args.threads}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    from edgedistill.rundir import served_by_run
    model = served_by_run(args.model) or args.model       # a run folder serves the file its export chose
    knowledge = run_knowledge(args.model)
    tables = args.tables or (knowledge.tables if knowledge else [])
    value_hints = args.value_hints or args.name_hints or bool(knowledge and knowledge.value_hints)
    name_hints = args.name_hints or bool(knowledge and knowledge.name_hints)
    serve(str(model), settings, parse_auth(args.auth, args.auth_file), args.calibration, args.allow_network,
          tables=tables, value_hints=value_hints, name_hints=name_hints)
    return 0


def run_knowledge(model: str):
    """A run folder's knowledge section (from its config.yaml), so `serve --model runs/x` serves its tables, asked
    the way its student was trained; None for anything else."""
    from pathlib import Path
    config = Path(model) / "config.yaml"
    if not (Path(model).is_dir() and config.is_file()):
        return None
    from edgedistill.config import load_config
    try:
        return load_config(config).knowledge
    except UserError:
        return None


def skipped_note(result: EvalResult) -> str:
    return f" ({result.skipped} skipped: too long for the model)" if result.skipped else ""


def selective_answering(model: str, result: EvalResult, questions) -> dict:
    """likely_right_coverage and likely_right_precision of a result (of `questions`), by the model's calibration
    file (beside it, or its run's: its threshold was chosen on other questions); {} without one, or a note when the
    result's k is not the file's."""
    from edgedistill.calibration import load_calibration
    from edgedistill.confidence import selective, signals_of_rows
    from edgedistill.calibration import calibration_of
    path = calibration_of(model)
    if path is None:
        return {}
    calibration = load_calibration(path)
    if result.k != calibration.k:
        return {"likely_right_note": f"{path} was fitted with k={calibration.k}; evaluate with --k {calibration.k}"}
    found = selective(calibration, signals_of_rows(result.rows, questions), [row.correct for row in result.rows])
    return {k: v for k, v in found.items() if k != "precision_coverage"}


def cmd_eval(args) -> int:
    from edgedistill.rundir import served_by_run
    args.model = [str(served_by_run(m) or m) for m in args.model]     # a run folder: the model it serves
    try:
        shots = [int(n) for n in args.shots.split(",")]
    except ValueError:
        shots = [-1]
    if any(n < 0 or n > 64 for n in shots):
        raise UserError(f"--shots takes a number from 0 to 64, or such numbers separated by commas, "
                        f"got {args.shots!r}")
    if len(shots) not in (1, len(args.model)):
        raise UserError(f"--shots has {len(shots)} numbers for {len(args.model)} models: give one, or one per model")
    if args.allow_network:
        os.environ.pop("HF_HUB_OFFLINE", None)
    from edgedistill.config import EvalConfig
    settings = EvalConfig(samples=args.k, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                          batch_size=args.batch_size, calculator_row=not args.no_calculator_row,
                          end_subset=args.end_subset, threads=args.threads, calibrate=args.calibrate, base=False)
    if args.out or len(args.model) > 1 or len(args.data) > 1:
        from edgedistill.rundir import writable_folder
        from edgedistill.evals.compare import compare
        writable_folder(args.out or "eval-report")
        report = compare(args.model, args.data, args.out or "eval-report", settings,
                         shots=shots * len(args.model) if len(shots) == 1 else shots, limit=args.limit,
                         skip=args.skip, fmt=args.format, allow_network=args.allow_network, tables=args.tables,
                         value_hints=args.value_hints or args.name_hints, name_hints=args.name_hints)
        for r in map(EvalResult.from_dict, report["results"]):
            lo, hi = r.ci95
            sampled = f"pass@{r.k} {r.pass_at_k:.1%}, maj@{r.k} {r.maj_at_k:.1%}, ECE {r.figure('ece', 0):.3f}, " \
                if r.pass_at_k is not None else ""
            print(f"{r.model} on {r.data}: pass@1 {r.pass_at_1:.1%} (95% CI {lo:.1%}-{hi:.1%}), {sampled}"
                  f"n={r.n}{skipped_note(r)}, {r.seconds} s")
            if r.figure("text_token_f1") is not None:
                print(f"  free-text answers: exact match {r.figure('text_exact_match'):.1%}, token F1 "
                      f"{r.figure('text_token_f1'):.3f}")
        print(f"report: {os.path.join(args.out or 'eval-report', 'report.md')}")
        if args.json:
            print(json.dumps(report))
        return 0
    from edgedistill.evals.compare import evaluate_one
    # pass@1 (and pass@k of --k samples) only: no second greedy pass without the calculator, no decode to the end
    quick = dataclasses.replace(settings, calculator_row=False, end_subset=0)
    result, questions = evaluate_one(args.model[0], args.data[0], quick, shots=shots[0], limit=args.limit,
                                     skip=args.skip, fmt=args.format, allow_network=args.allow_network,
                                     tables=args.tables, value_hints=args.value_hints or args.name_hints,
                                     name_hints=args.name_hints)
    lo, hi = result.ci95
    print(f"{args.model[0]} on {args.data[0]}: pass@1 {result.pass_at_1:.1%} (95% CI {lo:.1%}-{hi:.1%}), "
          f"n={result.n}{skipped_note(result)}, {result.seconds_per_question} s/question")
    if result.figure("text_token_f1") is not None:
        print(f"free-text answers: exact match {result.figure('text_exact_match'):.1%}, token F1 "
              f"{result.figure('text_token_f1'):.3f}")
    result.figures.update(selective_answering(args.model[0], result, questions))
    if result.figure("likely_right_coverage") is not None:
        precision = result.figure("likely_right_precision")
        print(f"likely right (its calibration file): {result.figure('likely_right_coverage'):.1%} of the questions, "
              f"{'none' if precision is None else f'{precision:.1%}'} of them right")
    if args.json:
        print(json.dumps(result.to_dict(rows=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
