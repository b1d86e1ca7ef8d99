"""Prompt building: one code path for serving, training and evaluation (no train/serve skew).

User text is data, never markup. The chat template is rendered around a sentinel in place
of the user's text; the template's own pieces are tokenized normally (their special tokens
become special ids) while the user's text is tokenized by a copy of the tokenizer that
knows no added tokens, so `<|im_end|>` or `</think>` inside a query become plain-text
pieces and the query cannot close its turn, open a new one or write the verdict.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._profile import ModelProfile, ProfileError, Verdict

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

# Qwen3's think block, as its chat template writes it: an empty block for FAST
# (`enable_thinking=False` appends exactly this), an open block for REASONED, and the
# close that follows a rationale.
EMPTY_THINK_BLOCK = "<think>\n\n</think>\n\n"
OPEN_THINK_BLOCK = "<think>\n"
CLOSE_THINK_BLOCK = "</think>\n\n"
THINK_END = "</think>"

QWEN3_CHAT_TEMPLATE_PATH = Path(__file__).with_name("qwen3.jinja")


def qwen3_chat_template() -> str:
    """The Qwen3 chat template (byte-identical to the one Qwen3 models ship)."""
    return QWEN3_CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")


@dataclass(frozen=True)
class LabelSequences:
    """Token sequences of the label set, in profile order, and of the categories."""

    labels: tuple[tuple[int, ...], ...]
    # Category candidates as they follow the separator (with their leading space).
    categories: tuple[tuple[int, ...], ...]
    # Tokens of "<label><separator>" for each malicious label, when categories follow labels.
    category_prefix: dict[str, tuple[int, ...]]


def _plain_text_tokenizer(tokenizer: PreTrainedTokenizerBase) -> Tokenizer:
    """A copy of `tokenizer`'s backend without added tokens: every string is plain text."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ProfileError("promptgate needs a fast (tokenizers-backed) tokenizer")
    spec: dict[str, Any] = json.loads(backend.to_str())
    spec["added_tokens"] = []
    plain = Tokenizer.from_str(json.dumps(spec))
    # Templates add BOS/EOS themselves; the user's text gets none.
    plain.post_processor = None
    plain.no_truncation()
    plain.no_padding()
    return plain


class _Offsets(Sequence[tuple[int, int]]):
    """A text's token offsets, from the tokenizer on first use: the text is tokenized again, with
    offsets, only if they are ever read (a text longer than one window)."""

    __slots__ = ("_offsets", "_text", "_tokenizer")

    def __init__(self, tokenizer: Tokenizer, text: str) -> None:
        self._tokenizer: Tokenizer | None = tokenizer
        self._text = text
        self._offsets: list[tuple[int, int]] | None = None

    def _get(self) -> list[tuple[int, int]]:
        if self._offsets is None:
            assert self._tokenizer is not None
            self._offsets = self._tokenizer.encode(self._text, add_special_tokens=False).offsets
            self._tokenizer, self._text = None, ""
        return self._offsets

    def __getitem__(self, index: Any) -> Any:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __eq__(self, other: object) -> bool:
        return list(self._get()) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]


class PromptBuilder:
    """Turns a query into the token ids a model is prompted with, per mode."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, profile: ModelProfile) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ProfileError("the model's tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.profile = profile
        self._plain = _plain_text_tokenizer(tokenizer)
        # tokenizers >= 0.20.2; the same ids as encode_batch, without the offsets.
        self._encode_batch = getattr(self._plain, "encode_batch_fast", self._plain.encode_batch)
        self._added_ids = frozenset(int(i) for i in tokenizer.get_added_vocab().values())
        head, tail = self._render_around_user()
        self._head = self._encode_markup(head)
        self._fast_tail = self._encode_markup(tail + EMPTY_THINK_BLOCK)
        self._reasoned_tail = self._encode_markup(tail + OPEN_THINK_BLOCK)
        self._close_think = self._encode_markup(CLOSE_THINK_BLOCK)
        self._newline_close_think = self._encode_markup("\n" + CLOSE_THINK_BLOCK)
        think_end = tokenizer.convert_tokens_to_ids(THINK_END)
        if not isinstance(think_end, int) or think_end == tokenizer.unk_token_id:
            raise ProfileError(f"the tokenizer has no {THINK_END!r} token: not a Qwen3-style model")
        self.think_end_id: int = think_end
        self.sequences = self._label_sequences()

    # -- rendering ---------------------------------------------------------------------

    def _render_around_user(self) -> tuple[str, str]:
        sentinel = f"@@promptgate-user-{secrets.token_hex(8)}@@"
        rendered = self.tokenizer.apply_chat_template(
            [
                {"role": "system", "content": self.profile.system_prompt},
                {"role": "user", "content": sentinel},
            ],
            tokenize=False,
            add_generation_prompt=True,
            # The open generation prompt ("<|im_start|>assistant\n"); the think block is
            # appended per mode below, exactly as Qwen3's template writes it.
            enable_thinking=True,
        )
        if not isinstance(rendered, str) or rendered.count(sentinel) != 1:
            raise ProfileError("the chat template must render the user message verbatim, once")
        head, tail = rendered.split(sentinel)
        return head, tail

    def _encode_markup(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_text(self, text: str) -> list[int]:
        """Token ids of user text, as plain text (no special or added tokens)."""
        return self.encode_text_with_offsets(text)[0]

    def encode_text_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode_text`, and each token's [start, end) in `text` (code points; whole characters)."""
        encoding = self._plain.encode(text, add_special_tokens=False)
        return self._checked(encoding.ids), encoding.offsets

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode_text` of each text, tokenized in one batch (in parallel, without the GIL)."""
        return [ids for ids, _ in self.encode_texts_with_offsets(texts)]

    def encode_texts_with_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], Sequence[tuple[int, int]]]]:
        """`encode_text_with_offsets` of each text, tokenized in one batch.

        The batch is tokenized without offsets (`encode_batch_fast`: the same ids, a sixth less
        CPU on test.jsonl, 100 against 119 µs a text) and a text's offsets come from the
        tokenizer when first indexed: most texts fit one window and never need them.
        """
        texts = list(texts)
        encodings = self._encode_batch(texts, add_special_tokens=False)
        return [(self._checked(e.ids), _Offsets(self._plain, t)) for e, t in zip(encodings, texts, strict=True)]

    def _checked(self, ids: list[int]) -> list[int]:
        # Defence in depth: a tokenizer whose base vocabulary can still yield an added
        # token would let text forge markup, so refuse rather than serve it.
        if self._added_ids.intersection(ids):
            raise ProfileError("user text produced a special token id; the tokenizer is unsafe for promptgate")
        return ids

    @property
    def overhead_tokens(self) -> int:
        """Prompt tokens around the user's text and a rationale, up to where the label starts."""
        return len(self._head) + max(len(self._reasoned_tail) + len(self._newline_close_think), len(self._fast_tail))

    def fast_prompt(self, text_ids: Sequence[int]) -> list[int]:
        """Prompt that ends where the label begins, after an empty think block."""
        return [*self._head, *text_ids, *self._fast_tail]

    def reasoned_prompt(self, text_ids: Sequence[int]) -> list[int]:
        """Prompt that ends inside an open think block, where the rationale begins."""
        return [*self._head, *text_ids, *self._reasoned_tail]

    def after_rationale(self, reasoned_prompt: Sequence[int], rationale_ids: Sequence[int]) -> list[int]:
        """Prompt that ends where the label begins, after the model's own rationale.

        `rationale_ids` are the generated tokens without the closing `</think>`; they are
        kept as generated (not re-tokenized) so the engine's prefix cache keeps hitting.
        """
        text = self.tokenizer.decode(list(rationale_ids), skip_special_tokens=False)
        close = self._close_think if text.endswith("\n") else self._newline_close_think
        return [*reasoned_prompt, *rationale_ids, *close]

    def decode_rationale(self, rationale_ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(rationale_ids), skip_special_tokens=True)
        return " ".join(text.split())

    # -- labels ------------------------------------------------------------------------

    def _label_sequences(self) -> LabelSequences:
        labels = tuple(tuple(self._encode_markup(t)) for t in self.profile.label_texts)
        _check_prefix_free(self.profile.label_texts, labels, "labels")
        categories: tuple[tuple[int, ...], ...] = ()
        prefixes: dict[str, tuple[int, ...]] = {}
        sep = self.profile.category_separator
        if sep is not None:
            categories = tuple(tuple(self._encode_markup(" " + c)) for c in self.profile.categories)
            _check_prefix_free(self.profile.categories, categories, "categories")
            for spec, ids in zip(self.profile.labels, labels, strict=True):
                if spec.verdict is Verdict.MALICIOUS:
                    joined = tuple(self._encode_markup(spec.text + sep))
                    if joined[: len(ids)] != ids:
                        raise ProfileError(f"label {spec.text!r} tokenizes differently before the separator")
                    prefixes[spec.text] = joined
        return LabelSequences(labels=labels, categories=categories, category_prefix=prefixes)

    # -- training ----------------------------------------------------------------------

    def training_example(
        self, text: str, label: str, rationale: str | None, category: str = ""
    ) -> tuple[list[int], list[int]]:
        """Token ids of a full conversation and the mask of the assistant's tokens.

        An empty or missing rationale gives the empty think block (the FAST format).
        """
        text_ids = self.encode_text(text)
        if rationale and rationale.strip():
            prompt = self.reasoned_prompt(text_ids)
            answer = rationale.strip() + "\n" + CLOSE_THINK_BLOCK
        else:
            prompt = self.fast_prompt(text_ids)
            answer = ""
        answer += self.profile.assistant_answer(label, category)
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        completion = [*self._encode_markup(answer), end]
        # Qwen3's template ends an assistant turn with "<|im_end|>\n": the newline is
        # markup after the turn, not something the model is asked to write.
        trailer = self._encode_markup("\n")
        ids = [*prompt, *completion, *trailer]
        mask = [0] * len(prompt) + [1] * len(completion) + [0] * len(trailer)
        return ids, mask


def _check_prefix_free(names: Sequence[str], seqs: Sequence[Sequence[int]], what: str) -> None:
    """Scoring walks a token trie; a sequence that prefixes another has no end token to score."""
    for i, a in enumerate(seqs):
        if not a:
            raise ProfileError(f"{what}: {names[i]!r} tokenizes to nothing")
        for j, b in enumerate(seqs):
            if i != j and len(a) <= len(b) and tuple(b[: len(a)]) == tuple(a):
                raise ProfileError(f"{what}: {names[i]!r} is a token prefix of {names[j]!r}")
