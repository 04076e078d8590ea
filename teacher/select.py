"""Selection (InfiAlign, arXiv 2508.05496): a small, clean, decontaminated, diverse and hard subset within a budget.

    1. quality        verified; not truncated (the rationale, if any, ends a sentence or an annotation); not
                      repetitive (share of repeated word 4-grams at most `max_repetition`)
    2. decontaminate  a record sharing a word n-gram (default 13, InfiAlign's choice) with any evaluation item is
                      dropped; an evaluation item shorter than n words is matched whole
    3. diversity      question embeddings (all-MiniLM-L6-v2, mean-pooled, unit length), k-means with K = sqrt(N)
    4. difficulty     0.7 x (1 - pass rate over the teacher's k samples) + 0.3 x length percentile: hard questions
                      first, and within equal pass rates the longer rationale (InfiAlign's proxy for difficulty)
    5. budget         clusters take turns (the one with fewest picks goes next), each giving its hardest record
                      left, until the record or token budget is met: even coverage, hardest first

Everything is a function of the inputs and the seed (k-means++ draws from a seeded generator): the same data gives
the same subset. Without a budget, steps 3 and 5 are skipped and every clean record is kept.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from edgedistill.answer_rules import words
from edgedistill.records import write_json_atomic
from edgedistill.rundir import TeacherFiles

BANDS = ("easy", "medium", "hard")


def repetition(text: str, n: int = 4) -> float:
    """Share of the word n-grams of `text` that repeat an earlier one (0 for text shorter than n words)."""
    grams = [tuple(g) for g in zip(*(words(text)[i:] for i in range(n)))]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def looks_truncated(rationale: str) -> bool:
    return not rationale.strip() or not re.search(r"[.!?)>\]\"'%\d]\s*$", rationale.strip())


class Contamination:
    """Word n-grams of evaluation items; `hits(text)` says whether a training text shares one with any of them."""

    def __init__(self, eval_texts: list[str], n: int = 13):
        self.n, self.grams, self.whole = n, set(), []
        for text in eval_texts:
            w = words(text)
            if len(w) < n:
                self.whole.append(" " + " ".join(w) + " ")
            else:
                self.grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))

    def hits(self, text: str) -> bool:
        w = words(text)
        if any(tuple(w[i:i + self.n]) in self.grams for i in range(len(w) - self.n + 1)):
            return True
        padded = " " + " ".join(w) + " "
        return any(item in padded for item in self.whole if item.strip())


def embed(texts: list[str], folder: Path, batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings, as sentence-transformers computes all-MiniLM-L6-v2's: mean of token states, unit length."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from edgedistill.device import choose, host
    placement = choose("fp32")   # the GPU when there is one, in fp32 (bf16 would move near-ties between clusters)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = placement.put(AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval())
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = placement.put(dict(tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                                 max_length=256, return_tensors="pt")))
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(host(torch.nn.functional.normalize(pooled, dim=-1)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)


def kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 30) -> np.ndarray:
    """Cluster index per point: k-means++ seeding from a seeded generator, then Lloyd iterations.

    Memory and time stay linear in the number of points: distances come from |x|^2 - 2 x.c + |c|^2 (an N x K
    matrix, never N x K x D), and the seeding keeps each point's distance to its nearest centre so far.
    """
    rng = np.random.default_rng(seed)
    points = points.astype(np.float64)
    k = max(1, min(k, len(points)))
    chosen = [int(rng.integers(len(points)))]
    nearest = ((points - points[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        total = nearest.sum()
        index = int(rng.choice(len(points), p=nearest / total)) if total > 0 else len(chosen)
        chosen.append(index)
        nearest = np.minimum(nearest, ((points - points[index]) ** 2).sum(1))
    centres = points[chosen]
    squared = (points ** 2).sum(1)[:, None]
    labels = np.zeros(len(points), dtype=int)
    for _ in range(iterations):
        labels = (squared - 2 * points @ centres.T + (centres ** 2).sum(1)[None]).argmin(1)
        new = np.array([points[labels == c].mean(0) if (labels == c).any() else centres[c] for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return labels


def difficulty(pass_rates: list[float], lengths: list[int]) -> list[float]:
    order = np.argsort(np.argsort(lengths, kind="stable"), kind="stable")
    percentile = order / max(1, len(lengths) - 1)
    return [round(0.7 * (1 - p) + 0.3 * float(ell), 4) for p, ell in zip(pass_rates, percentile)]


def band(value: float) -> str:
    return BANDS[min(2, int(value * 3))]


def select(candidates: list[dict], config, eval_texts: list[str], seed: int, embedder_folder=None) -> tuple[list[dict], dict]:
    """(kept records, report). A candidate: {"id", "question", "rationale", "text", "pass_rate", "tokens"}."""
    dropped: dict[str, list[str]] = {"not verified": [], "truncated": [], "repetitive": [], "contaminated": []}
    contamination = Contamination(eval_texts, config.ngram)
    clean = []
    for c in candidates:
        reason = ("not verified" if not c.get("verified", True) else
                  "truncated" if c["rationale"] and looks_truncated(c["rationale"]) else   # label-only: no rationale
                  "repetitive" if repetition(c["text"]) > config.max_repetition else
                  "contaminated" if contamination.hits(c["question"] + " " + c["text"]) else None)
        if reason:
            dropped[reason].append(c["id"])
        else:
            clean.append(c)
    scores = difficulty([c["pass_rate"] for c in clean], [c["tokens"] for c in clean])
    for c, d in zip(clean, scores):
        c["difficulty"], c["band"] = d, band(d)
    budgeted = config.budget is not None or config.budget_tokens is not None
    if budgeted and clean:
        k = config.clusters or max(1, round(math.sqrt(len(clean))))
        labels = kmeans(embed([c["question"] for c in clean], embedder_folder), k, seed)
        for c, label in zip(clean, labels):
            c["cluster"] = int(label)
        kept = _round_robin(clean, config.budget, config.budget_tokens)
    else:
        kept = list(clean)
    kept_ids = {c["id"] for c in kept}
    dropped["over budget"] = [c["id"] for c in clean if c["id"] not in kept_ids]
    report = {"candidates": len(candidates), "kept": len(kept), "kept_tokens": sum(c["tokens"] for c in kept),
              "dropped": {reason: len(ids) for reason, ids in dropped.items()},
              "dropped_ids": {reason: ids[:100] for reason, ids in dropped.items() if ids},
              "bands": {b: {"available": sum(c["band"] == b for c in clean), "kept": sum(c["band"] == b for c in kept)}
                        for b in BANDS}}
    if budgeted and clean:
        clusters = sorted({c["cluster"] for c in clean})
        report["clusters"] = [{"cluster": k, "available": sum(c["cluster"] == k for c in clean),
                               "kept": sum(c["cluster"] == k for c in kept),
                               "example": next(c["question"] for c in clean if c["cluster"] == k)[:100]}
                              for k in clusters]
    return sorted(kept, key=lambda c: c["order"]), report


def _round_robin(clean: list[dict], budget: int | None, budget_tokens: int | None) -> list[dict]:
    queues: dict[int, list[dict]] = {}
    for c in sorted(clean, key=lambda c: (-c["difficulty"], c["order"])):
        queues.setdefault(c["cluster"], []).append(c)
    picked: dict[int, int] = {k: 0 for k in queues}
    kept, tokens = [], 0
    while queues and (budget is None or len(kept) < budget):
        cluster = min(queues, key=lambda k: (picked[k], k))
        record = queues[cluster].pop(0)
        if not queues[cluster]:
            del queues[cluster]
        if budget_tokens is not None and tokens + record["tokens"] > budget_tokens:
            continue
        kept.append(record)
        picked[cluster] += 1
        tokens += record["tokens"]
    return kept


def write_selection_report(report: dict, out: Path) -> None:
    """selection.json, and with a budget selection.png: clean and kept records per cluster and difficulty band."""
    write_json_atomic(TeacherFiles(out).selection, report)
    if "clusters" not in report:   # no budget: everything clean was kept, nothing to compare
        (out / "selection.png").unlink(missing_ok=True)
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    clusters = report.get("clusters") or []
    for ax, labels, available, kept, title in (
            (axes[0], [str(c["cluster"]) for c in clusters], [c["available"] for c in clusters],
             [c["kept"] for c in clusters], "per cluster (question embeddings)"),
            (axes[1], list(BANDS), [report["bands"][b]["available"] for b in BANDS],
             [report["bands"][b]["kept"] for b in BANDS], "per difficulty band")):
        x = np.arange(len(labels))
        ax.bar(x - 0.2, available, 0.4, label="clean")
        ax.bar(x + 0.2, kept, 0.4, label="kept")
        ax.set_xticks(x, labels)
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"selection: {report['kept']} of {report['candidates']} records kept")
    fig.tight_layout()
    tmp = out / ".selection.png.tmp"
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(out / "selection.png")
