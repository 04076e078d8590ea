"""Preference pairs for DPO: chosen = verified and best scored, rejected = failed, of similar length.

Per question (SPHERE arXiv 2503.04813; InfiAlign arXiv 2508.05496):
- chosen: a verified sample (first round or self-correction), the best by step score (ties: the shorter);
- rejected: a sample that failed verification. A weaker model's or the student's own wrong answers come first
  (`origin == "negative"`; InfiAlign's recipe: the student's errors are what it must unlearn), then the teacher's;
- margin: the chosen's step score must exceed the rejected's by at least `margin`, so a pair never says that the
  better-looking reasoning is the worse one (0.0 keeps every pair whose chosen steps score at least as well);
- length balance: only failed samples within `max_length_ratio` of the chosen's length qualify (negatives first,
  then the closest in length); a question with none gives no pair. Without this a preference set can teach
  "longer is better" (or shorter). The report gives the share of pairs whose chosen is the longer.

Every pair satisfies verify(chosen) and not verify(rejected); a test checks it.
"""
from __future__ import annotations

from edgedistill.formats import chat
from edgedistill.records import Question, Sample, as_samples, by_question


def _score(sample: Sample) -> float:
    return float(sample.scores.get("min", 0.0))


def build_pairs(questions: list[Question], samples: list, margin: float = 0.0,
                max_length_ratio: float = 1.5) -> tuple[list[dict], dict]:
    """(pairs in TRL's conversational preference format, report of counts and drops); `samples`: Samples, or the
    teacher log's records."""
    groups = by_question(as_samples(samples))
    pairs, dropped = [], {"no verified sample": 0, "no failed sample": 0, "margin": 0, "length": 0}
    for q in questions:
        group = groups.get(q.id, [])
        good = [s for s in group if s.verdict.get("correct") and s.origin != "negative"]
        bad = [s for s in group if not s.verdict.get("correct") and s.text.strip()]
        if not good:
            dropped["no verified sample"] += 1
            continue
        if not bad:
            dropped["no failed sample"] += 1
            continue
        chosen = min(good, key=lambda s: (-_score(s), len(s.text), s.id))
        bad = [s for s in bad if _score(chosen) - _score(s) >= margin]
        if not bad:
            dropped["margin"] += 1
            continue
        bad = [s for s in bad if _length_ratio(chosen, s) <= max_length_ratio]
        if not bad:
            dropped["length"] += 1
            continue
        rejected = min(bad, key=lambda s: (s.origin != "negative", _length_ratio(chosen, s), s.id))
        pairs.append({"id": q.id, "prompt": chat(q),
                      "chosen": [{"role": "assistant", "content": chosen.text}],
                      "rejected": [{"role": "assistant", "content": rejected.text}],
                      "chosen_id": chosen.id, "rejected_id": rejected.id,
                      "rejected_origin": rejected.origin,
                      "score_margin": round(_score(chosen) - _score(rejected), 4)})
    longer = sum(len(p["chosen"][0]["content"]) > len(p["rejected"][0]["content"]) for p in pairs)
    report = {"pairs": len(pairs), "dropped": dropped,
              "chosen_longer_share": round(longer / len(pairs), 4) if pairs else None,
              "mean_length_ratio": round(sum(len(p["chosen"][0]["content"]) / max(1, len(p["rejected"][0]["content"]))
                                             for p in pairs) / len(pairs), 4) if pairs else None,
              "rejected_from_negatives": sum(p["rejected_origin"] == "negative" for p in pairs)}
    return pairs, report


def _length_ratio(a: Sample, b: Sample) -> float:
    la, lb = max(1, len(a.text)), max(1, len(b.text))
    return max(la, lb) / min(la, lb)
