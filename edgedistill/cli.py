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
import json
import os
import sys

from edgedistill import UserError, __version__

EPILOG = """examples:
  edgedistill run --config configs/quickstart.yaml --out runs/quickstart
  edgedistill eval --model runs/quickstart/student/merged --data shopfloor:heldout --limit 50
  edgedistill eval --model smollm2-135m-instruct --data my_questions.jsonl --shots 2 --json
  edgedistill eval --model smollm2-135m-instruct --model runs/quickstart/export/student-Q4_K_M.gguf --shots 2,0 \
      --data ../shared/data/svamp/SVAMP.json --data ../shared/data/fmc_mwo2kg/dev.txt --out runs/evals --calibrate
  edgedistill serve --model runs/quickstart/export/student-Q4_K_M.gguf

models: a packaged name (smollm2-135m-instruct, qwen2.5-coder-1.5b-instruct), a hub id already in the local
Hugging Face cache, a folder with config.json + *.safetensors, or a .gguf file.
data: shopfloor:train|dev|heldout (shipped) or JSONL lines {"question": ..., "answer": ...}; GSM8K's
"... #### 42" answers work as they are."""


class Parser(argparse.ArgumentParser):
    """argparse, with a wrong flag reported as one line (and exit code 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind=int, low=None, high=None, none_word: str | None = None):
    """An argparse type: a `kind` number in [low, high]; `none_word` says what leaving the flag out means."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}")
        if value != value or value in (float("inf"), float("-inf")) or (low is not None and value < low) or \
                (high is not None and value > high):
            bounds = f"{low} or more" if high is None else f"between {low} and {high}"
            hint = f"; leave the flag out for {none_word}" if none_word else ""
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}{hint}")
        return value
    return parse


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
                        "JSONL or CSV of {question, answer[, options]}, or shopfloor:heldout (repeatable)")
    p.add_argument("--format", default=None, choices=("gsm8k", "svamp", "fsiq", "fmc", "jsonl", "csv"),
                   help="benchmark format (default: from the file's name and shape)")
    p.add_argument("--out", default=None, help="folder for report.md, report.json and the plots")
    p.add_argument("--limit", type=number(low=1, none_word="all"), default=None, help="N questions per benchmark only")
    p.add_argument("--skip", type=number(low=0), default=0, help="leave out the first N questions of each benchmark")
    p.add_argument("--shots", default="0", help="worked examples in the prompt (for untrained models): one number "
                                                "for all models, or one per --model, comma-separated (2,0)")
    p.add_argument("--k", type=number(low=0), default=4, help="samples per question for pass@k, maj@k and confidence (4)")
    p.add_argument("--temperature", type=number(float, 0.0, 10.0), default=0.7, help="sampling temperature of the k samples (0.7)")
    p.add_argument("--no-calculator-row", action="store_true", help="skip the greedy decode without the calculator")
    p.add_argument("--end-subset", type=number(low=0), default=32, help="questions decoded past the answer to measure tokens "
                                                              "and seconds to the end (default 32; 0: none)")
    p.add_argument("--calibrate", action="store_true", help="write each model's confidence calibration where the "
                                                            "app reads it (beside a .gguf, inside a folder)")
    p.add_argument("--batch-size", type=number(low=1), default=64, help="rows decoded together (default 64)")
    p.add_argument("--max-new-tokens", type=number(low=1, high=1 << 20), default=48)
    p.add_argument("--threads", type=number(low=1, high=4096), default=None, help="llama.cpp decoding threads (default: all cores; 1 "
                                                             "is faster when another job shares the cores)")
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
    p.add_argument("--quant", default="Q4_K_M", help="the main GGUF type: any llama.cpp offers (Q4_K_M, Q8_0, "
                                                     "Q5_K_M, IQ4_XS, ...)")
    p.add_argument("--more-quants", default="Q8_0", help="more GGUF types, comma-separated ('' for none)")
    p.add_argument("--onnx", default="auto", help="auto (smallest int4 setting that passes parity), int4, "
                                                  "int4-int8-head, int4-fp-head, int8, fp32, or none")
    p.add_argument("--eval-data", default="shopfloor:heldout", help="questions for the parity check")
    p.add_argument("--min-agreement", type=number(float, 0.0, 1.0), default=0.9, help="top-1 agreement an artifact needs (0.9)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.add_argument("--force", action="store_true", help="keep artifacts that fail the parity check")
    p.add_argument("--calibration", default=None, metavar="SFT.jsonl",
                   help="training conversations (e.g. runs/x/teacher/sft/train.jsonl) whose activations steer the "
                        "rounding (an importance matrix, as llama-imatrix makes); default: plain rounding")
    p.add_argument("--calibration-rows", type=number(low=1), default=32, help="how many of them (default 32)")
    p = sub.add_parser("serve", help="the factory-floor Q&A web app (answer, computation, reasoning, confidence)",
                       description="A Gradio app: the answer streams first, then the reasoning (collapsible), then a "
                                   "confidence calibrated on held-out questions (the calibration file `edgedistill "
                                   "eval --calibrate` writes beside the model). Binds 127.0.0.1 unless --host says "
                                   "otherwise; sends nothing off the machine. Programs can call it with "
                                   "gradio_client (see the README).",
                       epilog="examples:\n"
                              "  edgedistill serve --model runs/quickstart/export/student-Q4_K_M.gguf\n"
                              "  edgedistill serve --model runs/quickstart/export/onnx --config my.yaml\n"
                              "  edgedistill serve --model student.gguf --host 0.0.0.0 --auth-file users.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a .gguf file (llama.cpp), an ONNX export folder, or anything the "
                                                  "resolver takes (HF folder, packaged name)")
    p.add_argument("--config", default=None, help="YAML config whose `serve:` section sets the defaults below, "
                                                  "the example questions and the supervisor threshold")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only; "
                                                "0.0.0.0 needs --auth)")
    p.add_argument("--port", type=int, default=None, help="default 7860")
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="require a login")
    p.add_argument("--auth-file", default=None, help="a file of USER:PASSWORD lines")
    p.add_argument("--samples", type=int, default=None, help="sampled answers for the confidence (default 4; "
                                                             "a calibration file sets its own; 0: off)")
    p.add_argument("--calibration", default=None, help="calibration JSON (default: the one beside the model)")
    p.add_argument("--feedback", default=None, help="JSONL the thumbs and corrections go to (default "
                                                    "feedback.jsonl); the teacher stage takes it as seed data")
    p.add_argument("--max-question-chars", type=int, default=None, help="longer questions are refused (2000)")
    p.add_argument("--concurrency", type=int, default=None, help="questions answered at once (default 1)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for decoding (default: all cores; on a "
                                                              "workstation busy with other work, fewer is faster)")
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
            from pathlib import Path
            from edgedistill.config import ExportConfig
            from edgedistill.records import load_questions
            from edgedistill.export.gguf import read_calibration
            from edgedistill.rundir import writable_folder
            from edgedistill.export.run import run_export
            writable_folder(args.out)
            calibration = read_calibration(Path(args.calibration), args.calibration_rows) if args.calibration else None
            cfg = ExportConfig(quant=args.quant, more_quants=[q for q in args.more_quants.split(",") if q.strip()],
                               onnx=args.onnx, parity=not args.no_parity, min_agreement=args.min_agreement,
                               force=args.force)
            questions = [] if args.no_parity else load_questions(args.eval_data)
            result = run_export(cfg, Path(args.model), Path(args.out), calibration, questions, args.base)
            print(json.dumps({k: v for k, v in result.items() if k != "parity"}, indent=2))
            return 0
        if args.command == "serve":
            return cmd_serve(args)
        from edgedistill.config import load_config
        from edgedistill.pipeline import run_pipeline
        config = load_config(args.config)
        report = run_pipeline(config, args.out, only=None if args.command == "run" else args.command)
        if args.command == "run":
            print((__import__("pathlib").Path(args.out) / "report.md").read_text())
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


def cmd_serve(args) -> int:
    import dataclasses
    from edgedistill.config import ServeConfig, load_config
    from edgedistill.serve.app import parse_auth, serve
    settings = load_config(args.config).serve if args.config else ServeConfig()
    overrides = {"host": args.host, "port": args.port, "samples": args.samples, "feedback": args.feedback,
                 "max_question_chars": args.max_question_chars, "concurrency": args.concurrency,
                 "threads": args.threads}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    serve(args.model, settings, parse_auth(args.auth, args.auth_file), args.calibration, args.allow_network)
    return 0


def skipped_note(result: dict) -> str:
    return f" ({result['skipped']} skipped: too long for the model)" if result.get("skipped") else ""


def cmd_eval(args) -> int:
    from edgedistill.formats import answer_first_target
    from edgedistill.generate import load_generator
    from edgedistill.records import load_questions
    from edgedistill.evals.evaluate import evaluate
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
    if args.out or len(args.model) > 1 or len(args.data) > 1:
        from edgedistill.rundir import writable_folder
        from edgedistill.evals.compare import EvalSettings, compare
        writable_folder(args.out or "eval-report")
        settings = EvalSettings(k=args.k, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size, calculator_row=not args.no_calculator_row,
                                end_subset=args.end_subset, limit=args.limit, skip=args.skip, format=args.format,
                                threads=args.threads)
        report = compare(args.model, args.data, args.out or "eval-report", settings,
                         shots * len(args.model) if len(shots) == 1 else shots, args.calibrate, args.allow_network)
        for r in report["results"]:
            lo, hi = r["ci95"]
            print(f"{r['model']} on {r['data']}: pass@1 {r['pass@1']:.1%} (95% CI {lo:.1%}-{hi:.1%}), "
                  f"pass@{args.k} {r.get(f'pass@{args.k}', 0):.1%}, maj@{args.k} {r.get(f'maj@{args.k}', 0):.1%}, "
                  f"ECE {r.get('ece', 0):.3f}, n={r['n']}{skipped_note(r)}, {r['seconds']} s")
        print(f"report: {os.path.join(args.out or 'eval-report', 'report.md')}")
        if args.json:
            print(json.dumps(report))
        return 0
    from edgedistill.evals.datasets import load_benchmark
    questions = load_benchmark(args.data[0], args.format, args.limit, args.skip)
    examples = [(q, answer_first_target(q)) for q in load_questions("shopfloor:train", limit=shots[0])] \
        if shots[0] else []
    generator = load_generator(args.model[0], args.allow_network)
    result = evaluate(generator, questions, examples, args.batch_size, args.max_new_tokens, "eval")
    lo, hi = result["ci95"]
    print(f"{args.model[0]} on {args.data[0]}: pass@1 {result['pass@1']:.1%} (95% CI {lo:.1%}-{hi:.1%}), "
          f"n={result['n']}{skipped_note(result)}, {result['seconds_per_question']} s/question")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
