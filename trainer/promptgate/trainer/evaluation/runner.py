"""Run labelled queries through the server's own engine and measure how it does.

No train/serve skew on this side: the evaluator builds a `ServerConfig`, loads the server's
screening path (`Screening.load`) and screens each record through it, the very path the
gRPC servicer calls, many queries at a time (the engine batches them). Nothing here checks
a query, canonicalizes it, builds a prompt or reads a probability itself: a record the server
would refuse is refused here with the server's message.

Robustness (`robustness=`): each file is screened again under each obfuscation family
(`promptgate.trainer.obfuscate`, the published evasions), through the same path, and the
report gives recall and FPR under each beside the clean run's. Whatever undoes the evasions is
the server's canonicalization (`canonicalize_steps` of the config), so the same model measured
with `canonicalize_steps="none"` shows what it does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .records import read_records, stratified_head
from .types import ALL_FILES, HEADLINE_KEYS, MODES, ROBUSTNESS_KEYS, EvalReport, Prediction, QueryFailure

if TYPE_CHECKING:
    from promptgate.server import ServerConfig
    from promptgate.server.screening import Screening
    from promptgate.trainer.data import Example

__all__ = [
    "ALL_FILES",
    "HEADLINE_KEYS",
    "MODES",
    "ROBUSTNESS_KEYS",
    "EvalReport",
    "Prediction",
    "QueryFailure",
    "run_evaluation",
    "run_evaluation_async",
]

# As `promptgate screen --window`: enough queued work for the engine to batch queries of similar length.
DEFAULT_CONCURRENCY = 256


P = ParamSpec("P")
T = TypeVar("T")


def _print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _modes(modes: Sequence[str], what: str = "mode") -> list[str]:
    modes = [m.strip().lower() for m in modes]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}: use {', '.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise ValueError(f"{what} given twice: {list(modes)}")
    return modes


def _robustness_plan(
    robustness: bool | str | Sequence[str] | None, robustness_modes: Sequence[str] | None, modes: list[str]
) -> tuple[list[str], list[str]]:
    """(families, modes) of the robustness runs; ([], []) when none was asked for."""
    from promptgate.trainer.obfuscate import parse_families

    families = parse_families(robustness)
    if not families:
        if robustness_modes:
            raise ValueError("robustness modes given without robustness families")
        return [], []
    if robustness_modes is None:
        # FAST is the cheap mode; a robustness run repeats the evaluation once per family.
        return families, ["fast"] if "fast" in modes else list(modes)
    chosen = _modes(robustness_modes, "robustness mode")
    if not chosen:
        raise ValueError("no robustness mode given")
    missing = [m for m in chosen if m not in modes]
    if missing:
        raise ValueError(f"robustness mode(s) {missing} are not evaluated (modes: {', '.join(modes)})")
    return families, chosen


def _check_arguments(modes: Sequence[str], threshold: float | None, limit: int | None, concurrency: int) -> None:
    if not modes:
        raise ValueError("no modes to evaluate")
    _modes(modes)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} is not in [0, 1]")
    if limit is not None and limit < 1:
        raise ValueError("limit must be >= 1")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")


def _engine_config(
    model: str,
    base: ServerConfig | None,
    *,
    engine: str,
    profile: str | None,
    threshold: float | None,
    max_rationale_tokens: int | None,
    dtype: str | None,
    device: str | None,
) -> ServerConfig:
    from promptgate.server import ServerConfig

    values: dict[str, Any] = {"model": model, "engine": engine, "profile": profile}
    optional = {"threshold": threshold, "max_rationale_tokens": max_rationale_tokens, "dtype": dtype, "device": device}
    values.update({k: v for k, v in optional.items() if v is not None})
    return dataclasses.replace(base, **values) if base is not None else ServerConfig(**values)


async def run_evaluation_async(
    model: str | Path,
    data_files: Sequence[str | Path],
    *,
    modes: Sequence[str] = ("fast",),
    engine: str = "transformers",
    profile: str | None = None,
    out_dir: Path | None = None,
    limit: int | None = None,
    threshold: float | None = None,
    max_rationale_tokens: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    dtype: str | None = None,
    device: str | None = None,
    base_config: ServerConfig | None = None,
    collapse_min_recall: float = 0.2,
    progress: Callable[[str], None] | None = None,
    robustness: bool | str | Sequence[str] | None = None,
    robustness_modes: Sequence[str] | None = None,
    robustness_seed: int = 0,
    buried: int = 0,
    buried_seed: int = 0,
) -> EvalReport:
    """Evaluate `model` on `data_files` in each of `modes`; write the report to `out_dir` if given.

    `run_evaluation` is the same call for code without an event loop.
    `base_config` carries other engine settings (vLLM memory, batch sizes, canonicalize_steps...);
    the named arguments override it. Collapse warnings are printed to stderr as well as reported.

    `robustness`: True (every family of `promptgate.trainer.obfuscate.FAMILIES`) or the families
    to re-screen each file under, in `robustness_modes` (default FAST, or every mode when FAST is
    not evaluated; each must be among `modes`), obfuscated with `robustness_seed`.
    """
    from promptgate.server.screening import Screening

    modes = [m.strip().lower() for m in modes]
    _check_arguments(modes, threshold, limit, concurrency)
    families, rob_modes = _robustness_plan(robustness, robustness_modes, modes)
    if buried < 0:
        raise ValueError("buried must be >= 0")
    files = [str(f) for f in data_files]
    if not files:
        raise ValueError("no data files")
    if len(set(files)) != len(files):
        raise ValueError(f"data file given twice: {files}")
    # Read everything before loading the model: a bad record fails in a second, not after minutes.
    datasets: dict[str, list[Example]] = {f: stratified_head(read_records(f), limit) for f in files}
    config = _engine_config(
        str(model),
        base_config,
        engine=engine,
        profile=profile,
        threshold=threshold,
        max_rationale_tokens=max_rationale_tokens,
        dtype=dtype,
        device=device,
    )
    say = progress or (lambda _message: None)
    say(f"loading {config.model} ({config.engine} engine)")
    started = time.monotonic()
    screening = await Screening.load(config, offline=True)
    try:
        engine = screening.describe().engine
        say(f"loaded in {time.monotonic() - started:.1f} s: {engine.name} on {engine.device}")
        report = await _evaluate(screening, config, datasets, modes, limit, concurrency, collapse_min_recall, say)
        if families:
            await _robustness(screening, config, datasets, report, families, rob_modes, robustness_seed,
                              concurrency, say)  # fmt: skip
        if buried:
            from .buried import evaluate_buried

            for file, records in datasets.items():
                say(f"{Path(file).name} buried: {buried} injected and {buried} clean composites")
                entry = await evaluate_buried(
                    screening,
                    [r.text for r in records],
                    [r.label for r in records],
                    n=buried,
                    threshold=config.threshold,
                    seed=buried_seed,
                    concurrency=min(concurrency, 64),
                )
                report.buried.append({"file": file, "seed": buried_seed,
                                      "window_tokens": screening.window_tokens, **entry})  # fmt: skip
        if out_dir is not None:
            from .report import write_report

            write_report(report, Path(out_dir))
            say(f"report written to {out_dir}")
        return report
    finally:
        await screening.close()


def _blocking(coro_fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """`coro_fn` as a blocking call with the same arguments: it runs its own event loop, in a
    helper thread when the caller already runs one (asyncio.run cannot nest)."""

    @functools.wraps(coro_fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro_fn(*args, **kwargs))
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = asyncio.run(coro_fn(*args, **kwargs))
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=target, name="promptgate-eval")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    return call


# One signature and one set of defaults for both (the blocking one was a copy of the async one's).
run_evaluation = _blocking(run_evaluation_async)
run_evaluation.__name__ = run_evaluation.__qualname__ = "run_evaluation"
run_evaluation.__doc__ = (
    "`run_evaluation_async`, blocking: it runs its own event loop (in a helper thread when the caller "
    "already runs one).\n\n" + (run_evaluation_async.__doc__ or "")
)


async def _evaluate(
    screening: Screening,
    config: ServerConfig,
    datasets: dict[str, list[Example]],
    modes: list[str],
    limit: int | None,
    concurrency: int,
    collapse_min_recall: float,
    say: Callable[[str], None],
) -> EvalReport:
    from .summary import summarize

    profile = screening.profile
    notes: list[str] = []
    run_modes = list(modes)
    if "reasoned" in run_modes and not profile.rationale_trained:
        run_modes.remove("reasoned")
        notes.append(
            f"REASONED skipped: profile {profile.name!r} was not trained with rationales, so the model has no "
            "rationale to write (the server answers REASONED requests for it with INVALID_ARGUMENT)."
        )
    if "auto" in run_modes and not profile.rationale_trained:
        notes.append(
            f"AUTO equals FAST here: profile {profile.name!r} was not trained with rationales, so AUTO never "
            "escalates to REASONED."
        )
    if not profile.categories:
        notes.append(f"profile {profile.name!r} predicts no attack categories: no category-prediction accuracy.")
    for note in notes:
        _print_err(f"promptgate eval: note: {note}")

    predictions: list[Prediction] = []
    failures: list[QueryFailure] = []
    results: list[dict[str, Any]] = []
    warnings: list[str] = []
    walls: dict[tuple[str, str], float] = {}
    for mode in run_modes:
        for file, records in datasets.items():
            say(f"{Path(file).name} {mode}: {len(records)} queries")
            preds, fails, wall = await _classify_all(screening, file, records, mode, config.threshold, concurrency)
            walls[(file, mode)] = wall
            predictions += preds
            failures += fails
            result = summarize(
                file, mode, preds, fails, wall, categories=profile.categories, min_recall=collapse_min_recall
            )
            results.append(result)
            say(
                f"{Path(file).name} {mode}: {result['n']} classified in {wall:.1f} s "
                f"({result['throughput_qps']:.1f} q/s), accuracy {_fmt(result['accuracy'])}"
            )
            if fails:
                warnings.append(f"{file} [{mode}]: {len(fails)} queries refused by the engine (see failures)")
            if result["collapse"]:
                warnings.append(_collapse_warning(file, mode, result["collapse"]))
        if len(datasets) > 1:
            pooled = [p for p in predictions if p.mode == mode]
            pooled_fails = [f for f in failures if f.mode == mode]
            wall = sum(w for (_, m), w in walls.items() if m == mode)
            results.append(
                summarize(
                    ALL_FILES,
                    mode,
                    pooled,
                    pooled_fails,
                    wall,
                    categories=profile.categories,
                    min_recall=collapse_min_recall,
                    check_collapse=False,  # each file was checked; a pooled warning would repeat them
                )
            )
    for warning in warnings:
        if warning.startswith("COLLAPSE"):
            _print_err(_loud(warning))
        else:
            _print_err(f"promptgate eval: warning: {warning}")
    description = screening.describe()
    backend = description.engine
    meta = {
        "model": config.model,
        "profile": profile.name,
        "profile_categories": list(profile.categories),
        "rationale_trained": profile.rationale_trained,
        "engine": backend.name,
        "engine_version": backend.version,
        "device": backend.device,
        "dtype": backend.dtype,
        "threshold": config.threshold,
        "auto_band": config.auto_band,
        "max_rationale_tokens": config.max_rationale_tokens,
        # The steps the server's canonicalization ran on every query (empty: none).
        "canonicalize_steps": list(description.canonicalize_steps),
        "modes_requested": list(modes),
        "modes": run_modes,
        "data_files": list(datasets),
        "limit": limit,
        "concurrency": concurrency,
        "collapse_min_recall": collapse_min_recall,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return EvalReport(
        meta=meta, results=results, warnings=warnings, notes=notes, predictions=predictions, failures=failures
    )


async def _classify_all(
    screening: Screening,
    file: str,
    records: list[Example],
    mode: str,
    threshold: float,
    concurrency: int,
) -> tuple[list[Prediction], list[QueryFailure], float]:
    from promptgate.concurrency import map_unordered
    from promptgate.server.domain import Query
    from promptgate.server.errors import ScreeningError

    async def one(item: tuple[int, Example]) -> tuple[int, Prediction | QueryFailure]:
        index, rec = item
        start = time.perf_counter()
        outcome = await screening.outcome(Query(rec.text, mode=mode, threshold=threshold), caller="eval", id=rec.id)
        latency_ms = (time.perf_counter() - start) * 1000.0
        if isinstance(outcome, ScreeningError):
            return index, QueryFailure(file, rec.id, mode, outcome.message)
        return index, Prediction(
            file=file,
            record=rec,
            mode=mode,
            scored_mode=outcome.mode.value,
            verdict=outcome.verdict.value,
            malicious_probability=float(outcome.malicious_probability),
            category_predicted=outcome.category or None,
            rationale=outcome.rationale,
            latency_ms=latency_ms,
            signals=outcome.signals,
        )

    started = time.perf_counter()
    done = [item async for item in map_unordered(enumerate(records), one, concurrency)]
    wall = time.perf_counter() - started
    done.sort(key=lambda item: item[0])  # input order, whatever order they finished in
    preds = [x for _, x in done if isinstance(x, Prediction)]
    fails = [x for _, x in done if isinstance(x, QueryFailure)]
    return preds, fails, wall


def _delta(value: float | None, clean: float | None) -> float | None:
    return None if value is None or clean is None else value - clean


def _canonicalized_share(preds: Sequence[Prediction]) -> float | None:
    """Share of the answered queries in which the server's canonicalization found something."""
    return sum(bool(p.signals) for p in preds) / len(preds) if preds else None


async def _robustness(
    screening: Screening,
    config: ServerConfig,
    datasets: dict[str, list[Example]],
    report: EvalReport,
    families: list[str],
    modes: list[str],
    seed: int,
    concurrency: int,
    say: Callable[[str], None],
) -> None:
    """Screen every file again under each obfuscation family; add the entries to `report`.

    The records keep their ids and labels (an obfuscated attack is an attack); only the text
    changes. Refusals (an obfuscated text over the token limit) are counted in `n_failed`,
    not as verdicts, as in the clean run. No collapse warnings: a family that turns every
    verdict one way is what this section is there to show.
    """
    from promptgate.trainer.obfuscate import obfuscate

    from .summary import summarize

    profile = screening.profile
    run_modes = report.meta["modes"]
    skipped = [m for m in modes if m not in run_modes]
    if skipped:
        report.notes.append(f"robustness: mode(s) {', '.join(skipped)} skipped, as in the clean run")
    report.meta.update(
        robustness_families=list(families),
        robustness_modes=[m for m in modes if m in run_modes],
        robustness_seed=seed,
    )
    for mode in report.meta["robustness_modes"]:
        for file, records in datasets.items():
            clean = report.result(mode, file)
            clean_preds = [p for p in report.predictions if p.file == file and p.mode == mode]
            clean_share = _canonicalized_share(clean_preds)
            for family in families:
                obfuscated = [dataclasses.replace(r, text=obfuscate(r.text, family, seed=seed)) for r in records]
                preds, fails, wall = await _classify_all(
                    screening, file, obfuscated, mode, config.threshold, concurrency
                )
                r = summarize(file, mode, preds, fails, wall, categories=profile.categories, check_collapse=False)
                entry = {
                    "file": file,
                    "mode": mode,
                    "family": family,
                    "n": r["n"],
                    "n_failed": r["n_failed"],
                    "accuracy": r["accuracy"],
                    "recall": r["recall"],
                    "fpr": r["fpr"],
                    "roc_auc": r["roc_auc"],
                    "delta_accuracy": _delta(r["accuracy"], clean["accuracy"]),
                    "delta_recall": _delta(r["recall"], clean["recall"]),
                    "delta_fpr": _delta(r["fpr"], clean["fpr"]),
                    "delta_roc_auc": _delta(r["roc_auc"], clean["roc_auc"]),
                    "canonicalized_share": _canonicalized_share(preds),
                    "clean_canonicalized_share": clean_share,
                    "confusion": r["confusion"],
                }
                report.robustness.append(entry)
                report.robustness_predictions += [(family, p) for p in preds]
                say(
                    f"{Path(file).name} {mode} {family}: recall {_fmt(r['recall'])} "
                    f"(clean {_fmt(clean['recall'])}), FPR {_fmt(r['fpr'])} (clean {_fmt(clean['fpr'])})"
                    + (f", {len(fails)} refused" if fails else "")
                )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _collapse_warning(file: str, mode: str, reasons: list[str]) -> str:
    return f"COLLAPSE on {file} [{mode}]: the model collapsed onto one class: " + "; ".join(reasons)


def _loud(warning: str) -> str:
    bar = "!" * 78
    return "\n".join(
        [
            bar,
            "WARNING: CLASS COLLAPSE",
            warning,
            "The model gives (almost) every query one verdict, as in the 'everything is malicious' failure of a",
            "plain-label SFT: its accuracy and F1 mean little. Check the class balance, the rationales and the",
            "threshold.",
            bar,
        ]
    )
