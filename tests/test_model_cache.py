"""The resolver's caches key on content, not on (name, size, mtime): os.utime gives a different file those.

Two GGUFs of the same architecture and quant type, e.g. a student exported again after more training, have the same
header and tensor table and differ only in their tensor data; under the same name, with the same size and mtime,
the second must neither be served the first's dequantised weights nor pass as the first's verified download.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgedistill import UserError, models
from edgedistill.rundir import file_sha256


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_gguf(path: Path, fill: float) -> Path:
    """A one-tensor GGUF whose header and tensor table are the same whatever `fill`: only the data differ."""
    from gguf import GGUFWriter
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.full((4, 8), fill, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def same_stat(path: Path, like: Path) -> None:
    """Give `path` (already of `like`'s size) `like`'s mtime to the nanosecond, as `touch -r` or `cp -p` would."""
    assert path.stat().st_size == like.stat().st_size
    os.utime(path, ns=(like.stat().st_atime_ns, like.stat().st_mtime_ns))


class FakeDequantised:
    """Stands in for transformers' GGUF loader: its "weights" are the sha256 of the file it was asked to read."""

    def __init__(self, folder, gguf_file):
        self.source = file_sha256(Path(folder) / gguf_file)
        self.config = SimpleNamespace()

    @classmethod
    def from_pretrained(cls, folder, gguf_file):
        return cls(folder, gguf_file)

    def save_pretrained(self, folder, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "config.json").write_text(json.dumps({"source": self.source}))


def test_dequantised_cache_keys_on_content(tmp_path, monkeypatch):
    import transformers
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeDequantised)
    monkeypatch.setattr(transformers, "AutoTokenizer", FakeDequantised)
    first = write_gguf(tmp_path / "run1" / "student.gguf", 1.0)
    second = write_gguf(tmp_path / "run2" / "student.gguf", 2.0)
    same_stat(second, like=first)
    assert file_sha256(first) != file_sha256(second)
    for gguf in (first, second):
        folder = models.dequantised_folder(gguf)
        assert json.loads((folder / "config.json").read_text())["source"] == file_sha256(gguf), \
            f"{gguf} was served another GGUF's dequantised weights"


def test_dequantised_cache_is_reused_for_the_same_content(tmp_path, monkeypatch):
    import transformers
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeDequantised)
    monkeypatch.setattr(transformers, "AutoTokenizer", FakeDequantised)
    first = models.dequantised_folder(write_gguf(tmp_path / "a" / "student.gguf", 1.0))
    copy = write_gguf(tmp_path / "b" / "student.gguf", 1.0)      # another path, the same bytes
    assert models.dequantised_folder(copy) == first


def test_verified_stamp_does_not_pass_a_rewritten_file(tmp_path, monkeypatch):
    """A verified file, rewritten in place with other bytes and its size and mtime put back, is hashed again."""
    # remember even a just-written file, so the stamp itself is what is tested (not the settle rule)
    monkeypatch.setattr(models, "_SETTLE_NS", 0, raising=False)
    path = write_gguf(tmp_path / "model.gguf", 1.0)
    pinned = file_sha256(path)
    models._verify(path, pinned)
    before = path.stat()
    time.sleep(0.05)      # past the kernel's coarse ctime tick (in real use, what the settle rule covers)
    write_gguf(path, 2.0)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(UserError, match="does not match the pinned"):
        models._verify(path, pinned)


def test_verified_stamp_does_not_pass_a_file_rewritten_at_once(tmp_path):
    """The same within the kernel's ctime tick: a file changed this recently is not remembered at all."""
    path = write_gguf(tmp_path / "model.gguf", 1.0)
    pinned = file_sha256(path)
    models._verify(path, pinned)
    before = path.stat()
    write_gguf(path, 2.0)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(UserError, match="does not match the pinned"):
        models._verify(path, pinned)


def test_an_unchanged_file_is_hashed_once(tmp_path, monkeypatch):
    """The point of the stamp: a 1 GB packaged model is not hashed again on every run."""
    monkeypatch.setattr(models, "_SETTLE_NS", 0, raising=False)
    path = write_gguf(tmp_path / "model.gguf", 1.0)
    pinned = file_sha256(path)
    hashed = []
    monkeypatch.setattr(models, "file_sha256", lambda p: hashed.append(p) or file_sha256(p))
    models._verify(path, pinned)
    models._verify(path, pinned)
    assert len(hashed) == 1
