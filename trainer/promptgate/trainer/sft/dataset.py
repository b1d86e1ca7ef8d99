"""From labelled examples to the pre-tokenized dataset TRL trains on.

Every example is tokenized by the serving prompt builder
(`PromptBuilder.training_example`), so training sees token for token what the server
builds: TRL gets `input_ids` and `assistant_masks` and never renders text itself. TRL turns
`assistant_masks` into labels (-100 outside the assistant's answer), so the loss covers only
the rationale, the label, the category and the end of turn.

Texts are canonicalized first (`canonicalize_rows`, the server's own canonicalization), as
the server canonicalizes every query before its model reads it, and a recipe may add
obfuscated copies of training rows (`add_obfuscated_copies`) before that, so the model learns
what canonicalization leaves of an evasion.

Long texts are cut before the example is built, and only the text: the example keeps its
whole answer (TRL's own truncation would cut the label off the end). The cut is the server's
own (`keep_both_ends`: the first and last halves of the text's tokens, where attack
instructions sit), so a server run with `--max-text-tokens N` and truncation on builds
exactly the prompts the model was trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from promptgate.profiles import ModelProfile, ProfileError, PromptBuilder, Verdict
from promptgate.server.domain import keep_both_ends
from promptgate.trainer.data import dedup_key

from .standin import template_rationale

if TYPE_CHECKING:
    from datasets import Dataset

    from promptgate.server.canonicalize import CanonicalizeOptions
    from promptgate.trainer.composites import Encoder

__all__ = [
    "DataFiles",
    "ExampleLike",
    "TokenizedSplit",
    "TrainingRow",
    "add_obfuscated_copies",
    "answer_for",
    "assign_rationales",
    "build_example",
    "canonicalization_options",
    "canonicalize_rows",
    "drop_excluded",
    "file_sha256",
    "stratified_limit",
    "text_offset",
    "tokenize_rows",
]


class ExampleLike(Protocol):
    """The fields of `promptgate.trainer.data.Example` this module reads."""

    @property
    def id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def category(self) -> str | None: ...
    @property
    def rationale(self) -> str | None: ...


@dataclass(frozen=True)
class TrainingRow:
    """One example as it is trained: rationale None means the FAST format (empty think block)."""

    id: str
    text: str
    label: str  # 'malicious' or 'benign'
    category: str | None
    rationale: str | None
    # An obfuscated copy: the family (promptgate.trainer.obfuscate) and the id of its original;
    # a window piece with an attack inside (`add_composites`): the attack's id.
    obfuscation: str | None = None
    copy_of: str | None = None
    # A window piece of benign rows, with or without an attack inside (`add_composites`).
    window_piece: bool = False
    # What canonicalization found in the text (its signals), once it has run.
    signals: tuple[str, ...] = ()


@dataclass
class DataFiles:
    """The files a run read, with their digests and counts (for the model card)."""

    train: Path
    val: Path | None
    excluded_files: list[Path] = field(default_factory=list)
    eval_files: list[Path] = field(default_factory=list)
    info: list[dict[str, Any]] = field(default_factory=list)
    excluded_train: int = 0
    excluded_val: int = 0
    limited_from: int | None = None
    prepare_summary: str | None = None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def drop_excluded(examples: Sequence[ExampleLike], excluded_texts: Iterable[str]) -> tuple[list[ExampleLike], int]:
    """Examples whose normalized text is not among `excluded_texts`, and how many were dropped."""
    # The key `data prepare` deduplicates and excludes by, so both guards agree.
    banned = {dedup_key(t) for t in excluded_texts}
    kept = [ex for ex in examples if dedup_key(ex.text) not in banned]
    return kept, len(examples) - len(kept)


def stratified_limit(examples: Sequence[ExampleLike], limit: int | None, seed: int) -> list[ExampleLike]:
    """At most `limit` examples, each label keeping its share, drawn with `seed`; order kept."""
    if limit is None or limit >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_label.setdefault(ex.label, []).append(i)
    chosen: list[int] = []
    labels = sorted(by_label)
    quotas = {lab: len(by_label[lab]) * limit // len(examples) for lab in labels}
    # Hand the rounding remainder to the largest labels first, so the total is exactly `limit`.
    for lab in sorted(labels, key=lambda lab: -len(by_label[lab]))[: limit - sum(quotas.values())]:
        quotas[lab] += 1
    for lab in labels:
        chosen.extend(rng.sample(by_label[lab], quotas[lab]))
    return [examples[i] for i in sorted(chosen)]


def assign_rationales(
    examples: Sequence[ExampleLike],
    *,
    use_rationales: bool,
    share: float,
    source: str,
    seed: int,
) -> list[TrainingRow]:
    """Decide, with a seeded RNG, which examples train WITH a rationale (REASONED) and which FAST.

    `share` is the fraction of the examples that have a rationale (all of them for the
    template source) that keep it; an example with no rationale trains FAST.
    """
    rationales: list[str | None] = []
    for ex in examples:
        if not use_rationales:
            rationales.append(None)
        elif source == "template":
            rationales.append(template_rationale(ex.label, ex.category))
        else:
            r = (ex.rationale or "").strip()
            rationales.append(r or None)
    candidates = [i for i, r in enumerate(rationales) if r is not None]
    keep = set(random.Random(seed).sample(candidates, round(share * len(candidates))))
    return [
        TrainingRow(
            id=str(ex.id),
            text=ex.text,
            label=ex.label,
            category=ex.category,
            rationale=rationales[i] if i in keep else None,
        )
        for i, ex in enumerate(examples)
    ]


def add_obfuscated_copies(
    rows: Sequence[TrainingRow], *, share: float, families: Sequence[str], seed: int
) -> list[TrainingRow]:
    """`rows`, then an obfuscated copy of `share` of them (per label, seeded), the families taking turns.

    A copy keeps its original's label, category and rationale (so its format, FAST or
    REASONED); its id is the original's with "~family" after it. Which rows, which family each
    gets and the obfuscation's own random choices all follow from `seed`.
    """
    from promptgate.trainer.obfuscate import obfuscate

    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_label.setdefault(row.label, []).append(i)
    picked: list[tuple[int, str]] = []
    for label in sorted(by_label):
        members = by_label[label]
        chosen = rng.sample(members, round(share * len(members)))
        # Equal turns in a seeded order: every family gets its share (within one) of each label.
        turns = [families[k % len(families)] for k in range(len(chosen))]
        rng.shuffle(turns)
        picked += zip(chosen, turns, strict=True)
    picked.sort()
    copies = [
        dataclasses.replace(
            rows[i],
            id=f"{rows[i].id}~{family}",
            text=obfuscate(rows[i].text, family, seed=seed),
            obfuscation=family,
            copy_of=rows[i].id,
        )
        for i, family in picked
    ]
    return [*rows, *copies]


def add_composites(
    rows: Sequence[TrainingRow], *, share: float, window_tokens: int, encode: Encoder, seed: int
) -> list[TrainingRow]:
    """`rows`, then window pieces of them (`promptgate.trainer.composites.window_piece`): for
    `share` of the malicious rows, drawn from those that fit a window, one piece of benign rows
    cut at token boundaries with the row whole inside (label malicious, the row's category);
    and as many pieces of benign rows alone (label benign), each at most `window_tokens`
    tokens, so the model learns the windows a long document is screened as."""
    from promptgate.trainer.composites import window_piece

    rng = random.Random(seed)
    benign = [r for r in rows if r.label == "benign" and r.copy_of is None]
    malicious = [r for r in rows if r.label == "malicious" and r.copy_of is None]
    if len(benign) < 2 or not malicious:
        return list(rows)
    filler = [r.text for r in benign]
    wanted = round(share * len(malicious))
    added: list[TrainingRow] = []
    for attack in rng.sample(malicious, len(malicious)):
        if len(added) >= 2 * wanted:
            break
        piece = window_piece(filler, attack.text, window_tokens, encode, rng)
        if piece is None:  # the attack alone fills the window: the row itself is that window
            continue
        text, _ = piece
        added.append(
            TrainingRow(
                f"{attack.id}~buried", text, "malicious", attack.category, None, copy_of=attack.id, window_piece=True
            )
        )
        clean = window_piece(filler, None, window_tokens, encode, rng)
        assert clean is not None  # filler alone always fits
        added.append(TrainingRow(f"window-piece-{len(added)}", clean[0], "benign", None, None, window_piece=True))
    return [*rows, *added]


def canonicalization_options(setting: bool | str) -> CanonicalizeOptions | None:
    """The options a recipe's `data.canonicalize` asks for; None: none (raw texts)."""
    from promptgate.server.canonicalize import CanonicalizeOptions

    if setting is True:
        return CanonicalizeOptions()
    if setting is False:
        return None
    options = CanonicalizeOptions.from_steps(setting)
    return options if options.steps else None


def canonicalize_rows(
    rows: Sequence[TrainingRow], options: CanonicalizeOptions | None = None
) -> tuple[list[TrainingRow], dict[str, Any]]:
    """Each row's text as the server's canonicalization gives it (by default with every step, as served).

    A row whose text canonicalizes to nothing is dropped: the server refuses such a query
    (EMPTY_AFTER_CANONICALIZATION), so there is no answer to learn. Returns the rows and what
    happened: how many texts changed, the signals found, the rows dropped, and how many
    obfuscated copies came out identical to their canonicalized original (the evasion fully
    undone: the copy is then a repeat of its original).
    """
    from promptgate.server.canonicalize import canonicalize

    out: list[TrainingRow] = []
    changed = dropped = 0
    signals: Counter[str] = Counter()
    for row in rows:
        canonical = canonicalize(row.text) if options is None else canonicalize(row.text, options)
        if not canonical.text.strip():
            dropped += 1
            continue
        changed += canonical.text != row.text
        signals.update(canonical.signals)
        out.append(dataclasses.replace(row, text=canonical.text, signals=canonical.signals))
    texts = {row.id: row.text for row in out if row.copy_of is None}
    same: Counter[str] = Counter()
    copies: Counter[str] = Counter()
    for row in out:
        if row.copy_of is not None and row.obfuscation is not None:
            copies[row.obfuscation] += 1
            same[row.obfuscation] += texts.get(row.copy_of) == row.text
    stats = {
        "texts": len(out),
        "changed": changed,
        "dropped_empty": dropped,
        "signals": dict(sorted(signals.items())),
        "copies_same_as_original": {family: same[family] for family in sorted(copies)},
    }
    return out, stats


def answer_for(profile: ModelProfile, label: str, category: str | None) -> tuple[str, str]:
    """The profile's label text for a gold verdict, and the category the answer names ('' for none).

    Binary profiles have one label per verdict; profiles whose malicious labels are the
    attack categories (narasimha-m) pick the label of the example's category.
    """
    verdict = Verdict(label)
    specs = [spec for spec in profile.labels if spec.verdict is verdict]
    if len(specs) == 1:
        spec = specs[0]
    else:
        matches = [spec for spec in specs if spec.category and spec.category == category]
        if len(matches) != 1:
            raise ProfileError(
                f"profile {profile.name!r} has several {label} labels and none for category {category!r}"
            )
        spec = matches[0]
    named = ""
    if (
        profile.category_separator is not None
        and verdict is Verdict.MALICIOUS
        and category
        and category in profile.categories
    ):
        named = category
    return spec.text, named


def text_offset(builder: PromptBuilder) -> int:
    """Where the user's text starts in every prompt the builder makes (after the system turn)."""
    empty = builder.fast_prompt([])
    probe = builder.encode_text("probe")
    full = builder.fast_prompt(probe)
    for at in range(len(empty) + 1):
        if full[:at] == empty[:at] and full[at : at + len(probe)] == probe and full[at + len(probe) :] == empty[at:]:
            return at
    raise ProfileError("the prompt builder does not place the user's text in one piece")


def build_example(
    builder: PromptBuilder, offset: int, text_ids: Sequence[int], label: str, rationale: str | None, category: str
) -> tuple[list[int], list[int]]:
    """`builder.training_example` for already tokenized (possibly cut) text ids.

    The builder tokenizes the text on its own, apart from the markup around it, so the
    example is the text-free example with the text's ids put in place: token for token what
    `training_example(text, ...)` gives when `text_ids` are the text's ids.
    """
    ids, mask = builder.training_example("", label, rationale, category)
    return [*ids[:offset], *text_ids, *ids[offset:]], [*mask[:offset], *([0] * len(text_ids)), *mask[offset:]]


@dataclass
class TokenizedSplit:
    """A tokenized split and what happened on the way (for the model card)."""

    input_ids: list[list[int]] = field(default_factory=list)
    assistant_masks: list[list[int]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    formats: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    dropped_long: int = 0
    uncategorized: Counter[str] = field(default_factory=Counter)
    obfuscated: Counter[str] = field(default_factory=Counter)
    window_pieces: Counter[str] = field(default_factory=Counter)  # by label

    def __len__(self) -> int:
        return len(self.input_ids)

    def to_dataset(self) -> Dataset:
        from datasets import Dataset

        return Dataset.from_dict({"input_ids": self.input_ids, "assistant_masks": self.assistant_masks})

    def summary(self) -> dict[str, Any]:
        lengths = sorted(len(ids) for ids in self.input_ids)
        return {
            "examples": len(self),
            "labels": dict(sorted(self.labels.items())),
            "reasoned": self.formats["reasoned"],
            "fast": self.formats["fast"],
            "truncated_texts": self.truncated,
            "dropped_long_texts": self.dropped_long,
            "malicious_without_known_category": dict(sorted(self.uncategorized.items())),
            "obfuscated_copies": dict(sorted(self.obfuscated.items())),
            "window_pieces": dict(sorted(self.window_pieces.items())),
            "tokens_median": lengths[len(lengths) // 2] if lengths else 0,
            "tokens_max": lengths[-1] if lengths else 0,
            "tokens_total": sum(lengths),
        }


def tokenize_rows(
    builder: PromptBuilder,
    rows: Sequence[TrainingRow],
    *,
    max_length: int,
    max_text_tokens: int | None = None,
    long_texts: str = "keep_both_ends",
) -> TokenizedSplit:
    """Tokenize rows through the serving prompt builder; every result fits `max_length` whole.

    A text over its budget (`max_text_tokens`, and what `max_length` leaves after the prompt
    and answer) keeps both ends of its tokens as the server's truncation does, or is dropped
    (`long_texts: drop`).
    """
    out = TokenizedSplit()
    offset = text_offset(builder)
    for row in rows:
        label_text, category = answer_for(builder.profile, row.label, row.category)
        if row.label == Verdict.MALICIOUS.value and not category and builder.profile.category_separator:
            out.uncategorized[str(row.category)] += 1
        text_ids = builder.encode_text(row.text)
        frame, _ = builder.training_example("", label_text, row.rationale, category)
        budget = max_length - len(frame)
        if max_text_tokens is not None:
            budget = min(budget, max_text_tokens)
        if budget < 1:
            raise ValueError(
                f"example {row.id!r}: the prompt and answer alone take {len(frame)} tokens, "
                f"over training.max_length {max_length}"
            )
        if len(text_ids) > budget:
            if long_texts == "drop":
                out.dropped_long += 1
                continue
            text_ids = keep_both_ends(text_ids, budget)
            out.truncated += 1
        ids, mask = build_example(builder, offset, text_ids, label_text, row.rationale, category)
        out.input_ids.append(ids)
        out.assistant_masks.append(mask)
        out.ids.append(row.id)
        out.formats["reasoned" if row.rationale else "fast"] += 1
        out.labels[row.label] += 1
        if row.obfuscation is not None:
            out.obfuscated[row.obfuscation] += 1
        if row.window_piece:
            out.window_pieces[row.label] += 1
    return out
