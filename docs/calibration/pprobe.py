"""Where does a pretrained model keep a person's facts? A linear probe of its encoder states (Physics
of LMs 3.1's P-probing). Not part of the pipeline.

    PYTHONPATH=. python docs/calibration/pprobe.py <model_dir> [params.yaml]

For every person of the world (params' prepare.embedded) and person relation, the encoder reads a
context about the person, and a multinomial logistic regression on one position's final encoder state
predicts the attribute's value; 5-fold cross-validation over people (IT and held-out alike: every
person's facts are in the corpus). Contexts and positions:
- question / name: the relation's first question template, mean state over the name's tokens;
- question / last: the same question, state of its last token (eos): where an instruction-tuned model
  would have to read the answer from;
- cloze / sentinel: the corpus's statement with the value as <extra_id_0>, the sentinel's state
  (where span-corruption pretraining reads it from);
- name only / name: "[biography] <full name>" alone, mean over the name's tokens (what the name's
  representation holds without any relation words).
Chance: the share of the most common value of the relation.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import yaml

from flanmoe.data.config import EmbeddedConfig
from flanmoe.data.embedded import world_of
from flanmoe.data.embedded.facts import state_span
from flanmoe.data.embedded.people import BIO_TAG, PERSON_RELATIONS
from flanmoe.data.tokenizer import load_tokenizer
from flanmoe.model.pretrained import load_pretrained


def probe_accuracy(
    x: np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    steps: int = 300,
    l2: float = 1e-3,
    n_train: int | None = None,
) -> float:
    """Cross-validated accuracy of a softmax regression of y on standardized x (``n_train``: fit on
    only that many people of each fold's training part, to see how the readout grows with people)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    classes = {v: i for i, v in enumerate(sorted(set(y)))}
    t = torch.tensor([classes[v] for v in y])
    correct, tested = 0, 0
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        if n_train is not None:
            train = rng.permutation(train)[:n_train]
        tested += len(test)
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
        w = torch.zeros(x.shape[1], len(classes), requires_grad=True)
        b = torch.zeros(len(classes), requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure(opt=opt, xt=xt, train=train, w=w, b=b):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xt[train] @ w + b, t[train]) + l2 * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        correct += int(((xt[test] @ w + b).argmax(1) == t[test]).sum())
    return correct / tested


def main() -> None:
    model_dir = sys.argv[1]
    params = yaml.safe_load(open(sys.argv[2] if len(sys.argv) > 2 else "params.yaml"))
    world = world_of(EmbeddedConfig(**params["prepare"]["embedded"]))
    torch.set_num_threads(2)
    model = load_pretrained(model_dir, "cpu", None, moe_overrides={"dropless": True}).eval()
    tok = load_tokenizer(model_dir)
    tok.encode_special_tokens = False  # <extra_id_0> as the sentinel
    people = world.people.all
    heldout = {p.name for p in world.people.heldout}

    def states(texts: list[str], spans: list[tuple[int, int] | None]) -> np.ndarray:
        """Mean final encoder state over the tokens overlapping each text's char span (None: last token)."""
        out = []
        for i in range(0, len(texts), 64):
            enc = tok.encode_batch(texts[i : i + 64])
            n = max(len(e.ids) for e in enc)
            ids = torch.zeros(len(enc), n, dtype=torch.long)
            for k, e in enumerate(enc):
                ids[k, : len(e.ids)] = torch.tensor(e.ids)
            with torch.no_grad():
                h = model.run_encoder(ids, ids != 0).hidden.numpy()
            for k, e in enumerate(enc):
                span = spans[i + k]
                if span is None:
                    pos = [len(e.ids) - 1]
                else:
                    pos = [j for j, (a, b) in enumerate(e.offsets) if a < span[1] and span[0] < b and b > a]
                out.append(h[k, pos].mean(0))
        return np.stack(out)

    result = {}
    rng = __import__("random").Random(0)
    for rel in PERSON_RELATIONS:
        y = np.array([p.attrs[rel.attr] for p in people])
        q = [rel.questions[0].format(s=p.name) for p in people]
        qspan = [(t.index(p.name), t.index(p.name) + len(p.name)) for t, p in zip(q, people, strict=True)]
        cloze = []
        for p in people:
            sentence, (a, b) = state_span(rel, p, rng)
            cloze.append((sentence[:a] + "<extra_id_0>" + sentence[b:], a))
        name_only = [f"{BIO_TAG} {p.name}" for p in people]
        nspan = [(len(BIO_TAG) + 1, len(t)) for t in name_only]
        feats = {
            "question/name": states(q, qspan),
            "question/last": states(q, [None] * len(q)),
            "cloze/sentinel": states([c for c, _ in cloze], [(a, a + len("<extra_id_0>")) for _, a in cloze]),
            "name_only/name": states(name_only, nspan),
        }
        chance = max(np.mean(y == v) for v in set(y))
        result[rel.attr] = {"chance": round(float(chance), 3)} | {
            k: round(probe_accuracy(v, y), 3) for k, v in feats.items()
        }
        for n in (50, 100, 150, 200):  # the readout against the people it is fitted on
            result[rel.attr][f"question/name@{n}"] = round(
                probe_accuracy(feats["question/name"], y, n_train=n), 3
            )
        print(rel.attr, result[rel.attr], flush=True)
    keys = list(next(iter(result.values())))
    print(json.dumps({k: round(float(np.mean([r[k] for r in result.values()])), 3) for k in keys}))
    print(f"people: {len(people)} ({len(heldout)} held out)")


if __name__ == "__main__":
    main()
