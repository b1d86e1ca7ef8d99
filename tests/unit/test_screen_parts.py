from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from promptgate.screen import OutputError, ResumableOutput, read_records
from promptgate.screen._runner import Progress, Summary


def test_torn_last_line_is_cut_and_done_records_are_marked(tmp_path: Path) -> None:
    out, rejects = tmp_path / "o.jsonl", tmp_path / "o.rejects.jsonl"
    out.write_text(json.dumps({"record": 0, "id": "a"}) + "\n" + json.dumps({"record": 2, "id": "c"}) + "\n" + '{"rec')
    rejects.write_text(json.dumps({"record": 5, "id": "f", "kind": "empty_text"}) + "\n")
    with pytest.raises(OutputError, match="--resume"):
        ResumableOutput(out, rejects, resume=False)
    output = ResumableOutput(out, rejects, resume=True)
    assert [line["record"] for _, line in output.resumed()] == [0, 2, 5]
    assert output.dropped_torn_bytes == len('{"rec')
    assert [output.is_done(i) for i in range(7)] == [True, False, True, False, False, True, False]
    output.write({"record": 1, "id": "b"})
    output.close()
    assert [json.loads(x)["record"] for x in out.read_text().splitlines()] == [0, 2, 1]


def test_a_foreign_line_is_an_error_not_a_silent_skip(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text("not json\n")
    output = ResumableOutput(out, tmp_path / "r.jsonl", resume=True)
    with pytest.raises(OutputError, match="not a JSON line"):
        list(output.resumed())


def test_records_are_numbered_across_inputs(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "b.jsonl").write_text('{"text": "three", "id": 9}\n')
    items = list(read_records([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")]))
    assert [(i.record, i.id, type(i).__name__) for i in items] == [
        (0, "1", "Record"),
        (1, "2", "Rejected"),
        (2, "3", "Record"),
        (3, "9", "Record"),
    ]


def test_progress_shows_rate_and_eta_only_when_enabled() -> None:
    shown, hidden = io.StringIO(), io.StringIO()
    for stream, enabled in ((shown, True), (hidden, False)):
        progress = Progress(enabled, total=100, stream=stream)
        progress._last -= 1  # as if the last redraw was a second ago
        progress.tick(25)
        progress.close()
    assert "25/100" in shown.getvalue() and "/s" in shown.getvalue() and "ETA" in shown.getvalue()
    assert hidden.getvalue() == ""


def test_summary_keeps_only_the_top_flagged() -> None:
    summary = Summary(top_n=2)
    for i, p in enumerate([0.9, 0.2, 0.99, 0.7]):
        verdict = "malicious" if p >= 0.5 else "benign"
        summary.add_result({"record": i, "id": str(i), "verdict": verdict, "malicious_probability": p, "category": "x"})
    data = summary.to_dict()
    assert [t["id"] for t in data["top_flagged"]] == ["2", "0"]
    assert data["verdicts"] == {"malicious": 3, "benign": 1}
