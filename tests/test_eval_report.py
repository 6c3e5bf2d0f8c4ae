"""The comparison report: the metrics table with differences, the charts, and the questions that changed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.errors import EvalError
from eval.report import build_report


def _record(qid: str, *, refused: bool, score: float, cites_gold: bool, total: float, answerable: bool = True,
            leaks: list | None = None) -> dict:
    citations = [] if refused else [{"n": 1, "source": "a.md" if cites_gold else "b.md", "text": "t", "score": 0.5}]
    return {"id": qid, "mode": "rag", "question": f"What about {qid}?", "answer": "x", "refused": refused,
            "refusal_reason": None, "citations": citations, "retrieved": [], "flags": [],
            "timings": {"total": total, "first_token": total / 4}, "user": "alice", "model": "m",
            "gold_answer": "x", "gold_passage": None, "gold_source": "a.md" if answerable else None,
            "answerable": answerable, "ranking": [{"n": 1, "source": "a.md"}],
            "metrics": {"gold_rank": 1, "gold_passage_coverage": None, "score": score if answerable else None,
                        "f1": score if answerable else None, "similarity": score if answerable else None,
                        "cited_sources": [c["source"] for c in citations], "cites_gold": cites_gold,
                        "citations_from_gold": int(cites_gold) if citations else 0, "unsupported_citations": [],
                        "leaks": leaks or []}}


def _run(folder: Path, name: str, mode: str, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text(json.dumps({"name": name, "mode": mode, "split": "test", "adapter": None,
                                                     "qa_file": "qa.jsonl", "ids": [r["id"] for r in records]}))
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two runs of four questions, compared once (charts take a moment)."""
    tmp_path = tmp_path_factory.mktemp("report")
    base = _run(tmp_path / "base", "extractive", "extractive", [
        _record("q1", refused=False, score=0.9, cites_gold=True, total=0.5),   # grounded correct
        _record("q2", refused=True, score=0.0, cites_gold=False, total=0.4),   # refused
        _record("q3", refused=False, score=0.2, cites_gold=True, total=0.6),   # wrong
        _record("q4", refused=True, score=0.0, cites_gold=False, total=0.3, answerable=False),
    ])
    rag = _run(tmp_path / "rag", "rag base", "rag", [
        _record("q1", refused=False, score=0.9, cites_gold=True, total=9.0),   # same
        _record("q2", refused=False, score=0.8, cites_gold=True, total=12.0),  # refused -> grounded correct
        _record("q3", refused=False, score=0.9, cites_gold=False, total=8.0),  # wrong -> correct, not grounded
        _record("q4", refused=True, score=0.0, cites_gold=False, total=2.0, answerable=False),
    ])
    return build_report([base, rag], tmp_path / "report")


def test_report_has_the_metric_table_with_differences(report) -> None:
    html = report.html_path.read_text()
    assert "<table id='metrics'>" in html and "extractive" in html and "rag base" in html
    # grounded accuracy: 1/3 -> 2/3, a difference of +0.333 shown as better
    assert "<tr><td>grounded-answer accuracy</td><td>0.333</td><td>0.667</td><td class='better'>+0.333</td></tr>" \
        in html
    assert "<tr><td>answerable wrongly refused</td><td>0.333</td><td>0.000</td><td class='better'>-0.333</td></tr>" \
        in html
    assert "<td class='worse'>+" in html  # latency went up: worse
    md = report.markdown_path.read_text()
    assert md == report.markdown
    assert "| grounded-answer accuracy | 0.333 | 0.667 | +0.333 |" in md
    assert "| latency p50 (s) | 0.45 | 8.50 | +8.05 |" in md
    # strict: answer "x" for gold answer "x" is strictly correct whatever the lenient score (q3 of the first run)
    assert "| grounded-answer accuracy (strict) | 0.667 | 0.667 | 0 |" in md
    assert "| correct, strict (answerable) | 0.667 | 1.000 | +0.333 |" in md
    assert "| answer words p50 | 1.0 | 1.0 | 0 |" in md
    assert md.index("| grounded-answer accuracy |") < md.index("| grounded-answer accuracy (strict) |") \
        < md.index("| correct (answerable) |") < md.index("| correct, strict (answerable) |")
    assert ("<tr><td>correct, strict (answerable)</td><td>0.667</td><td>1.000</td><td class='better'>+0.333</td>"
            "</tr>") in html


def test_report_charts_are_written_and_embedded(report) -> None:
    names = {p.name for p in report.images}
    assert {"metric-grounded_accuracy.png", "metric-hitat5.png", "latency-histogram.png",
            "metric-grounded_accuracy_strict.png", "metric-correct_strict.png", "metric-answer_words_p50.png"} <= names
    for image in report.images:
        assert image.exists() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = report.html_path.read_text()
    assert html.count("src='data:image/png;base64,") == len(report.images)


def test_report_lists_the_questions_whose_outcome_changed(report) -> None:
    assert [(c["id"], c["outcomes"]["extractive"], c["outcomes"]["rag base"]) for c in report.changed] == [
        ("q2", "refused", "grounded correct"), ("q3", "wrong", "correct, not grounded")]
    html = report.html_path.read_text()
    assert "<table id='changed'>" in html and "What about q2?" in html and "What about q1?" not in html
    assert "| q3 | What about q3? | wrong | correct, not grounded |" in report.markdown
    assert "PERMISSION LEAKS" not in html


def test_report_shouts_about_leaks(tmp_path) -> None:
    leak = [{"where": "retrieved", "n": 1, "source": "hr/bands.md", "document_groups": ["hr"],
             "reason": "not readable by the user"}]
    leaky = _run(tmp_path / "leaky", "leaky", "rag",
                 [_record("q1", refused=False, score=0.9, cites_gold=True, total=1.0, leaks=leak)])
    report = build_report([leaky], tmp_path / "report")
    assert "class='leak'>PERMISSION LEAKS in leaky" in report.html_path.read_text()
    assert report.markdown.startswith("**PERMISSION LEAKS** in leaky")
    assert "| permission leaks (passages) | 1 |" in report.markdown


def test_unfinished_run_is_a_one_line_error(tmp_path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(EvalError, match="not a finished evaluation run"):
        build_report([tmp_path / "half"], tmp_path / "report")
