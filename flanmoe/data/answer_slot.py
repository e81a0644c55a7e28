"""Where an instruction's answer goes: after the input (``plain``) or in a sentinel slot (``sentinel``).

``plain`` is FLAN's form: the encoder reads the instruction, the decoder writes the answer from
scratch (``inputs</s>`` -> ``answer</s>``). A span-corruption model has only ever written text *after
a sentinel*, as the value of a masked span; ``sentinel`` asks for the answer in that form, UL2's
mode switch in its simplest shape::

    inputs<extra_id_0></s>  ->  <extra_id_0> answer<extra_id_1></s>

(the answer with a leading space, as a masked span keeps the space byte-level BPE glues to a word).
docs/calibration.md (v2, item 12) measured why it matters here: instruction tuning in ``plain`` form
never lifted held-out people off chance, the same pairs in ``sentinel`` form lifted them far above.

One ``AnswerSlot`` serves every place that builds or reads an answer, so training and scoring agree:
the tokenize stage (instruction and fine-tuning pairs), and the evaluate stage (prompts, the
candidates scored by log-likelihood, the answer read out of a greedy generation). Few-shot exemplars
inside a prompt stay plain text; only the query's answer goes in the slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

from flanmoe.data.config import AnswerForm
from flanmoe.data.tokenizer import EOS_ID, sentinel_ids

ANSWER_FORMS: tuple[str, ...] = get_args(AnswerForm)


@dataclass(frozen=True)
class AnswerSlot:
    """The answer form ``form`` with the sentinel ids it uses (``open_id``, ``close_id``)."""

    form: AnswerForm = "plain"
    open_id: int = -1  # <extra_id_0>
    close_id: int = -1  # <extra_id_1>

    @classmethod
    def of(cls, form: str, tok) -> AnswerSlot:
        """The slot of ``form`` for the tokenizers.Tokenizer ``tok`` (ValueError naming the form when
        it is unknown, or ``sentinel`` and ``tok`` has fewer than two sentinels)."""
        if form not in ANSWER_FORMS:
            raise ValueError(f"answer_form: {form!r} is not one of {ANSWER_FORMS}")
        if form == "plain":
            return cls()
        ids = sentinel_ids(tok)
        if len(ids) < 2:
            raise ValueError(
                f"answer_form: 'sentinel' needs <extra_id_0> and <extra_id_1> in the tokenizer (has {len(ids)})"
            )
        return cls("sentinel", ids[0], ids[1])

    @property
    def input_extra(self) -> int:
        """Tokens the slot adds to an input (so that truncation leaves room for them)."""
        return 1 if self.form == "sentinel" else 0

    @property
    def target_extra(self) -> int:
        return 2 if self.form == "sentinel" else 0

    def target_text(self, text: str) -> str:
        """The text encoded as the answer: the answer itself, or with one leading space (a span's)."""
        return text if self.form == "plain" else " " + text.strip()

    def inputs(self, ids: Sequence[int]) -> list[int]:
        """Encoded inputs (ending with eos) with the slot opened before the eos."""
        if self.form == "plain":
            return list(ids)
        return [*_without_eos(ids), self.open_id, EOS_ID]

    def target(self, ids: Sequence[int]) -> list[int]:
        """An encoded answer (of ``target_text``, with or without its eos) as the decoder writes it."""
        if self.form == "plain":
            return list(ids)
        return [self.open_id, *_without_eos(ids), self.close_id, EOS_ID]

    def answer(self, generated: Sequence[int]) -> list[int]:
        """The answer's ids in a greedy generation (eos already cut): after the opening sentinel,
        up to the closing one."""
        out = list(generated)
        if self.form == "plain":
            return out
        if out and out[0] == self.open_id:
            out = out[1:]
        return out[: out.index(self.close_id)] if self.close_id in out else out


def _without_eos(ids: Sequence[int]) -> list[int]:
    return list(ids[:-1]) if ids and ids[-1] == EOS_ID else list(ids)


__all__ = ["ANSWER_FORMS", "AnswerForm", "AnswerSlot"]
