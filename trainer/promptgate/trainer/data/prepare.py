"""`promptgate data prepare`: labelled files in, deduplicated, balanced, stratified splits out.

Steps, in order (each drop is counted by reason in the manifest):
1. read every input (JSONL/CSV/TSV/.gz, or a Hugging Face data set by name), labels normalized;
2. texts NFC-normalized and stripped; empty texts dropped (`empty_text`);
3. texts whose dedup key (NFKC, case-folded, whitespace collapsed) appears in an `--exclude`
   file dropped (`excluded`): passing the test files here is how "never train on test" is
   enforced, whatever the inputs hold;
4. a key seen with both labels dropped entirely (`label_conflict`): neither label can be
   trusted; other repeats of a key dropped after the first (`duplicate`);
5. `--max-per-class` and `--balance downsample` cut each label down before the split, keeping
   its category mix (`max_per_class`, `downsample`);
6. a split stratified by (label, category): each split keeps the pool's label and category
   proportions;
7. `--balance upsample` repeats minority-label examples of the train split only (after the
   split, so no copy of a validation or test text lands in train).

Everything random draws from generators seeded by `--seed` and a fixed name per step, and no
time or path of this machine enters the outputs: the same inputs and seed give byte-identical
files.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import socket
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .examples import (
    LABELS,
    DataError,
    Example,
    dedup_key,
    example_from_row,
    normalize_text,
    read_examples,
    read_texts,
    write_atomic,
    write_examples,
)

BALANCE_MODES = ("none", "downsample", "upsample")
SPLITS = ("train", "val", "test")
# Why examples leave the pool, in pipeline order (the manifest lists each, zeros included).
DROP_REASONS = ("empty_text", "excluded", "label_conflict", "duplicate", "max_per_class", "downsample")
MANIFEST_VERSION = 1
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class PrepareOptions:
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    balance: str = "none"
    max_per_class: int | None = None
    text_field: str = "text"
    label_field: str = "label"

    def check(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise DataError(f"{name.replace('_', '-')} must be in [0, 1), not {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise DataError("val-fraction + test-fraction must leave something to train on (sum < 1)")
        if self.balance not in BALANCE_MODES:
            raise DataError(f"balance must be one of {', '.join(BALANCE_MODES)}, not {self.balance!r}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise DataError(f"max-per-class must be at least 1, not {self.max_per_class}")


@dataclass
class Splits:
    """The prepared splits and what happened on the way (counts by reason)."""

    train: list[Example]
    val: list[Example]
    test: list[Example]
    dropped: Counter[str] = field(default_factory=Counter)
    upsampled: int = 0
    renamed_ids: int = 0
    read: int = 0

    def by_name(self) -> dict[str, list[Example]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _stratum(example: Example) -> tuple[str, str]:
    return example.label, example.category or ""


def _rng(seed: int, *purpose: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`: stable across runs and Python
    # processes (unlike hash()), and each step draws from its own stream, so changing one
    # step (say, the balance) does not reshuffle another (the split of the other label).
    return random.Random("|".join((str(seed), *purpose)))


def allocate(sizes: dict[K, int], total: int) -> dict[K, int]:
    """Split `total` over groups in proportion to their sizes (largest remainder, exact sum).

    Ties go to the smaller key, so the allocation is a function of its arguments.
    """
    whole = sum(sizes.values())
    if whole == 0 or total <= 0:
        return dict.fromkeys(sizes, 0)
    total = min(total, whole)
    quotas = {k: total * n / whole for k, n in sizes.items()}
    shares = {k: math.floor(q) for k, q in quotas.items()}
    left = total - sum(shares.values())
    for k in sorted(sizes, key=lambda k: (shares[k] - quotas[k], k))[:left]:  # type: ignore[arg-type,return-value]
        shares[k] += 1
    return shares


def _group(examples: Iterable[Example]) -> dict[tuple[str, str], list[Example]]:
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for example in examples:
        groups[_stratum(example)].append(example)
    return dict(sorted(groups.items()))


def clean(examples: Iterable[Example], exclude_keys: frozenset[str] | set[str], dropped: Counter[str]) -> list[Example]:
    """Normalized, non-empty, not excluded, deduplicated examples with unique ids (input order)."""
    kept: dict[str, Example] = {}
    labels_of: dict[str, set[str]] = defaultdict(set)
    repeats: Counter[str] = Counter()
    for example in examples:
        text = normalize_text(example.text)
        if not text:
            dropped["empty_text"] += 1
            continue
        key = dedup_key(text)
        if key in exclude_keys:
            dropped["excluded"] += 1
            continue
        labels_of[key].add(example.label)
        if key in kept:
            repeats[key] += 1
            continue
        kept[key] = replace(example, text=text, category=(example.category or "").strip() or None)
    result = []
    for key, example in kept.items():
        if len(labels_of[key]) > 1:
            dropped["label_conflict"] += 1 + repeats[key]
        else:
            dropped["duplicate"] += repeats[key]
            result.append(example)
    return result


def unique_ids(examples: list[Example]) -> tuple[list[Example], int]:
    """Ids made unique (`id~2`, `id~3`, ...): two inputs may share a stem or reuse ids."""
    seen = {example.id for example in examples}
    used: set[str] = set()
    out, renamed = [], 0
    for example in examples:
        if example.id in used:
            n = 2
            while f"{example.id}~{n}" in seen or f"{example.id}~{n}" in used:
                n += 1
            example = replace(example, id=f"{example.id}~{n}")
            renamed += 1
        used.add(example.id)
        out.append(example)
    return out, renamed


def cap_labels(examples: list[Example], options: PrepareOptions, dropped: Counter[str]) -> list[Example]:
    """Each label cut to its target size (downsample / max-per-class), keeping its category mix."""
    counts = Counter(example.label for example in examples)
    balanced = min(counts[label] for label in LABELS) if options.balance == "downsample" else None
    if balanced == 0:
        missing = next(label for label in LABELS if not counts[label])
        raise DataError(f"--balance downsample: no {missing} examples left, so nothing would remain")
    keep: set[int] = set()
    for label in LABELS:
        n = counts[label]
        target = n if balanced is None else min(n, balanced)
        dropped["downsample"] += n - target
        if options.max_per_class is not None and target > options.max_per_class:
            dropped["max_per_class"] += target - options.max_per_class
            target = options.max_per_class
        members = [(i, ex) for i, ex in enumerate(examples) if ex.label == label]
        by_category: dict[str, list[int]] = defaultdict(list)
        for i, ex in members:
            by_category[ex.category or ""].append(i)
        quotas = allocate({c: len(ix) for c, ix in by_category.items()}, target)
        for category in sorted(by_category):
            chosen = list(by_category[category])
            _rng(options.seed, "cap", label, category).shuffle(chosen)
            keep.update(chosen[: quotas[category]])
    return [ex for i, ex in enumerate(examples) if i in keep]


def stratified_split(examples: list[Example], options: PrepareOptions) -> tuple[list[Example], ...]:
    """(train, val, test), stratified by (label, category), sizes exact to the fractions."""
    groups = _group(examples)
    n = len(examples)
    n_test, n_val = round(options.test_fraction * n), round(options.val_fraction * n)
    sizes = {k: len(v) for k, v in groups.items()}
    # Held-out sizes are allocated together, then divided: a one-example stratum cannot be
    # asked for both a test and a validation example.
    held = allocate(sizes, n_test + n_val)
    test_sizes = allocate(held, n_test)
    train: list[Example] = []
    val: list[Example] = []
    test: list[Example] = []
    for key, members in groups.items():
        shuffled = list(members)
        _rng(options.seed, "split", *key).shuffle(shuffled)
        t, h = test_sizes[key], held[key]
        test += shuffled[:t]
        val += shuffled[t:h]
        train += shuffled[h:]
    return train, val, test


def upsample(train: list[Example], seed: int) -> tuple[list[Example], int]:
    """Minority-label train examples repeated (ids `id~upN`) until the labels are even."""
    by_label = {label: [ex for ex in train if ex.label == label] for label in LABELS}
    largest = max(len(v) for v in by_label.values())
    extra: list[Example] = []
    for label, members in by_label.items():
        if not members or len(members) == largest:
            continue
        order = list(members)
        _rng(seed, "upsample", label).shuffle(order)
        for i in range(largest - len(members)):
            example = order[i % len(order)]
            extra.append(replace(example, id=f"{example.id}~up{i // len(order) + 1}"))
    return train + extra, len(extra)


def build_splits(
    examples: Iterable[Example], options: PrepareOptions, exclude_keys: frozenset[str] | set[str] = frozenset()
) -> Splits:
    """The whole pipeline on examples in memory (no files): see the module docstring."""
    options.check()
    examples = list(examples)
    dropped: Counter[str] = Counter()
    pool, renamed = unique_ids(clean(examples, exclude_keys, dropped))
    if options.balance == "downsample" or options.max_per_class is not None:
        pool = cap_labels(pool, options, dropped)
    if not pool:
        raise DataError("no examples left to split (all were empty, excluded, duplicates or conflicts)")
    train, val, test = stratified_split(pool, options)
    upsampled = 0
    if options.balance == "upsample":
        train, upsampled = upsample(train, options.seed)
    # Shuffled so that a reader taking the first N lines gets a mix, not one source.
    for name, split in (("train", train), ("val", val), ("test", test)):
        _rng(options.seed, "order", name).shuffle(split)
    return Splits(train, val, test, dropped, upsampled, renamed, read=len(examples))


# -- Hugging Face data sets ----------------------------------------------------------------


def parse_hf_spec(spec: str) -> tuple[str, str]:
    """`NAME[:split]` -> (name, split); the split defaults to `train`."""
    name, sep, split = spec.rpartition(":")
    if not sep or not name or "/" in split:
        return spec, "train"
    return name, split or "train"


def _hub_reachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """None when the hub's host accepts a TCP connection, else why not.

    `datasets` retries an unreachable hub for half a minute before failing; one connection
    attempt answers the same question at once.
    """
    parts = urlsplit(endpoint)
    host = parts.hostname or endpoint
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def load_hf_examples(spec: str, *, text_field: str = "text", label_field: str = "label") -> tuple[list[Example], dict]:
    """Examples of a Hugging Face data set (`NAME[:split]`, a hub id or a local folder)."""
    name, split = parse_hf_spec(spec)
    try:
        import datasets
        from huggingface_hub import constants as hub_constants
    except ImportError:
        raise DataError("--hf-dataset needs the train extra: pip install 'promptgate[train]'") from None
    if not Path(name).exists() and not hub_constants.HF_HUB_OFFLINE:
        problem = _hub_reachable(hub_constants.ENDPOINT)
        if problem is not None:
            raise DataError(
                f"cannot load Hugging Face data set {name!r}: the hub ({hub_constants.ENDPOINT}) is not reachable "
                f"from here ({problem}). Export the data set to JSONL or CSV where the hub is reachable and pass "
                "the file instead, or use a local copy (a folder, or HF_HUB_OFFLINE=1 with a populated cache)."
            )
    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many kinds; all mean "could not load it"
        raise DataError(f"cannot load Hugging Face data set {name!r} (split {split!r}): {exc}") from None
    if text_field not in dataset.column_names:
        raise DataError(f"Hugging Face data set {name!r} has no {text_field!r} column ({dataset.column_names})")
    # Integer class labels become their names (e.g. "jailbreak", "benign") before normalizing.
    feature = dataset.features.get(label_field)
    names = getattr(feature, "names", None)
    examples, problems = [], []
    for index, row in enumerate(dataset):
        if names is not None and isinstance(row.get(label_field), int) and row[label_field] >= 0:
            row = {**row, label_field: names[row[label_field]]}
        text = row.get(text_field)
        try:
            if not isinstance(text, str):
                raise ValueError(f"field {text_field!r} is not a string")
            example = example_from_row(row, text=text, default_id=f"{name}:{split}:{index}", label_field=label_field)
        except ValueError as exc:
            problems.append(f"{name}:{split}:{index}: {exc}")
            continue
        examples.append(example if example.source else replace(example, source=name))
    if problems:
        shown = "\n  ".join(problems[:10])
        raise DataError(f"{len(problems)} bad records in Hugging Face data set {name!r}:\n  {shown}")
    info = {"hf_dataset": name, "split": split, "rows": len(examples), "fingerprint": dataset._fingerprint}
    return examples, info


# -- files and the manifest ----------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def split_counts(examples: Sequence[Example]) -> dict[str, Any]:
    labels = Counter(ex.label for ex in examples)
    categories: dict[str, Counter[str]] = defaultdict(Counter)
    for ex in examples:
        categories[ex.label][ex.category or "(none)"] += 1
    return {
        "total": len(examples),
        "labels": {label: labels[label] for label in LABELS},
        "categories": {label: dict(sorted(categories[label].items())) for label in LABELS if categories[label]},
    }


@dataclass
class PrepareResult:
    out_dir: Path
    splits: Splits
    manifest: dict[str, Any]

    def summary(self) -> str:
        parts = [f"{name} {len(split)}" for name, split in self.splits.by_name().items() if split or name != "test"]
        dropped = ", ".join(f"{r} {self.splits.dropped[r]}" for r in DROP_REASONS if self.splits.dropped[r]) or "none"
        extra = f"; upsampled {self.splits.upsampled}" if self.splits.upsampled else ""
        return f"data prepare: read {self.splits.read}; {', '.join(parts)}; dropped: {dropped}{extra} -> {self.out_dir}"


def prepare_dataset(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    options: PrepareOptions,
    *,
    excludes: Sequence[str | Path] = (),
    hf_datasets: Sequence[str] = (),
) -> PrepareResult:
    """Read, clean, balance and split the inputs; write the splits and `manifest.json`."""
    options.check()
    out_dir = Path(out_dir)
    if not inputs and not hf_datasets:
        raise DataError("no inputs: give files and/or --hf-dataset")
    examples: list[Example] = []
    sources: list[dict[str, Any]] = []
    for raw in inputs:
        path = Path(raw)
        digest = sha256_file(path)
        rows = read_examples(path, text_field=options.text_field, label_field=options.label_field)
        examples += rows
        sources.append({"path": str(raw), "sha256": digest, "rows": len(rows)})
    for spec in hf_datasets:
        rows, info = load_hf_examples(spec, text_field=options.text_field, label_field=options.label_field)
        examples += rows
        sources.append(info)
    exclude_keys: set[str] = set()
    exclude_info = []
    for raw in excludes:
        path = Path(raw)
        digest = sha256_file(path)
        keys = {dedup_key(normalize_text(t)) for t in read_texts(path, text_field=options.text_field)}
        exclude_keys |= keys
        exclude_info.append({"path": str(raw), "sha256": digest, "keys": len(keys)})

    splits = build_splits(examples, options, frozenset(exclude_keys))
    written = {"train": splits.train, "val": splits.val}
    if options.test_fraction > 0:
        written["test"] = splits.test
    elif (out_dir / "manifest.json").exists() and (out_dir / "test.jsonl").exists():
        # A test split left by an earlier run into this folder would not match this manifest.
        (out_dir / "test.jsonl").unlink()
    files = {}
    for name, split in written.items():
        path = out_dir / f"{name}.jsonl"
        write_examples(path, split)
        files[name] = {"file": path.name, "sha256": sha256_file(path), **split_counts(split)}
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "tool": "promptgate data prepare",
        "inputs": sources,
        "excludes": exclude_info,
        "seed": options.seed,
        "options": {
            "val_fraction": options.val_fraction,
            "test_fraction": options.test_fraction,
            "balance": options.balance,
            "max_per_class": options.max_per_class,
            "text_field": options.text_field,
            "label_field": options.label_field,
        },
        "read": splits.read,
        "dropped": {reason: splits.dropped[reason] for reason in DROP_REASONS},
        "upsampled": splits.upsampled,
        "renamed_ids": splits.renamed_ids,
        "splits": files,
    }
    write_atomic(out_dir / "manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    return PrepareResult(out_dir, splits, manifest)


__all__ = [
    "BALANCE_MODES",
    "DROP_REASONS",
    "PrepareOptions",
    "PrepareResult",
    "Splits",
    "allocate",
    "build_splits",
    "load_hf_examples",
    "parse_hf_spec",
    "prepare_dataset",
    "split_counts",
]
