"""Model profiles: how to talk to a model (the one source of truth of the model contract).

A profile says which system instruction a model was trained under, which label strings it
writes and what each means, the attack categories it knows, and whether it was trained
with rationales. The server, the trainer and the evaluation all build prompts from it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILE_FILENAME = "promptgate.json"


class ProfileError(ValueError):
    """A profile is missing, unknown or inconsistent."""


class Verdict(enum.Enum):
    """What a label means."""

    BENIGN = "benign"
    MALICIOUS = "malicious"


@dataclass(frozen=True)
class LabelSpec:
    """One label string of the model's label set."""

    text: str
    verdict: Verdict
    # For models whose labels are attack categories (narasimha-m): the category this
    # label stands for. Empty for binary labels.
    category: str = ""


@dataclass(frozen=True)
class ModelProfile:
    """How to prompt a model and read its answer."""

    name: str
    system_prompt: str
    labels: tuple[LabelSpec, ...]
    # Attack categories the model knows (reported by GetModelInfo).
    categories: tuple[str, ...] = ()
    # When set, a malicious label is followed by this separator, a space and a category
    # from `categories` ("malicious\ncategory: jailbreak"): the category is then scored
    # like a label, after the separator. None when the model writes no category or its
    # labels are the categories.
    category_separator: str | None = None
    # The model was trained to write a rationale in its think block: REASONED is meaningful.
    rationale_trained: bool = True
    # The model also saw examples with an empty think block, so FAST is in distribution.
    hybrid_thinking: bool = False
    # The longest text, in tokens, the model was trained to read whole (a recipe's
    # data.max_text_tokens, or the size of its window pieces): the server's default window,
    # so a long document is read in pieces of the length the model knows. None: unknown.
    window_tokens: int | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ProfileError("a profile needs a name")
        texts = [label.text for label in self.labels]
        if len(texts) < 2:
            raise ProfileError(f"profile {self.name!r}: a label set needs at least two labels")
        if len(set(texts)) != len(texts):
            raise ProfileError(f"profile {self.name!r}: duplicate labels")
        if any(not t or t != t.strip() for t in texts):
            raise ProfileError(f"profile {self.name!r}: labels must be non-empty without outer spaces")
        verdicts = {label.verdict for label in self.labels}
        if verdicts != {Verdict.BENIGN, Verdict.MALICIOUS}:
            raise ProfileError(f"profile {self.name!r}: needs at least one benign and one malicious label")
        if self.category_separator is not None and not self.categories:
            raise ProfileError(f"profile {self.name!r}: category_separator without categories")
        w = self.window_tokens
        if w is not None and (not isinstance(w, int) or isinstance(w, bool) or w < 1):
            raise ProfileError(f"profile {self.name!r}: window_tokens must be a positive number of tokens")

    @property
    def label_texts(self) -> tuple[str, ...]:
        return tuple(label.text for label in self.labels)

    def label(self, text: str) -> LabelSpec:
        for label in self.labels:
            if label.text == text:
                return label
        raise KeyError(text)

    def assistant_answer(self, label: str, category: str = "") -> str:
        """The text the model writes after its think block for this label (and category)."""
        spec = self.label(label)
        if self.category_separator is not None and spec.verdict is Verdict.MALICIOUS and category:
            if category not in self.categories:
                raise ProfileError(f"profile {self.name!r} knows no category {category!r}")
            return f"{label}{self.category_separator} {category}"
        return label

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "system_prompt": self.system_prompt,
            "labels": [
                {
                    "text": lab.text,
                    "verdict": lab.verdict.value,
                    **({"category": lab.category} if lab.category else {}),
                }
                for lab in self.labels
            ],
            "categories": list(self.categories),
            "category_separator": self.category_separator,
            "rationale_trained": self.rationale_trained,
            "hybrid_thinking": self.hybrid_thinking,
            **({"window_tokens": self.window_tokens} if self.window_tokens is not None else {}),
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelProfile:
        known = {
            "name",
            "description",
            "system_prompt",
            "labels",
            "categories",
            "category_separator",
            "rationale_trained",
            "hybrid_thinking",
            "window_tokens",
        }
        try:
            labels = tuple(
                LabelSpec(
                    text=str(lab["text"]),
                    verdict=Verdict(lab["verdict"]),
                    category=str(lab.get("category", "")),
                )
                for lab in data["labels"]
            )
            return cls(
                name=str(data["name"]),
                description=str(data.get("description", "")),
                system_prompt=str(data["system_prompt"]),
                labels=labels,
                categories=tuple(str(c) for c in data.get("categories", ())),
                category_separator=data.get("category_separator"),
                rationale_trained=bool(data.get("rationale_trained", True)),
                hybrid_thinking=bool(data.get("hybrid_thinking", False)),
                window_tokens=data.get("window_tokens"),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ProfileError):
                raise
            raise ProfileError(f"invalid profile: {exc!r}") from exc

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / PROFILE_FILENAME
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ModelProfile:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ProfileError(f"cannot read profile {path}: {exc}") from exc
        return cls.from_dict(data)
