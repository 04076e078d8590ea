"""The one training loop every student recipe runs (SFT, DPO, GRAO, pass@k / maj@k RL), and what they share.

    setup      `load_student`: the model through the resolver (a GGUF is dequantised once), LoRA on the top
               `lora_layers_fraction` of layers (or full fine-tuning), the trainable parameters
    loop       `train_loop`: per optimizer step, `accumulation` micro-batches each give a loss (the recipe's
               closure: offline recipes read a batch, online ones sample from the current policy first); AdamW,
               linear warmup then cosine decay, gradient clipping at 1; on the device and in the precision
               edgedistill.device chooses (a GPU with bf16 autocast when there is one, bf16 autocast on a CPU
               with native bf16, else fp32)
    processes  `accelerate launch` runs it data-parallel (DDP), sharded (FSDP) or under DeepSpeed ZeRO: the model
               and optimizer are prepared together, as FSDP and DeepSpeed need (configs/accelerate/)
    log        train_log.jsonl always, TensorBoard by default (`report_to`), MLflow or W&B when configured
    evaluate   the recipe's dev evaluation every `eval_every` steps (pass@1, maj@k), logged like the loss
    checkpoint every `checkpoint_every` steps: trainable weights, optimizer state, RNG state, step (an atomic
               directory); a killed run resumes there and its loss curve continues the uninterrupted one exactly,
               because every recipe makes step N's batch (or samples) from (seed, N) alone
    merge      LoRA merged into the full-precision base; `merged/` holds safetensors, tokenizer, chat template
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from edgedistill import UserError
from edgedistill.device import Placement, choose
from edgedistill.models import load_model

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Student:
    model: torch.nn.Module        # the PEFT wrapper with LoRA, else the model itself
    backbone: torch.nn.Module     # the causal LM underneath (its decoder and LM head)
    tokenizer: object
    params: list                  # what the optimizer updates
    first_trainable_layer: int    # layers below it never change (LoRA on the top layers only)
    is_lora: bool
    placement: Placement          # the device and precision it trains in
    reload: Callable[[], "Student"] | None = None    # the same student afresh (FSDP/ZeRO: the trained weights,
    gathered: dict | None = None                     # gathered from every process, go into it to be saved)


def load_student(cfg, model_spec: str, allow_network: bool = False) -> Student:
    """`cfg` is a StudentConfig (method, lora_r, lora_alpha, lora_dropout, lora_layers_fraction, precision)."""
    placement = choose(cfg.precision, training=True)
    model, tokenizer = load_model(model_spec, allow_network, placement)   # PEFT puts LoRA beside its layer
    first = 0
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model
        # Adapting only the top layers stops backpropagation there: the frozen bottom needs no gradient.
        n_layers = model.config.num_hidden_layers
        first = n_layers - max(1, round(n_layers * cfg.lora_layers_fraction))
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM",
                                                 layers_to_transform=list(range(first, n_layers))))
    model.train()
    backbone = model.get_base_model() if cfg.method == "lora" else model
    params = [p for p in model.parameters() if p.requires_grad]
    return Student(model, backbone, tokenizer, params, first, cfg.method == "lora", placement,
                   reload=lambda: load_student(cfg, model_spec, allow_network))


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class MetricsLog:
    """train_log.jsonl (always), plus TensorBoard, MLflow or W&B: `report_to` is a list of those names."""

    def __init__(self, out: Path, report_to: list[str], run_name: str, resumed_at: int = 0):
        self.path, self.sinks = out / "train_log.jsonl", []
        if self.path.exists():   # steps after the checkpoint a killed run resumes from are run (and logged) again
            from edgedistill.records import write_text_atomic
            kept = [line for line in self.path.read_text().splitlines(keepends=True) if _step_of(line) <= resumed_at]
            write_text_atomic(self.path, "".join(kept))
        for name in report_to:
            if name == "tensorboard":
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:
                    raise UserError("report_to tensorboard needs the tensorboard package: pip install tensorboard "
                                    "(or set student.report_to: [])") from None
                writer = SummaryWriter(str(out / "tensorboard"))
                self.sinks.append(lambda step, values, w=writer: [w.add_scalar(k, v, step) for k, v in values.items()]
                                  and w.flush())
            elif name == "mlflow":
                mlflow = _import_or_explain("mlflow")
                mlflow.start_run(run_name=run_name)
                self.sinks.append(lambda step, values: mlflow.log_metrics(values, step=step))
            elif name == "wandb":
                wandb = _import_or_explain("wandb")
                wandb.init(project="edgedistill", name=run_name)
                self.sinks.append(lambda step, values: wandb.log(values, step=step))
            else:
                raise UserError(f"report_to: {name!r} is not one of tensorboard, mlflow, wandb")

    def write(self, step: int, values: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        for sink in self.sinks:
            sink(step, numbers)


def _step_of(line: str) -> float:
    """A log line's step; a line torn by a kill counts as after any checkpoint (it is dropped)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def _import_or_explain(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise UserError(f"report_to {name} needs the {name} package: pip install {name}") from None


def train_loop(student: Student, out: Path, cfg, total_steps: int,
               micro_loss: Callable[[int, int], tuple[torch.Tensor, dict]],
               evaluate: Callable[[int], dict] | None = None, name: str = "train") -> dict:
    """Run optimizer steps up to `total_steps` (resuming from out/checkpoints): step N's loss is the mean of
    `micro_loss(N, m)` over m < cfg.accumulation, each backpropagated as it is made (memory of one micro-batch).
    `cfg`: learning_rate, warmup_steps, accumulation, batch_size, checkpoint_every, eval_every, precision, report_to."""
    out.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(student.params, lr=cfg.learning_rate, weight_decay=0.0)
    checkpoints = out / "checkpoints"
    parallel = Processes(student, micro_loss, cfg.accumulation, cfg.batch_size)
    # FSDP and ZeRO hold each process's shard of the weights and optimizer: a killed run restarts its stage
    step = 0 if parallel.sharded else load_checkpoint(checkpoints, student.model, optimizer)
    optimizer = parallel.prepare(optimizer)
    main_process = parallel.rank == 0
    if main_process:
        print(f"{name}: {parallel.describe()} on {student.placement.describe()}", flush=True)
        if parallel.sharded and evaluate and cfg.eval_every:
            print(f"{name}: no dev evaluation during training under {parallel.kind} (each process holds a shard)",
                  flush=True)
    log = MetricsLog(out, list(cfg.report_to) if main_process else [], name, resumed_at=step)
    bar = tqdm(total=total_steps, initial=step, desc=name, unit="step", disable=not main_process)
    started, values = time.time(), {}
    while step < total_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, cfg.warmup_steps, cfg.learning_rate)
        totals: dict[str, float] = {}
        for micro in range(cfg.accumulation):
            with parallel.accumulate(), student.placement.scope():
                loss, metrics = parallel(step, micro)
                parallel.backward(loss)
            for key, value in {"loss": parallel.total(loss), **metrics}.items():
                totals[key] = totals.get(key, 0.0) + value / cfg.accumulation
        grad_norm = parallel.clip_grad_norm(student.params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        values = {**{k: round(v, 6) for k, v in totals.items()}, "lr": optimizer.param_groups[0]["lr"],
                  "grad_norm": round(grad_norm, 6)}
        if evaluate and main_process and not parallel.sharded and cfg.eval_every and (step % cfg.eval_every == 0 or step == total_steps):
            student.model.eval()
            values.update({f"dev/{k}": v for k, v in evaluate(step).items()})
            student.model.train()
        if main_process:
            log.write(step, values)
            if step % cfg.checkpoint_every == 0 and step < total_steps and not parallel.sharded:
                save_checkpoint(checkpoints, student.model, optimizer, step)
        bar.set_postfix(loss=f"{values['loss']:.3f}")
        bar.update(1)
    bar.close()
    if parallel.sharded:          # every process takes part in gathering; the first saves (finish_stage)
        gathered = parallel.full_state()
        student.gathered = gathered if main_process else None
    return {"steps": total_steps, "final": values, "train_seconds": round(time.time() - started, 1),
            "processes": parallel.world}


def sharded_launch() -> bool:
    """Started by `accelerate launch` with FSDP or DeepSpeed (which set these for the processes they start)."""
    return any(os.environ.get(name, "").lower() == "true" for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def shard() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) unless started by `accelerate launch` or torchrun.
    A recipe makes the global batch of a step (batch_size x processes) and keeps its own slice of it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class Processes:
    """One process, or several through accelerate (`accelerate launch`; configs/accelerate/ has DDP, FSDP and
    DeepSpeed ZeRO-2 files). A plain call with one process.

    DDP and FSDP average gradients over processes, so a recipe scales its local loss to the global batch (local sum
    over global token count, times the number of processes): N processes then train exactly as one with an N
    times larger batch. The recipe's loss runs inside this module's forward, because DDP synchronises, and FSDP
    gathers weights for, only what runs through the module it wraps. The model and the optimizer are prepared
    together: FSDP shards the parameters the optimizer holds, and DeepSpeed builds its engine from both."""

    def __init__(self, student: Student, micro_loss: Callable, accumulation: int, batch_size: int):
        self.rank, self.world = shard()
        self.accumulation, self.batch_size = accumulation, batch_size
        self.step_module = _LossModule(student.model, micro_loss)
        self.accelerator, self.kind = None, "one process"
        if self.world > 1:
            from accelerate import Accelerator
            # accelerate divides each micro-batch's loss by the accumulation (DeepSpeed's engine does it for it)
            self.accelerator = Accelerator(cpu=not student.placement.on_gpu, gradient_accumulation_steps=accumulation)
            self.kind = {"MULTI_GPU": "DDP", "MULTI_CPU": "DDP (gloo)", "FSDP": "FSDP", "DEEPSPEED": "DeepSpeed"}.get(
                self.accelerator.distributed_type.name, self.accelerator.distributed_type.name)

    @property
    def sharded(self) -> bool:
        """Each process holds a shard of the weights (FSDP, DeepSpeed ZeRO): no per-process checkpoint or eval."""
        return self.kind in ("FSDP", "DeepSpeed")

    def describe(self) -> str:
        return self.kind if self.world == 1 else f"{self.world} processes, {self.kind}"

    def prepare(self, optimizer):
        if self.accelerator is None:
            return optimizer
        if self.kind == "DeepSpeed":   # its engine wants the micro-batch size, which it reads from a DataLoader we lack
            plugin = self.accelerator.state.deepspeed_plugin
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = self.batch_size
        self.step_module, optimizer = self.accelerator.prepare(self.step_module, optimizer)
        if self.accelerator.gradient_accumulation_steps != self.accumulation:   # a launcher's or DeepSpeed's value won
            raise UserError(f"accelerate accumulates {self.accelerator.gradient_accumulation_steps} micro-batches "
                            f"(--gradient_accumulation_steps, or gradient_accumulation_steps in the deepspeed_config) "
                            f"but student.accumulation is {self.accumulation}: make them equal")
        return optimizer

    def __call__(self, step: int, micro: int):
        return self.step_module(step, micro)

    def accumulate(self):
        """Gradients are exchanged once per optimizer step, after its last micro-batch (accelerate counts them)."""
        return contextlib.nullcontext() if self.accelerator is None else self.accelerator.accumulate(self.step_module)

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is None:
            (loss / self.accumulation).backward()
        else:
            self.accelerator.backward(loss)

    def clip_grad_norm(self, params: list, max_norm: float) -> float:
        """Clip and return the global gradient norm (FSDP: over every shard; DeepSpeed clips in its engine, by
        `gradient_clipping` in its config, and reports the norm)."""
        if self.accelerator is None:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        else:
            norm = self.accelerator.clip_grad_norm_(self.step_module.parameters(), max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm     # FSDP2: a sharded tensor
        return float(norm) if norm is not None else float("nan")

    def total(self, loss: torch.Tensor) -> float:
        """The global batch's loss: the mean over processes of their scaled local losses."""
        if self.accelerator is None:
            return loss.item()
        return self.accelerator.reduce(loss.detach(), reduction="mean").item()

    def full_state(self) -> dict:
        """The whole model's weights, gathered from every process's shard (all must call), under the model's own
        names; only the first process gets them."""
        state = self.accelerator.get_state_dict(self.step_module)
        return {name.removeprefix("model."): tensor for name, tensor in state.items()}


class _LossModule(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, micro_loss: Callable):
        super().__init__()
        self.model, self.micro_loss = model, micro_loss
        # FSDP's transformer-based wrapping shards each decoder layer on its own: the classes it looks for
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._no_split_modules = getattr(inner, "_no_split_modules", None)

    def forward(self, step: int, micro: int):
        return self.micro_loss(step, micro)


def trainable_state(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(root: Path, model, optimizer, step: int) -> None:
    """Trainable weights, optimizer state, RNG state and step, written to a temp dir and renamed: a kill leaves the
    last complete one. safetensors only (no pickle)."""
    from safetensors.torch import save_file
    tmp = root / f".step-{step:06d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    state = optimizer.state_dict()
    tensors = {f"{pid}.{key}": value for pid, entry in state["state"].items() for key, value in entry.items()
               if torch.is_tensor(value)}
    tensors["rng.cpu"] = torch.get_rng_state()
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "step.json").write_text(json.dumps({"step": step}))
    tmp.replace(root / f"step-{step:06d}")
    for old in sorted(root.glob("step-*"))[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(root: Path, model, optimizer) -> int:
    from safetensors.torch import load_file
    found = sorted(root.glob("step-*")) if root.exists() else []
    if not found:
        return 0
    latest = found[-1]
    weights = load_file(latest / "trainable.safetensors")
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            named[name].copy_(value)
    state = optimizer.state_dict()
    tensors = load_file(latest / "optimizer.safetensors")
    rng = tensors.pop("rng.cpu", None)
    if rng is not None:
        torch.set_rng_state(rng)
    for key, value in tensors.items():
        pid, field = key.split(".", 1)
        state["state"].setdefault(int(pid), {})[field] = value
    optimizer.load_state_dict(state)
    step = json.loads((latest / "step.json").read_text())["step"]
    print(f"{root.parent.name}: resuming at step {step}", flush=True)
    return step


def finish_stage(student: Student, out: Path, merged: Path) -> None:
    """Merge and save the model, then drop the stage's checkpoints (the merged model supersedes them). With
    several processes the first writes; the others wait for it."""
    if shard()[0] == 0:
        if student.gathered is not None:      # FSDP/ZeRO: the gathered weights, in a student of one piece
            trained = student.reload()
            trained.model.load_state_dict(student.gathered)
            student = trained
        save_merged(student, merged)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    if shard()[1] > 1:
        torch.distributed.barrier()


def save_merged(student: Student, target: Path) -> None:
    model = student.model.merge_and_unload() if student.is_lora else student.model
    model.eval()
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    student.tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
