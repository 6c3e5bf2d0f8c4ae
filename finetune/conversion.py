"""GGUF → safetensors conversion cache, done once per GGUF file and reused afterwards.

Building a tokenizer and dequantizing weights from a GGUF file takes tens of seconds on a small CPU;
loading the same model from a safetensors folder takes a couple. `ensure_converted` turns a GGUF file
into a normal Hugging Face folder (config, bf16 `model.safetensors`, tokenizer with its chat template)
and records the GGUF file's sha256 in a marker, `groundwork-conversion.json`, written last.

A folder counts as a valid cache only if its marker names the same sha256 and format version. The
conversion is written into a temporary folder next to the target and renamed into place, under a file
lock, so a crash at any point leaves either the previous state or nothing — never a half folder that
is taken as valid — and two processes converting at once do the work only once.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import GroundworkError
from ingest.files import fsync_dir  # finetune.export imports it from here
from ingest.model_cache import MARKER_NAME, build_atomically, fsync_tree, read_marker  # re-exported for finetune

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")


class ConversionError(GroundworkError):
    """The GGUF file could not be converted into a safetensors folder."""


@dataclass(frozen=True)
class ConversionResult:
    """Where the converted folder is, which GGUF it came from, and whether this call did the work."""

    path: Path  # the safetensors folder
    gguf_sha256: str  # sha256 of the GGUF file it was made from
    converted: bool  # True if this call converted; False if a valid cache was reused
    seconds: float  # time spent in ensure_converted


# --------------------------------------------------------------------------------------------- hashing

_hash_memo: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file, memoised per process on (path, size, mtime) — ~0.1 s for the 98 MB SmolLM2 GGUF."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key in _hash_memo:
            return _hash_memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_memo[key] = value
    return value


# ---------------------------------------------------------------------------------------------- marker


def is_valid_cache(folder: Path, gguf_sha256: str) -> bool:
    """True if `folder` holds a finished conversion of the GGUF file with this sha256."""
    marker = read_marker(folder)
    if marker is None:
        return False
    if marker.get("format_version") != FORMAT_VERSION or marker.get("gguf_sha256") != gguf_sha256:
        return False
    return all((folder / name).is_file() for name in _REQUIRED_FILES)


# ------------------------------------------------------------------------------------------ conversion


def _export(gguf_path: Path, out_dir: Path) -> None:
    """Load the GGUF with transformers (dequantized to bf16) and save model + tokenizer into `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    directory, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    # dequantize=True: plain nn.Linear weights (transformers 5 otherwise keeps GGUF blocks packed, and may
    # try to fetch a matmul kernel from the Hub); a packed model cannot be saved as safetensors.
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=filename, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    # save_pretrained refuses a GGUF-loaded model while it still carries the GGUF quantizer.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.config.name_or_path = ""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def ensure_converted(gguf_path: Path, target: Path, *, lock_timeout: float = 1800.0) -> ConversionResult:
    """Convert `gguf_path` into the safetensors folder `target` unless a valid conversion is already there.

    A folder without a matching marker (a crash, a different GGUF, an older format) is replaced.
    """
    started = time.perf_counter()
    gguf_path = Path(gguf_path)
    target = Path(target)
    if not gguf_path.is_file():
        raise ConversionError(f"{gguf_path}: GGUF file not found")
    sha = file_sha256(gguf_path)

    def build(out_dir: Path) -> None:
        logger.info("Converting %s into %s (once; later loads reuse it)", gguf_path.name, target)
        try:
            _export(gguf_path, out_dir)
        except ConversionError:
            raise
        except Exception as exc:
            first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            raise ConversionError(f"{gguf_path}: conversion failed: {type(exc).__name__}: {first_line}") from exc

    marker = {
        "format_version": FORMAT_VERSION,
        "gguf_file": gguf_path.name,
        "gguf_sha256": sha,
        "gguf_size": gguf_path.stat().st_size,
        "dtype": "bfloat16",
        "transformers_version": _transformers_version(),
    }
    converted = build_atomically(target, build, marker, lambda folder: is_valid_cache(folder, sha),
                                 lock_timeout=lock_timeout, error=ConversionError)
    return ConversionResult(target, sha, converted, time.perf_counter() - started)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__
