"""What every long teacher round shares: its work cut into indexed chunks (resume redoes only unfinished ones, each
seeded by its index), and its cost summed over every resume (tokens written, seconds spent) in a small JSON file
beside the round's logs, so its card can say what the whole round cost however often it was stopped."""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from edgedistill.records import read_json_object, write_json_atomic


def unfinished_chunks(items: list, size: int, unfinished) -> list[tuple[int, list]]:
    """(index, chunk) of the chunks of `size` cut from the whole list that hold an item `unfinished(item)` says is
    not written yet: the index stays the chunk's place in the whole list, so a resumed chunk gets the same seed."""
    chunks = [items[i:i + size] for i in range(0, len(items), max(1, size))]
    return [(index, chunk) for index, chunk in enumerate(chunks) if any(unfinished(item) for item in chunk)]


# Each round draws from its own seeds: a round's chunk i never shares a seed with another round's chunk i.
SEED_OFFSETS = {"sample": 0, "correct": 100_000, "negative": 200_000, "evolve": 300_000, "rationalize": 400_000}


def chunk_seed(seed: int, round_name: str, index: int) -> int:
    """The sampling seed of a round's chunk: the run's seed, the round's own offset, the chunk's index."""
    return seed * 1_000_003 + SEED_OFFSETS[round_name] + index


class RoundClock:
    """A round's progress bar (items, tokens/s, ETA) and its cost file: `tick(n)` after each chunk of n items adds
    the chunk's tokens and seconds to `path`; `close()` at the end."""

    def __init__(self, path: str | Path, generator, *, chunks: list[tuple[int, list]], desc: str, unit: str):
        self.path, self.generator = Path(path), generator
        self.bar = tqdm(total=sum(len(chunk) for _, chunk in chunks), desc=desc, unit=unit)
        self.started = self.clock = time.time()
        self.tokens_before = self.counted = getattr(generator, "generated_tokens", 0)

    def tick(self, items: int) -> None:
        made = getattr(self.generator, "generated_tokens", 0)
        progress = read_json_object(self.path)
        write_json_atomic(self.path, {"tokens": progress.get("tokens", 0) + made - self.counted,
                                      "seconds": progress.get("seconds", 0.0) + time.time() - self.clock})
        self.counted, self.clock = made, time.time()
        self.bar.update(items)
        rate = (made - self.tokens_before) / max(1e-9, time.time() - self.started)
        self.bar.set_postfix({"tok/s": f"{rate:.1f}"})

    def close(self) -> None:
        self.bar.close()
