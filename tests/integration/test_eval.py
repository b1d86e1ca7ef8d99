"""`promptgate eval` on a real tiny model through the server's engine, and against a real server."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptgate.cli import main
from promptgate.client import Classification, Client
from promptgate.profiles import NARASIMHA_B
from promptgate.server.canonicalize import STEPS
from promptgate.trainer.evaluation import EvalReport, read_records, run_evaluation, stratified_head
from promptgate.trainer.evaluation.runner import ROBUSTNESS_KEYS
from promptgate.trainer.obfuscate import FAMILIES, obfuscate

from ..support import SHARED_DATA, make_tiny_model, server_config

TEST_FILE = SHARED_DATA / "test.jsonl"
N_QUERIES = 40
MODES = ("fast", "reasoned", "auto")
PREDICTION_KEYS = {
    "file",
    "id",
    "text",
    "label",
    "category",
    "source",
    "mode",
    "verdict",
    "malicious_probability",
    "category_predicted",
    "rationale",
    "latency_ms",
}
HEADLINE = (
    "n",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "fpr",
    "roc_auc",
    "ece",
    "recall_at_1pct_fpr",
    "recall_at_5pct_fpr",
)

pytestmark = pytest.mark.skipif(not TEST_FILE.exists(), reason="needs ../shared/data/test.jsonl")


@pytest.fixture(scope="module")
def evaluation(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalReport, Path]:
    """One evaluation of 40 test queries in every mode, with the settings of the `server` fixture."""
    out = tmp_path_factory.mktemp("eval") / "report"
    report = run_evaluation(
        tiny_model,
        [TEST_FILE],
        modes=MODES,
        engine="transformers",
        out_dir=out,
        limit=N_QUERIES,
        max_rationale_tokens=8,
        # The same limits as the server it is compared with (max_text_chars 2000 refuses some queries).
        base_config=server_config(tiny_model),
    )
    return report, out


def _predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def test_report_files_are_written(evaluation: tuple[EvalReport, Path]) -> None:
    _, out = evaluation
    for name in ("report.json", "report.md", "predictions.jsonl"):
        assert (out / name).stat().st_size > 0, name
    for name in ("roc.png", "reliability.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Headline", "## Confusion matrices", "## Per source", "## Per category", "## Latency"):
        assert heading in md
    assert "## Refused queries" in md and "(max_text_chars)" in md


def test_report_json_schema_and_consistency(evaluation: tuple[EvalReport, Path]) -> None:
    report, out = evaluation
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["modes"] == list(MODES) and data["profile"] == "promptgate" and data["engine"] == "transformers"
    assert data["max_rationale_tokens"] == 8 and data["threshold"] == 0.5
    expected = stratified_head(read_records(TEST_FILE), N_QUERIES)
    too_long = {r.id for r in expected if len(r.text) > 2000}
    assert too_long, "the sample should hold queries over the server's 2000-character limit"
    assert [r["mode"] for r in data["results"]] == list(MODES)
    for result in data["results"]:
        assert result["file"] == str(TEST_FILE)
        assert result["n"] == N_QUERIES - len(too_long) and result["n_failed"] == len(too_long)
        assert set(HEADLINE) <= set(result)
        for key in HEADLINE[1:]:
            assert result[key] is None or 0.0 <= result[key] <= 1.0, key
        c = result["confusion"]
        assert c["tp"] + c["fn"] == result["n_malicious"] and c["fp"] + c["tn"] == result["n_benign"]
        assert result["n_malicious"] + result["n_benign"] == result["n"]
        assert result["roc_auc"] is not None and result["ece"] is not None
        assert len(result["reliability"]) == 10 and sum(b["n"] for b in result["reliability"]) == result["n"]
        assert sum(s["n"] for s in result["per_source"].values()) == result["n"]
        assert sum(s["n"] for s in result["per_category"].values()) == result["n"]
        # The promptgate profile predicts categories: the malicious categories it knows get an accuracy.
        assert "category_accuracy" in result["per_category"]["jailbreak"]
        assert "category_accuracy" not in result["per_category"]["role_play"]
        lat = result["latency"]
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] and result["throughput_qps"] > 0
        assert (result["escalated_share"] is not None) == (result["mode"] == "auto")
        assert report.headline(result["mode"]) == {k: result[k] for k in HEADLINE}
    assert {f["id"] for f in data["failures"]} == too_long and len(data["failures"]) == len(too_long) * len(MODES)
    assert any("refused" in w for w in data["warnings"])


def test_predictions_are_one_line_per_query_and_mode(evaluation: tuple[EvalReport, Path]) -> None:
    report, out = evaluation
    preds = _predictions(out)
    n = report.headline("fast")["n"]
    assert len(preds) == n * len(MODES)
    assert all(set(p) >= PREDICTION_KEYS for p in preds)
    accepted = [r for r in stratified_head(read_records(TEST_FILE), N_QUERIES) if len(r.text) <= 2000]
    for mode in MODES:
        rows = [p for p in preds if p["mode"] == mode]
        assert [p["id"] for p in rows] == [r.id for r in accepted]
        assert [p["text"] for p in rows] == [r.text for r in accepted]
        result = report.result(mode)
        # The report's figures are those of the predictions it wrote.
        right = sum((p["verdict"] == p["label"]) for p in rows)
        assert result["accuracy"] == pytest.approx(right / len(rows))
        assert result["confusion"]["tp"] == sum(p["verdict"] == p["label"] == "malicious" for p in rows)
        for p in rows:
            assert p["verdict"] == ("malicious" if p["malicious_probability"] >= 0.5 else "benign")
            assert (p["category_predicted"] is not None) == (p["verdict"] == "malicious")
    assert {p["scored_mode"] for p in preds if p["mode"] == "fast"} == {"fast"}
    assert {p["scored_mode"] for p in preds if p["mode"] == "reasoned"} == {"reasoned"}
    auto = [p for p in preds if p["mode"] == "auto"]
    escalated = [p for p in auto if p["scored_mode"] == "reasoned"]
    assert report.result("auto")["escalated_share"] == pytest.approx(len(escalated) / len(auto))


def test_fast_predictions_equal_the_servers_answers(evaluation: tuple[EvalReport, Path], server) -> None:
    """No train/serve skew on the evaluation side: a real server answers the same queries alike."""
    _, out = evaluation
    fast = [p for p in _predictions(out) if p["mode"] == "fast"]
    with Client(server.target, timeout=120) as client:
        served = client.classify_batch([p["text"] for p in fast], mode="fast")
    assert len(served) == len(fast)
    for ours, theirs in zip(fast, served, strict=True):
        assert isinstance(theirs, Classification), theirs
        assert theirs.verdict.value == ours["verdict"], ours["id"]
        assert theirs.malicious_probability == pytest.approx(ours["malicious_probability"], abs=1e-4), ours["id"]
        assert (theirs.category or None) == ours["category_predicted"], ours["id"]


# -- the command line, on the seed model's profile ----------------------------------------------


@pytest.fixture(scope="module")
def narasimha_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model that speaks the seed model's profile (no categories)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-narasimha"), profile="narasimha-b")


@pytest.fixture(scope="module")
def short_queries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 short test queries, 6 per label, as the raw shared file has them (no id), and an empty one."""
    rows = [json.loads(line) for line in TEST_FILE.read_text(encoding="utf-8").splitlines()]
    picked = [r for r in rows if r["label"] == "malicious" and len(r["text"]) < 300][:6]
    picked += [r for r in rows if r["label"] == "benign" and len(r["text"]) < 300][:6]
    path = tmp_path_factory.mktemp("queries") / "short.jsonl"
    picked.append({"text": "   ", "label": "benign"})  # the server refuses it: reported, not classified
    path.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_cli_seed_profile_end_to_end(narasimha_model: Path, short_queries: Path, in_tmp: Path, capsys) -> None:
    # --profile narasimha-b is what a hub id of the seed model resolves to.
    args = ["eval", "--model", str(narasimha_model), "--data", str(short_queries), "--profile", "narasimha-b"]
    rc = main([*args, "--modes", "fast,reasoned,auto", "--max-rationale-tokens", "4", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = in_tmp / f"eval-{narasimha_model.name}"  # the default report folder
    assert captured.out.startswith("| file | mode | n | accuracy |")
    assert "| short.jsonl | reasoned | 12 |" in captured.out
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["profile"] == "narasimha-b" and data["modes"] == ["fast", "reasoned", "auto"]
    assert any("predicts no attack categories" in n for n in data["notes"])
    preds = _predictions(out)
    assert len(preds) == 12 * 3
    assert all(p["category_predicted"] is None for p in preds)
    assert [p["id"] for p in preds[:12]] == [f"short:{i}" for i in range(1, 13)]  # raw file: line numbers
    assert [(f["id"], f["reason"]) for f in data["failures"]] == [("short:13", "text is empty")] * 3
    for result in data["results"]:
        assert result["category_accuracy"] is None
        assert all("category_accuracy" not in c for c in result["per_category"].values())


def test_cli_skips_reasoned_for_a_profile_without_rationales(
    narasimha_model: Path, short_queries: Path, tmp_path: Path, capsys
) -> None:
    profile = dataclasses.replace(NARASIMHA_B, name="narasimha-b-labels-only", rationale_trained=False)
    profile_file = tmp_path / "profile.json"
    profile_file.write_text(json.dumps(profile.to_dict()), encoding="utf-8")
    out = tmp_path / "report"
    rc = main(
        [
            "eval",
            "--model",
            str(narasimha_model),
            "--data",
            str(short_queries),
            "--profile",
            str(profile_file),
            "--modes",
            "fast,reasoned,auto",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "REASONED skipped" in captured.err
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["modes_requested"] == ["fast", "reasoned", "auto"] and data["modes"] == ["fast", "auto"]
    assert any("REASONED skipped" in n for n in data["notes"])
    assert "REASONED skipped" in (out / "report.md").read_text(encoding="utf-8")
    preds = _predictions(out)
    assert len(preds) == 12 * 2 and {p["scored_mode"] for p in preds} == {"fast"}
    assert data["results"][1]["escalated_share"] == 0.0
    fast = {p["id"]: p["malicious_probability"] for p in preds if p["mode"] == "fast"}
    assert all(p["malicious_probability"] == fast[p["id"]] for p in preds if p["mode"] == "auto")


def test_cli_collapse_warns_loudly_and_fails_on_request(
    tiny_model: Path, short_queries: Path, tmp_path: Path, capsys
) -> None:
    # Threshold 0 flags everything: the "everything is malicious" failure, made certain.
    out = tmp_path / "report"
    args = ["eval", "--model", str(tiny_model), "--data", str(short_queries), "--out", str(out), "--quiet"]
    rc = main([*args, "--threshold", "0", "--fail-on-collapse"])
    captured = capsys.readouterr()
    assert rc == 3
    assert "WARNING: CLASS COLLAPSE" in captured.err and "benign recall is 0.000" in captured.err
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["warnings"] and data["results"][0]["collapse"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.index("## WARNINGS") < md.index("## Headline")
    # Without --fail-on-collapse the same run warns and succeeds.
    assert main([*args, "--threshold", "0"]) == 0
    assert "WARNING: CLASS COLLAPSE" in capsys.readouterr().err


def test_cli_bad_input_is_a_clear_usage_error(tiny_model: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hello", "label": "benign"}\n{"text": "hi", "label": "spam"}\n', encoding="utf-8")
    base = ["eval", "--model", str(tiny_model), "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*base, "--data", str(bad)]) == 2
    assert f"{bad}:2: unknown label 'spam'" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "hello", "label": "benign"}\n', encoding="utf-8")
    assert main([*base, "--data", str(good), "--modes", "fast,slow"]) == 2
    assert "unknown mode(s) ['slow']" in capsys.readouterr().err
    assert main([*base, "--data", str(good), "--profile", "no-such-profile"]) == 2
    assert "unknown profile 'no-such-profile'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


async def test_run_evaluation_works_inside_a_running_event_loop(narasimha_model: Path, short_queries: Path) -> None:
    # A caller with its own event loop (an async trainer callback) gets the same report.
    report = run_evaluation(narasimha_model, [short_queries], modes=("fast",), limit=4)
    assert report.headline("fast")["n"] == 4 and report.out_dir is None
    assert [p.record.id for p in report.predictions] == ["short:1", "short:2", "short:7", "short:8"]


# -- robustness: the test files again under each obfuscation family -----------------------------

N_ROBUST = 12


@pytest.fixture(scope="module")
def robust(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalReport, Path]:
    """12 test queries, clean and under every family, through the server's canonicalization (all steps)."""
    out = tmp_path_factory.mktemp("robust") / "report"
    report = run_evaluation(
        tiny_model,
        [TEST_FILE],
        modes=("fast",),
        out_dir=out,
        limit=N_ROBUST,
        base_config=server_config(tiny_model),
        robustness=True,
    )
    return report, out


def test_robustness_report_shape(robust: tuple[EvalReport, Path]) -> None:
    report, out = robust
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["robustness_families"] == list(FAMILIES) and data["robustness_modes"] == ["fast"]
    assert data["canonicalize_steps"] == list(STEPS)
    clean = report.result("fast")
    assert [(r["file"], r["mode"], r["family"]) for r in data["robustness"]] == [
        (str(TEST_FILE), "fast", family) for family in FAMILIES
    ]
    for entry in data["robustness"]:
        assert set(ROBUSTNESS_KEYS) <= set(entry)
        # The same records as the clean run: each answered or refused (an obfuscated text may pass a limit).
        assert entry["n"] + entry["n_failed"] == clean["n"] + clean["n_failed"]
        for key in ("accuracy", "recall", "fpr", "roc_auc"):
            if entry[key] is not None:
                assert entry[f"delta_{key}"] == pytest.approx(entry[key] - clean[key])
        c = entry["confusion"]
        assert c["tp"] + c["fn"] + c["fp"] + c["tn"] == entry["n"]
    # Every obfuscation is found by the server's canonicalization; the clean texts mostly have nothing.
    for family in FAMILIES:
        assert report.robustness_entry(family)["canonicalized_share"] == 1.0, family
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Robustness" in md and "| file | mode | obfuscation | n | refused | recall | Δ recall |" in md
    assert "| test.jsonl | fast | (clean) |" in md
    for family in FAMILIES:
        assert f"| test.jsonl | fast | {family} |" in md
    lines = [json.loads(line) for line in (out / "robustness.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == sum(e["n"] for e in data["robustness"])
    assert all("text" not in line and line["family"] in FAMILIES and line["signals"] for line in lines)


def test_robustness_screens_through_the_servers_canonicalization(robust: tuple[EvalReport, Path]) -> None:
    """The evaluator obfuscates and the server's path undoes it: where canonicalization gives back the
    clean text, the model reads the clean text and answers as it did for it."""
    report, _ = robust
    clean = {p.record.id: p for p in report.predictions}
    for family in ("zero_width", "homoglyphs", "fullwidth", "soft_hyphens"):
        preds = [p for f, p in report.robustness_predictions if f == family]
        assert len(preds) == len(clean), family
        for p in preds:
            assert p.record.text == obfuscate(clean[p.record.id].record.text, family)
            assert p.verdict == clean[p.record.id].verdict, (family, p.record.id)
            assert p.malicious_probability == pytest.approx(clean[p.record.id].malicious_probability, abs=1e-4)


def test_robustness_without_canonicalization(tiny_model: Path, tmp_path: Path) -> None:
    base = dataclasses.replace(server_config(tiny_model), canonicalize_steps="none")
    report = run_evaluation(
        tiny_model, [TEST_FILE], limit=4, base_config=base, robustness=["zero_width", "base64"], out_dir=tmp_path
    )
    assert report.meta["canonicalize_steps"] == []
    assert [e["family"] for e in report.robustness] == ["zero_width", "base64"]
    # Nothing undoes the evasions: the model reads them as they are, and nothing is reported.
    assert all(e["canonicalized_share"] == 0.0 for e in report.robustness)
    assert "canonicalization (the server's, before the model reads a query): none" in (
        tmp_path / "report.md"
    ).read_text(encoding="utf-8")


def test_cli_robustness_flags(tiny_model: Path, short_queries: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "r"
    base = ["eval", "--model", str(tiny_model), "--data", str(short_queries), "--out", str(out), "--quiet"]
    # The engine settings come from PROMPTGATE_* as for a server: here, canonicalization off.
    monkeypatch.setenv("PROMPTGATE_CANONICALIZE_STEPS", "none")
    assert main([*base, "--limit", "4", "--robustness", "fullwidth,base64", "--robustness-seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "\nrobustness:\n| file | mode | obfuscation |" in printed and "| short.jsonl | fast | base64 |" in printed
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["robustness_families"] == ["fullwidth", "base64"] and data["robustness_seed"] == 3
    assert data["canonicalize_steps"] == []
    assert main([*base, "--robustness", "rot47"]) == 2
    assert "unknown obfuscation family ['rot47']" in capsys.readouterr().err
    assert main([*base, "--robustness", "--robustness-modes", "reasoned"]) == 2
    assert "robustness mode(s) ['reasoned'] are not evaluated" in capsys.readouterr().err
    assert main([*base, "--robustness-modes", "fast"]) == 2
    assert "robustness modes given without robustness families" in capsys.readouterr().err


def test_buried_attack_suite_reports_auc_rates_and_span_hits(tiny_model: Path, tmp_path: Path) -> None:
    base = server_config(tiny_model, max_text_chars=16000, window_tokens=256, window_overlap_tokens=64)
    report = run_evaluation(
        tiny_model, [TEST_FILE], limit=30, buried=3, buried_seed=1, base_config=base, out_dir=tmp_path / "r"
    )
    [entry] = report.buried
    assert (entry["n_injected"], entry["n_clean"], entry["n_failed"]) == (3, 3, 0)
    assert entry["window_tokens"] == 256 and 0.0 <= entry["span_hit_rate"] <= 1.0
    assert entry["roc_auc"] is not None and entry["tpr"] is not None and entry["fpr"] is not None
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["buried"] == report.buried
    assert "## Buried attacks" in (tmp_path / "r" / "report.md").read_text()
