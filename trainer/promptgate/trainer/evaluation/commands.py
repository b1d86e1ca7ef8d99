"""`promptgate eval`: evaluate a model through the server's engine and write the report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_COLLAPSE = 0, 1, 2, 3
_TRAIN_EXTRA_HINT = "this command needs the train extra: pip install 'promptgate[train]'"


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; each sets `handler(args) -> exit code`."""
    p = sub.add_parser(
        "eval",
        help="evaluate a model on labelled queries through the server's engine (JSON, Markdown, plots)",
        description="Classify labelled queries with the server's own engine and report accuracy, precision, "
        "recall, F1, FPR, ROC-AUC, calibration, recall at 1%/5% FPR, per-source and per-category breakdowns, "
        "confusion matrices and latency, per data file and mode; with --robustness, the same under each published "
        "evasion. Exit status 3 with --fail-on-collapse when one class's recall collapses. PROMPTGATE_* engine "
        "settings apply as they would to a server (PROMPTGATE_CANONICALIZE_STEPS=none: no canonicalization).",
    )
    p.add_argument("--model", required=True, help="model directory or hub id (e.g. sarthakrastogi/narasimha-b-0.6b)")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        type=Path,
        metavar="FILE",
        help="labelled JSONL or CSV files (text, label; optional id, category, source)",
    )
    p.add_argument("--modes", default="fast", help="comma-separated: fast, reasoned, auto (default: fast)")
    p.add_argument(
        "--engine",
        default="transformers",
        choices=["transformers", "vllm", "auto"],
        help="inference engine (default: transformers; auto picks vllm when installed)",
    )
    p.add_argument("--profile", help="built-in profile name or profile JSON file (default: from the model)")
    p.add_argument("--out", type=Path, help="report folder (default: eval-<model name>)")
    p.add_argument("--limit", type=int, help="first N records per file, label shares kept (deterministic)")
    p.add_argument("--threshold", type=float, help="malicious-probability threshold of the verdict (default 0.5)")
    p.add_argument("--max-rationale-tokens", type=int, help="longest REASONED rationale in tokens (default 128)")
    p.add_argument("--concurrency", type=int, default=256, help="queries in flight at once (default 256)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="weights dtype")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the model runs")
    p.add_argument(
        "--collapse-recall",
        type=float,
        default=0.2,
        help="warn of a collapse when a class's recall is below this (default 0.2)",
    )
    p.add_argument("--fail-on-collapse", action="store_true", help="exit with status 3 when a collapse is detected")
    p.add_argument(
        "--robustness",
        nargs="?",
        const="all",
        metavar="FAMILIES",
        help="also screen each file under each obfuscation family (published evasions: zero_width, spaced, "
        "homoglyphs, fullwidth, soft_hyphens, tag_smuggling, base64; default all, or a comma-separated list) and "
        "report recall and FPR beside the clean run's",
    )
    p.add_argument(
        "--robustness-modes",
        help="comma-separated modes of the robustness runs, among --modes (default: fast, or --modes without it)",
    )
    p.add_argument("--robustness-seed", type=int, default=0, help="seed of the obfuscations (default 0)")
    p.add_argument(
        "--buried",
        type=int,
        default=0,
        metavar="N",
        help="also screen N composites of each file with one malicious row buried in 4,000-12,000 characters of "
        "its benign rows, and N all-benign ones of the same lengths: AUC, TPR/FPR and how often the span hits "
        "the attack",
    )
    p.add_argument("--buried-seed", type=int, default=0, help="seed of the composites (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=run_eval_command)


def default_out_dir(model: str) -> Path:
    return Path(f"eval-{Path(model.rstrip('/')).name or 'model'}")


def run_eval_command(args: argparse.Namespace) -> int:
    def fail(message: str, code: int) -> int:
        print(f"promptgate eval: {message}", file=sys.stderr)
        return code

    try:
        from promptgate.profiles import ProfileError
        from promptgate.server.config import ConfigError, ServerConfig

        from .records import DataError
        from .report import buried_table, headline_table, robustness_table
        from .runner import run_evaluation
    except ImportError as exc:
        return fail(f"{_TRAIN_EXTRA_HINT} ({exc})", EXIT_FAILED)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    out_dir = args.out or default_out_dir(args.model)
    try:
        # The in-process engine takes PROMPTGATE_* settings as a server would (as `screen --local` does).
        base = ServerConfig.from_sources(None, os.environ)
        report = run_evaluation(
            args.model,
            args.data,
            modes=modes,
            engine=args.engine,
            profile=args.profile,
            out_dir=out_dir,
            limit=args.limit,
            threshold=args.threshold,
            max_rationale_tokens=args.max_rationale_tokens,
            concurrency=args.concurrency,
            dtype=args.dtype,
            device=args.device,
            base_config=base,
            collapse_min_recall=args.collapse_recall,
            progress=None if args.quiet else (lambda m: print(f"promptgate eval: {m}", file=sys.stderr, flush=True)),
            robustness=args.robustness,
            robustness_modes=args.robustness_modes.split(",") if args.robustness_modes else None,
            robustness_seed=args.robustness_seed,
            buried=args.buried,
            buried_seed=args.buried_seed,
        )
    except (DataError, ProfileError, ConfigError, ValueError) as exc:
        return fail(str(exc), EXIT_USAGE)
    except ImportError as exc:
        return fail(f"{_TRAIN_EXTRA_HINT} ({exc})", EXIT_FAILED)
    except (OSError, RuntimeError) as exc:
        # Model not found / hub unreachable, or an engine that is not installed or failed to start.
        return fail(f"cannot evaluate {args.model}: {exc}", EXIT_FAILED)
    print(headline_table(report))
    if report.robustness:
        print(f"\nrobustness:\n{robustness_table(report)}")
    if report.buried:
        print(f"\nburied attacks:\n{buried_table(report)}")
    print(f"\nreport: {out_dir / 'report.md'}")
    if args.fail_on_collapse and report.collapsed:
        return fail("class collapse detected (--fail-on-collapse)", EXIT_COLLAPSE)
    return EXIT_OK
