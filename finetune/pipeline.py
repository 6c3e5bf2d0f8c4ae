"""`groundwork finetune`: QA data or the index → grounded examples → QLoRA → a new adapter version with its card."""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finetune.adapters import AdapterError, AdapterRegistry, AdapterVersion, check_name
from finetune.calibrate import calibrate
from finetune.conversion import file_sha256
from finetune.data import (BuildReport, DataError, ExampleOptions, QAItem, build_examples, data_fingerprint, load_qa,
                           questions_from_index)
from finetune.models import DEFAULT_MODEL, load_model
from finetune.splits import DEFAULT_FRACTIONS, split_of
from finetune.train import TrainOptions, TrainResult, train


@dataclass(frozen=True)
class FinetuneOptions:
    """One fine-tuning run."""

    name: str  # adapter name in the registry
    index_dir: Path  # passages (gold and distractors) come from this index
    registry_dir: Path = Path("groundwork-data/adapters")
    model: str = DEFAULT_MODEL  # base model: registry name, Hugging Face id or folder
    data: tuple[Path, ...] = ()  # QA JSONL files
    from_index: bool = False  # also derive questions from the documents' headings
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS  # train / validation / test split by question id
    examples: ExampleOptions = field(default_factory=ExampleOptions)
    training: TrainOptions = field(default_factory=TrainOptions)
    promote: bool = False  # promote the new version when training succeeds
    device: str | None = None  # default: CUDA when available
    validation_examples: int | None = None  # at most this many validation examples (answer and refusal kinds
    #                                         alternating): each costs a forward pass per validation and calibration


def collect_questions(options: FinetuneOptions, reader) -> list[QAItem]:
    items: list[QAItem] = []
    for path in options.data:
        items += load_qa(path)
    if options.from_index:
        items += questions_from_index(reader, options.examples.groups)
    if not items:
        raise DataError("no training data: give --data FILE or --from-index")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise DataError("the QA files share question ids; ids must be unique across --data files")
    return items


def _interleave_kinds(examples: list) -> list:
    """Answer and refusal examples alternating (each kind in its original order), so a prefix keeps both."""
    answers = [e for e in examples if e.kind == "answer"]
    refusals = [e for e in examples if e.kind != "answer"]
    out = []
    for i in range(max(len(answers), len(refusals))):
        out += answers[i:i + 1] + refusals[i:i + 1]
    return out


def finetune(options: FinetuneOptions, embedder=None, show_progress: bool = True) -> AdapterVersion:
    """Train a new version of adapter `options.name`; resumes an interrupted run with the same settings."""
    from ingest.embedding import Embedder
    from ingest.vector_store import open_vector_store

    check_name(options.name)
    registry = AdapterRegistry(options.registry_dir)
    reader = open_vector_store(options.index_dir)
    embedder = embedder or Embedder(reader.embedder)
    items = collect_questions(options, reader)
    splits = {name: [i for i in items if split_of(i.id, options.fractions) == name]
              for name in ("train", "validation", "test")}

    loaded = load_model(options.model, quantize=options.training.quantize, device=options.device)  # fresh instance

    def count(text: str) -> int:
        return len(loaded.tokenizer.encode(text, add_special_tokens=False))

    train_examples, train_report = build_examples(splits["train"], reader, embedder, count, options.examples)
    validation_examples, validation_report = build_examples(splits["validation"], reader, embedder, count,
                                                            options.examples)
    if options.validation_examples is not None:
        validation_examples = _interleave_kinds(validation_examples)[: options.validation_examples]
    work_dir = registry.work_dir(options.name)
    result = train(loaded, train_examples, validation_examples, work_dir, options.training,
                   show_progress=show_progress)

    card = _card(options, loaded, reader, items, splits, train_report, validation_report, result)
    if {e.kind for e in validation_examples} == {"answer", "refusal"}:
        card["decoding"] = calibrate(loaded, validation_examples).to_dict()
    plot = work_dir / "loss.png"
    extra = {"loss.png": plot} if _plot_losses(result, plot, options.name) else {}
    version = registry.add(options.name, result.adapter_dir, card, extra)
    shutil.rmtree(work_dir, ignore_errors=True)
    if options.promote:
        version = registry.promote(version.ref)
    return version


def recalibrate(registry: AdapterRegistry, ref: str, index_dir: Path | None = None, embedder=None) -> dict:
    """Calibrate an existing version's refusal threshold on the validation questions its card lists."""
    from ingest.embedding import Embedder
    from ingest.vector_store import open_vector_store

    version = registry.get(ref)
    card = version.card
    data = card.get("data", {})
    examples_options = dict(card.get("hyperparameters", {}).get("examples", {}))
    examples_options["groups"] = frozenset(examples_options.get("groups", ["everyone"]))
    options = FinetuneOptions(name=version.name, index_dir=Path(index_dir or data.get("index", {}).get("dir", "")),
                              data=tuple(Path(f["path"]) for f in data.get("files", [])),
                              from_index=bool(data.get("from_index")), examples=ExampleOptions(**examples_options))
    reader = open_vector_store(options.index_dir)
    wanted = set(data.get("question_ids", {}).get("validation", []))
    items = [i for i in collect_questions(options, reader) if i.id in wanted]
    if not items:
        raise AdapterError(f"{version.ref}: none of its validation questions are in its data files")
    loaded = load_model(card.get("base", {}).get("model", DEFAULT_MODEL),
                        quantize=bool(card.get("base", {}).get("quantized_4bit", True)), adapter=version.path)
    examples, _ = build_examples(items, reader, embedder or Embedder(reader.embedder),
                                 lambda text: len(loaded.tokenizer.encode(text, add_special_tokens=False)),
                                 options.examples)
    decoding = calibrate(loaded, examples).to_dict()
    registry.update_card(version.ref, {"decoding": decoding})
    return decoding


def _card(options: FinetuneOptions, loaded, reader, items, splits, train_report: BuildReport,
          validation_report: BuildReport, result: TrainResult) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def package(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "base": {"model": options.model, "name_or_path": loaded.model.config.name_or_path,
                 "sha256": loaded.base_sha256, "quantized_4bit": loaded.quantized},
        "data": {
            "files": [{"path": str(p), "sha256": file_sha256(Path(p))} for p in options.data],
            "from_index": options.from_index,
            "index": {"dir": str(options.index_dir), "generation": reader.generation, "embedder": reader.embedder},
            "fingerprint": data_fingerprint(items),
            "split_fractions": list(options.fractions),
            "question_ids": {name: [i.id for i in split] for name, split in splits.items()},
            "examples": {"train": train_report.examples, "validation": validation_report.examples},
            "skipped": {**train_report.skipped, **validation_report.skipped},
        },
        "hyperparameters": {**asdict(options.training), "examples": {**asdict(options.examples),
                                                                     "groups": sorted(options.examples.groups)}},
        "training": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()
                     if k != "adapter_dir"},
        "evaluation": {},
        "software": {name: package(name) for name in ("groundwork", "torch", "transformers", "peft", "bitsandbytes")},
    }


def _plot_losses(result: TrainResult, path: Path, title: str) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps_per_epoch = result.steps / result.epochs_done if result.epochs_done else 1
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([s for s, _ in result.loss_curve], [v for _, v in result.loss_curve], label="training loss", lw=1.2)
    if result.validation_loss:
        ax.plot([e * steps_per_epoch for e, _ in result.validation_loss], [v for _, v in result.validation_loss],
                "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title(f"{title}: QLoRA loss" if result.extra.get("quantized", True) else title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
