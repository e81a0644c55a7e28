"""Train or load the T5-style tokenizer: special ids, sentinels, and an eos post-processor.

Id layout the model relies on: ``<pad>``=0 (also the decoder start), ``</s>``=1 (eos), ``<unk>``=2.
Sentinels ``<extra_id_0>`` ... ``<extra_id_{n-1}>`` (span corruption, used in order) are looked up by
their text, so they may sit anywhere: a tokenizer we train puts them at 3 ... n+2, Hugging Face T5
tokenizers at the top of the vocabulary (``<extra_id_0>`` = 32099, ``<extra_id_99>`` = 32000).

Eos convention: the tokenizer's **post-processor appends** ``</s>`` — ``tok.encode(text).ids`` ends
with eos 1; pass ``add_special_tokens=False`` for the bare pieces. ``decode`` skips special tokens by
default, so ``decode(encode(x).ids) == x`` for byte-level BPE (exact, any unicode) and, for unigram,
for text made of characters seen in training (NFKC-normalized; unseen characters become ``<unk>``).
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
FIRST_SENTINEL_ID = 3  # where a tokenizer we train puts <extra_id_0> (loaded ones: ``sentinel_ids``)


def sentinel_token(i: int) -> str:
    """The text of the i-th sentinel, ``<extra_id_{i}>``."""
    return f"<extra_id_{i}>"


def special_tokens(num_sentinels: int) -> list[str]:
    """All special tokens in id order: pad, eos, unk, then the sentinels."""
    return [PAD, EOS, UNK] + [sentinel_token(i) for i in range(num_sentinels)]


def _eos_post_processor() -> processors.TemplateProcessing:
    # appends eos to every sequence (T5 inputs and targets both end with </s>)
    return processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B:1 {EOS}:1", special_tokens=[(EOS, EOS_ID)]
    )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    kind: Literal["bpe", "unigram"] = "bpe",
    num_sentinels: int = 100,
    length: int | None = None,
) -> Tokenizer:
    """Train a tokenizer on ``texts``.

    Args:
        texts: training documents (any iterable; consumed once).
        vocab_size: final vocabulary size, special tokens and sentinels included.
        kind: ``"bpe"`` (byte-level BPE: no unknowns, exact round trip) or ``"unigram"``
            (SentencePiece-style with a ``▁`` metaspace, as T5's own vocabulary).
        num_sentinels: number of ``<extra_id_i>`` tokens (ids 3 ... 3+n-1).
        length: number of texts, only for the progress estimate.

    Returns:
        A ``tokenizers.Tokenizer`` whose post-processor appends ``</s>``.
    """
    specials = special_tokens(num_sentinels)
    if vocab_size <= len(specials) + 256 and kind == "bpe":
        raise ValueError(
            f"vocab_size {vocab_size} leaves no room beyond {len(specials)} specials + 256 bytes"
        )
    if kind == "bpe":
        tok = Tokenizer(models.BPE())  # byte-level: every byte is in the alphabet, so no unk is needed
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            unk_token=UNK,
            initial_alphabet=list(string.printable),  # ASCII never maps to <unk>
            show_progress=False,
        )
    else:
        raise ValueError(f"kind: expected 'bpe' or 'unigram', got {kind!r}")
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    tok.post_processor = _eos_post_processor()
    check_special_tokens(tok, num_sentinels, where="trained tokenizer")
    return tok


def check_special_tokens(tok: Tokenizer, num_sentinels: int | None = None, where: str = "tokenizer") -> None:
    """Raise ``ValueError`` naming ``where`` and the first special token missing or at a wrong id.

    pad/eos/unk must be 0/1/2; the sentinels ``<extra_id_0..n-1>`` must exist, at any ids.
    ``num_sentinels=None`` checks however many sentinels the tokenizer has (at least one).
    """
    for expected_id, token in enumerate((PAD, EOS, UNK)):
        got = tok.token_to_id(token)
        if got is None:
            raise ValueError(f"{where}: special token {token!r} is missing (expected id {expected_id})")
        if got != expected_id:
            raise ValueError(f"{where}: special token {token!r} has id {got}, expected {expected_id}")
    n = num_sentinels if num_sentinels is not None else max(len(sentinel_ids(tok)), 1)
    for i in range(n):
        got = tok.token_to_id(sentinel_token(i))
        if got is None:
            raise ValueError(
                f"{where}: special token {sentinel_token(i)!r} is missing ({n} sentinels needed)"
            )
        if got < FIRST_SENTINEL_ID:
            raise ValueError(f"{where}: special token {sentinel_token(i)!r} has id {got}, one of pad/eos/unk")


def load_tokenizer(path: str | Path, num_sentinels: int | None = None) -> Tokenizer:
    """Load ``tokenizer.json`` (a file, or a directory holding one) and validate its special tokens.

    Raises ``FileNotFoundError`` if absent and ``ValueError`` naming the path and the offending
    special token if pad/eos/unk/sentinels are missing or at other ids. A tokenizer without the
    eos post-processor gets it added, so ``encode`` always ends with ``</s>``.
    """
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer_path: no tokenizer file at {file}")
    tok = Tokenizer.from_file(str(file))
    check_special_tokens(tok, num_sentinels, where=str(file))
    probe = tok.encode("a").ids
    if not probe or probe[-1] != EOS_ID:
        tok.post_processor = _eos_post_processor()
    return tok


def sentinel_ids(tok: Tokenizer) -> list[int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... in order, as many as the tokenizer has."""
    ids = []
    while (i := tok.token_to_id(sentinel_token(len(ids)))) is not None:
        ids.append(i)
    return ids
