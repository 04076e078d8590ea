"""Student stage: supervised fine-tuning on answer-first calculator targets, LoRA or full, then merge.

Recipe (one file, top to bottom, torchtune-style skeleton):
    setup      load the student through the resolver (GGUF is dequantised once), wrap it in LoRA (or not)
    data       tokenise prompt + completion with the calculator split (`encode_completion`); loss on completion
               tokens only (prompt labels are -100), EOS appended so the student learns to stop
    train      AdamW, linear warmup then cosine decay; bf16 autocast where the CPU has native bf16
    checkpoint every `checkpoint_every` steps: trainable weights, optimizer, scheduler, step (atomic directory)
    merge      LoRA merged into the base weights; `student/merged/` holds safetensors, tokenizer, chat template

A killed run resumes from its last checkpoint and repeats at most one checkpoint interval: the shuffle of each
epoch is a function of (seed, epoch), so the batches after the checkpoint are the ones the killed run would have
seen.

The student learns on the dequantised Q4_1 SmolLM2 by default: its weights are the 4-bit values in fp32, which
is what the packaged model offers offline; the merged student is saved in fp32.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from edgedistill import UserError
from edgedistill.config import Config
from edgedistill.generate import encode_completion, render_prompt
from edgedistill.models import load_model
from edgedistill.records import read_jsonl

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tokenise(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """input_ids and labels per example; labels are -100 on the prompt so only the completion is learned."""
    examples = []
    for row in rows:
        prompt_ids = tokenizer.encode(render_prompt(tokenizer, row["prompt"]), add_special_tokens=False)
        completion = row["completion"][-1]["content"]
        completion_ids = encode_completion(tokenizer, completion) + [tokenizer.eos_token_id]
        ids = (prompt_ids + completion_ids)[:max_length]
        labels = ([-100] * len(prompt_ids) + completion_ids)[:max_length]
        examples.append({"input_ids": ids, "labels": labels, "weight": float(row.get("weight", 1.0)),
                         "index": len(examples)})
    return examples


def collate(examples: list[dict], pad_id: int) -> dict:
    width = max(len(e["input_ids"]) for e in examples)
    def pad(seq, value):
        return seq + [value] * (width - len(seq))
    return {"input_ids": torch.tensor([pad(e["input_ids"], pad_id) for e in examples]),
            "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in examples]),
            "labels": torch.tensor([pad(e["labels"], -100) for e in examples]),
            "weight": torch.tensor([e["weight"] for e in examples]),
            "index": [e["index"] for e in examples]}


class FrozenBottom:
    """The hidden states after the frozen bottom layers, kept per example and reused in every later epoch.

    With LoRA on the top layers only, the bottom layers (and the embeddings) never change, so an example's hidden
    state after them is the same every epoch: the second epoch skips a third of the forward pass (about 30 s of
    the quickstart). Exact because batches are right-padded and attention is causal: a real token never sees a
    pad, so its state does not depend on which examples share its batch. About 0.5 MB per example at 576 wide.
    """

    def __init__(self, decoder, n_frozen: int):
        self.decoder, self.n_frozen = decoder, n_frozen
        self.states: dict[int, torch.Tensor] = {}

    def hidden(self, batch: dict) -> torch.Tensor:
        ids, lengths = batch["index"], batch["attention_mask"].sum(-1).tolist()
        if not all(i in self.states for i in ids):
            captured = {}
            hook = self.decoder.layers[self.n_frozen - 1].register_forward_hook(
                lambda module, args, output: captured.setdefault("h", _tensor(output).detach()))
            try:
                hidden = _decoder_hidden(self.decoder, batch, input_ids=batch["input_ids"])
            finally:
                hook.remove()
            for i, length, h in zip(ids, lengths, captured["h"]):
                self.states[i] = h[:length].clone()
            return hidden
        width = batch["input_ids"].shape[1]
        embeds = torch.zeros(len(ids), width, self.states[ids[0]].shape[-1], dtype=self.states[ids[0]].dtype)
        for row, i in enumerate(ids):
            embeds[row, :len(self.states[i])] = self.states[i]
        all_layers = self.decoder.layers
        self.decoder.layers = all_layers[self.n_frozen:]   # the decoder runs whatever `layers` holds, in order
        try:
            return _decoder_hidden(self.decoder, batch, inputs_embeds=embeds)
        finally:
            self.decoder.layers = all_layers


def _tensor(output):
    return output[0] if isinstance(output, tuple) else output


def _decoder_hidden(decoder, batch: dict, **inputs) -> torch.Tensor:
    return decoder(attention_mask=batch["attention_mask"], use_cache=False, **inputs).last_hidden_state


def completion_logits(backbone, batch: dict, frozen: FrozenBottom | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at completion positions only, with their targets and the example each belongs to.

    The LM head (vocabulary x width) is the costliest matrix of a small model; running it on the prompt
    positions, whose labels are masked anyway, would spend about half of a CPU step for nothing.
    """
    hidden = frozen.hidden(batch) if frozen else _decoder_hidden(backbone.get_decoder(), batch,
                                                                 input_ids=batch["input_ids"])
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    rows = torch.arange(targets.shape[0])[:, None].expand_as(targets)[mask]
    logits = backbone.get_output_embeddings()(hidden[:, :-1][mask])
    return logits, targets[mask], rows


def completion_loss(logits: torch.Tensor, targets: torch.Tensor, token_weight: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """Mean next-token NLL over completion tokens, each token scaled by its example's weight.

    Token-level mean over the batch: an example counts in proportion to its completion length, as in TRL's SFT.
    """
    nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    if token_weight is not None:
        nll = nll * token_weight
    return nll.sum() / max(1, targets.numel())


def batches_for_epoch(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar length (less padding): shuffle, sort within windows of 8 batches, shuffle
    the batches. A function of (seed, epoch) only, so a resumed run sees the same batches."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 8
    order = [i for w in range(0, len(order), window) for i in sorted(order[w:w + window], key=lengths.__getitem__)]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def autocast_dtype() -> torch.dtype | None:
    """bf16 autocast only where the CPU has native bf16 (AVX512-BF16 or AMX); elsewhere it is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else None


def run_sft(config: Config, sft_file: Path, out: Path) -> dict:
    cfg = config.student
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    rows = [row for _, row in read_jsonl(sft_file)]
    if not rows:
        raise UserError(f"{sft_file}: no training examples (the teacher verified none); nothing to train on")
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(cfg.model, config.allow_network)
    first = 0   # layers below this one stay frozen
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model
        # Adapting only the top layers stops backpropagation there: the frozen bottom needs no gradient.
        n_layers = model.config.num_hidden_layers
        first = n_layers - max(1, round(n_layers * cfg.lora_layers_fraction))
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM",
                                                 layers_to_transform=list(range(first, n_layers))))
    model.train()
    examples = tokenise(tokenizer, rows, cfg.max_length)
    lengths = [len(e["input_ids"]) for e in examples]
    backbone = model.get_base_model() if cfg.method == "lora" else model
    frozen = FrozenBottom(backbone.get_decoder(), first) if first > 0 and cfg.epochs > 1 else None
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    total_steps = max(1, round(steps_per_epoch * cfg.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)

    checkpoints = out / "checkpoints"
    step = load_checkpoint(checkpoints, model, optimizer)
    log_path = out / "train_log.jsonl"
    amp = autocast_dtype()
    print(f"student: {len(examples)} examples, {total_steps} steps of {cfg.batch_size} ({cfg.method}"
          f"{f' r={cfg.lora_r}' if cfg.method == 'lora' else ''}), "
          f"{sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters"
          f"{f', resuming at step {step}' if step else ''}", flush=True)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step")
    started = time.time()
    while step < total_steps:
        epoch, index = divmod(step, steps_per_epoch)
        batch = collate([examples[i] for i in batches_for_epoch(lengths, cfg.batch_size, config.seed, epoch)[index]],
                        tokenizer.pad_token_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, cfg.warmup_steps, cfg.learning_rate)
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            logits, targets, rows_of_tokens = completion_logits(backbone, batch, frozen)
        loss = completion_loss(logits, targets, batch["weight"][rows_of_tokens])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        with log_path.open("a") as log:
            log.write(json.dumps({"step": step, "loss": round(loss.item(), 5), "lr": optimizer.param_groups[0]["lr"]}) + "\n")
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
        if step % cfg.checkpoint_every == 0 and step < total_steps:
            save_checkpoint(checkpoints, model, optimizer, step)
    bar.close()
    merged = out / "merged"
    save_merged(model, tokenizer, merged, cfg.method == "lora")
    shutil.rmtree(checkpoints, ignore_errors=True)
    return {"steps": total_steps, "examples": len(examples), "final_loss": round(loss.item(), 4) if step else None,
            "train_seconds": round(time.time() - started, 1), "merged": str(merged)}


def trainable_state(model) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(root: Path, model, optimizer, step: int) -> None:
    """Trainable weights + optimizer state + step, written to a temp dir and renamed: a kill leaves the last one."""
    from safetensors.torch import save_file
    tmp = root / f".step-{step:06d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    state = optimizer.state_dict()
    tensors = {f"{pid}.{key}": value for pid, entry in state["state"].items() for key, value in entry.items()
               if torch.is_tensor(value)}
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
    for key, value in tensors.items():
        pid, field = key.split(".", 1)
        state["state"].setdefault(int(pid), {})[field] = value
    optimizer.load_state_dict(state)
    return json.loads((latest / "step.json").read_text())["step"]


def save_merged(model, tokenizer, target: Path, is_lora: bool) -> None:
    if is_lora:
        model = model.merge_and_unload()
    model.eval()
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
