"""The pretraining corpus in the C4 schema (``text``, ``timestamp``, ``url``).

Four parts, shuffled together: real English that ships with Python (``pydoc_data`` topics and
standard-library docstrings, read with ``ast``, never imported), the instruction families' raw
material stated as plain sentences without instructions, biographies of the world's people (a
fixed number per person: its exposure stratum, ``people.py``), and prose about the rest of the world
(its facts in varied phrasing, the Zorbic lexicon, unit facts).

People's facts appear only in their biographies. A fourth column, ``salient_spans``, gives the
character offsets of every stated fact's value (``[s0, e0, s1, e1, ...]``), for salient-span masking.
"""

from __future__ import annotations

import ast
import datetime as dt
import pathlib
import random
import sysconfig
from collections.abc import Iterator

from flanmoe.data.embedded import vocab
from flanmoe.data.embedded.facts import Entity, Relation, state_span
from flanmoe.data.embedded.families import FAMILIES, GenContext
from flanmoe.data.embedded.families.knowledge import PERSON_FAMILIES
from flanmoe.data.embedded.people import biographies, qa_documents
from flanmoe.data.embedded.world import RELATIONS, World

C4_COLUMNS = ("text", "timestamp", "url")
Doc = tuple[str, str, list[int]]  # text, url, salient spans
# (unit, its plural, smaller unit, how many): stated in the corpus, asked by MMLU "measurement"
UNIT_FACTS = (
    ("week", "weeks", "days", 7),
    ("day", "days", "hours", 24),
    ("hour", "hours", "minutes", 60),
    ("minute", "minutes", "seconds", 60),
    ("year", "years", "months", 12),
    ("dozen", "dozen", "eggs", 12),
    ("meter", "meters", "centimeters", 100),
    ("kilogram", "kilograms", "grams", 1000),
    ("centimeter", "centimeters", "millimeters", 10),
    ("decade", "decades", "years", 10),
    ("century", "centuries", "years", 100),
    ("fortnight", "fortnights", "days", 14),
    ("pair", "pairs", "socks", 2),
    ("kilometer", "kilometers", "meters", 1000),
    ("liter", "liters", "milliliters", 1000),
    ("score", "scores", "things", 20),
)
_CONNECTIVES = (
    "",
    "",
    "",
    "It is well known that ",
    "Records show that ",
    "As every traveller learns, ",
    "According to the old books, ",
    "Visitors often note that ",
    "In short, ",
)
_UNIT_PHRASES = ("A {u} has {n} {v}.", "There are {n} {v} in a {u}.", "One {u} is {n} {v}.")
_LEXICON_PHRASES = (
    "The Zorbic word for {e} is {z}.",
    "In Zorbic, {e} is {z}.",
    "{z} means {e} in Zorbic.",
    "Speakers of Zorbic say {z} for {e}.",
)


def _nbytes(s: str) -> int:
    return len(s.encode("utf-8"))


def real_english_docs() -> Iterator[Doc]:
    """(text, url) of English text shipped with Python: pydoc topics, then stdlib docstrings.

    Sorted keys and file names; sources are parsed with ``ast``, so nothing is imported.
    """
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key].strip(), f"https://docs.python.org/3/reference/{key}.html", []
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        # module, top-level definitions and methods (walking every expression node is slow)
        nodes: list[ast.AST] = [tree]
        for node in tree.body:
            nodes.append(node)
            if isinstance(node, ast.ClassDef):
                nodes += node.body
        docs = []
        for node in nodes:
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:  # short docstrings are mostly signatures, not prose
                    docs.append(doc.strip())
        if docs:
            yield "\n\n".join(docs), f"https://docs.python.org/3/library/{path.stem}.html", []


Fact = tuple[Relation, Entity]


def _links(world: World) -> tuple[dict[str, Entity], dict[str, list[Fact]]]:
    """Entities by name, and for each name the facts whose value it is (its incoming links)."""
    names = {e.name: e for es in world.entities.values() for e in es}
    incoming: dict[str, list[Fact]] = {}
    for rel, ent in world.facts():
        if ent.attrs[rel.attr] in names:
            incoming.setdefault(ent.attrs[rel.attr], []).append((rel, ent))
    return names, incoming


def _entity_article(
    ent: Entity, names: dict[str, Entity], incoming: dict[str, list[Fact]], rng: random.Random
) -> tuple[str, list[int]]:
    """An encyclopedia-style paragraph: the entity's facts, a few facts that point to it (the
    cities of a country), and some facts of entities it links to; with its values' offsets."""
    facts = [(r, ent) for r in RELATIONS if r.kind == ent.kind]
    into = incoming.get(ent.name, [])
    facts += rng.sample(into, min(3, len(into)))
    for attr in ent.attrs.values():  # follow links (capital, country) one hop; people have no article
        if attr in names and names[attr].kind != "person" and rng.random() < 0.5:
            linked = names[attr]
            facts += rng.sample([(r, linked) for r in RELATIONS if r.kind == linked.kind], 2)
    rng.shuffle(facts)
    text = f"{ent.name[0].upper()}{ent.name[1:]}\n\n"
    spans: list[int] = []
    for k, (r, e) in enumerate(facts):
        sentence, (a, b) = state_span(r, e, rng, rng.choice(_CONNECTIVES))
        text += " " if k else ""
        spans += [len(text) + a, len(text) + b]
        text += sentence
    return text, spans


def _lexicon_doc(lexicon: dict[str, str], rng: random.Random) -> str:
    words = rng.sample(sorted(lexicon), min(len(lexicon), rng.randint(8, 16)))
    lines = [rng.choice(_LEXICON_PHRASES).format(e=w, z=lexicon[w]) for w in words]
    return "A short Zorbic glossary.\n\n" + " ".join(s[0].upper() + s[1:] for s in lines)


def _units_doc(rng: random.Random) -> str:
    facts = rng.sample(UNIT_FACTS, rng.randint(3, len(UNIT_FACTS)))
    lines = [
        rng.choice(_UNIT_PHRASES).format(
            u=u, v=v, n=rng.choice((str(n), vocab.number_to_words(n)) if n < 100 else (str(n),))
        )
        for u, _, v, n in facts
    ]
    return vocab.fix_articles(" ".join(lines))


def world_docs(world: World, lexicon: dict[str, str], rng: random.Random) -> Iterator[Doc]:
    """An endless stream of documents about the world but its people, cycling over its entities."""
    ents = [e for kind in sorted(world.entities) if kind != "person" for e in world.entities[kind]]
    names, incoming = _links(world)
    i = 0
    while True:
        order = list(ents)
        rng.shuffle(order)
        for ent in order:
            i += 1
            text, spans = _entity_article(ent, names, incoming, rng)
            yield text, f"https://encyclopedia.embedded/wiki/{ent.name.replace(' ', '_')}", spans
            if i % 10 == 0:
                yield _lexicon_doc(lexicon, rng), f"https://zorbic.embedded/glossary/{i}", []
            if i % 25 == 0:
                yield _units_doc(rng), f"https://facts.embedded/units/{i}", []


def task_docs(ctx: GenContext, rng: random.Random) -> Iterator[Doc]:
    """An endless stream of documents of instruction-free family raw material (not the person
    families': people's facts are stated in biographies only, so that strata count exposures)."""
    i = 0
    while True:
        for fam in FAMILIES:
            if fam.name in PERSON_FAMILIES:
                continue
            i += 1
            lines = [
                vocab.fix_articles(fam.plain_text(fam.generate(rng, ctx))) for _ in range(rng.randint(6, 14))
            ]
            sep = "\n\n" if fam.category == "reading_comprehension" else "\n"
            yield sep.join(lines), f"https://exercises.embedded/{fam.name}/{i}", []


def _take(stream: Iterator[Doc], budget: int) -> list[Doc]:
    out, used = [], 0
    for doc in stream:
        if used >= budget:
            break
        out.append(doc)
        used += _nbytes(doc[0])
    return out


def build_corpus(
    ctx: GenContext,
    seed: int,
    total_bytes: int,
    real_fraction: float,
    task_fraction: float,
    qa_per_person: int = 0,
) -> dict[str, list[str]]:
    """C4-schema columns (and ``salient_spans``) of about ``total_bytes`` UTF-8 bytes, documents shuffled.

    ``real_fraction`` of the bytes is shipped English (less if Python ships less), ``task_fraction``
    family raw material; then every biography (their number is fixed by the people's strata) and
    ``qa_per_person`` QA documents per IT person, and world prose fills the rest (none if they already
    pass ``total_bytes``).
    """
    rng = random.Random(f"corpus-{seed}")
    real = _take(real_english_docs(), int(real_fraction * total_bytes))
    tasks = _take(task_docs(ctx, rng), int(task_fraction * total_bytes))
    bios = list(biographies(ctx.world.people, rng))
    bios += qa_documents(ctx.world.people, qa_per_person, rng) if qa_per_person else []
    used = sum(_nbytes(d[0]) for d in real + tasks + bios)
    world = _take(world_docs(ctx.world, ctx.lexicon, rng), max(0, total_bytes - used))
    docs = real + tasks + bios + world
    rng.shuffle(docs)  # globally: one person's biographies land far apart, never in one window
    start = dt.datetime(2019, 1, 1, tzinfo=dt.timezone.utc)
    stamps = [
        (start + dt.timedelta(seconds=rng.randrange(2 * 365 * 86400))).strftime("%Y-%m-%dT%H:%M:%SZ")
        for _ in docs
    ]
    return {
        "text": [d[0] for d in docs],
        "timestamp": stamps,
        "url": [d[1] for d in docs],
        "salient_spans": [d[2] for d in docs],
    }
