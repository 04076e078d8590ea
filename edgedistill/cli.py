"""The `edgedistill` command. Each subcommand imports its stage only when it runs.

    edgedistill run   --config configs/quickstart.yaml --out runs/quickstart   teacher -> student -> eval -> report
    edgedistill teach --config C --out DIR        only the teacher stage (writes DIR/teacher/)
    edgedistill train --config C --out DIR        only the student stage: student.stages (sft, dpo, online) on DIR/teacher/
    edgedistill eval  --model M --data FILE.jsonl [--limit N] [--shots K] [--json]
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
  edgedistill serve --model runs/quickstart/export/student-Q4_K_M.gguf

models: a packaged name (smollm2-135m-instruct, qwen2.5-coder-1.5b-instruct), a hub id already in the local
Hugging Face cache, a folder with config.json + *.safetensors, or a .gguf file.
data: shopfloor:train|dev|heldout (shipped) or JSONL lines {"question": ..., "answer": ...}; GSM8K's
"... #### 42" answers work as they are."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgedistill", description="Distil reasoning into a small model that runs "
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
    p = sub.add_parser("eval", help="score any model on a JSONL of questions (greedy, with the calculator)",
                       description="Greedy decoding with the calculator, stopped at the end of the Answer line.")
    p.add_argument("--model", required=True, help="packaged name, hub id, HF folder or .gguf file")
    p.add_argument("--data", required=True, help="JSONL of {question, answer}, or shopfloor:heldout")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--shots", type=int, default=0, help="worked examples in the prompt (for untrained models)")
    p.add_argument("--batch-size", type=int, default=64, help="rows decoded together (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=48)
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
    p.add_argument("--min-agreement", type=float, default=0.9, help="top-1 agreement an artifact needs (0.9)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check (not recommended)")
    p.add_argument("--force", action="store_true", help="keep artifacts that fail the parity check")
    p.add_argument("--calibration", default=None, metavar="SFT.jsonl",
                   help="training conversations (e.g. runs/x/teacher/sft/train.jsonl) whose activations steer the "
                        "rounding (an importance matrix, as llama-imatrix makes); default: plain rounding")
    p.add_argument("--calibration-rows", type=int, default=32, help="how many of them (default 32)")
    p = sub.add_parser("serve", help="the factory-floor Q&A web app (answer, computation, reasoning, confidence)",
                       description="Starts a Gradio app. Binds 127.0.0.1 unless --host says otherwise; "
                                   "sends nothing off the machine.")
    p.add_argument("--model", required=True, help="a .gguf file (llama.cpp) or anything the resolver takes")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--samples", type=int, default=5, help="sampled answers for the confidence (0: off)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # the hub is reached only through the resolver, when asked
    try:
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "export":
            from pathlib import Path
            from edgedistill.config import ExportConfig
            from edgedistill.records import load_questions
            from export.gguf import read_calibration
            from export.run import run_export
            calibration = read_calibration(Path(args.calibration), args.calibration_rows) if args.calibration else None
            cfg = ExportConfig(quant=args.quant, more_quants=[q for q in args.more_quants.split(",") if q.strip()],
                               onnx=args.onnx, parity=not args.no_parity, min_agreement=args.min_agreement,
                               force=args.force)
            questions = [] if args.no_parity else load_questions(args.eval_data)
            result = run_export(cfg, Path(args.model), Path(args.out), calibration, questions, args.base)
            print(json.dumps({k: v for k, v in result.items() if k != "parity"}, indent=2))
            return 0
        if args.command == "serve":
            from serve.app import serve
            serve(args.model, args.host, args.port, args.samples)
            return 0
        from edgedistill.config import load_config
        from edgedistill.pipeline import run_pipeline
        config = load_config(args.config)
        report = run_pipeline(config, args.out, only=None if args.command == "run" else args.command)
        if args.command == "run":
            print((__import__("pathlib").Path(args.out) / "report.md").read_text())
        return 0
    except UserError as exc:
        print(f"edgedistill: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgedistill: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def cmd_eval(args) -> int:
    from edgedistill.formats import answer_first_target
    from edgedistill.generate import load_generator
    from edgedistill.records import load_questions
    from evals.evaluate import evaluate
    questions = load_questions(args.data, limit=args.limit)
    shots = [(q, answer_first_target(q)) for q in load_questions("shopfloor:train", limit=args.shots)] \
        if args.shots else []
    if args.allow_network:
        os.environ.pop("HF_HUB_OFFLINE", None)
    generator = load_generator(args.model, args.allow_network)
    result = evaluate(generator, questions, shots, args.batch_size, args.max_new_tokens, "eval")
    lo, hi = result["ci95"]
    print(f"{args.model} on {args.data}: pass@1 {result['pass@1']:.1%} (95% CI {lo:.1%}-{hi:.1%}), "
          f"n={result['n']}, {result['seconds_per_question']} s/question")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
