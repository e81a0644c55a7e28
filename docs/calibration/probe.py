"""Calibration probe: does a model retrieve world facts? (not part of the pipeline)

python calib/probe.py <model_dir> [world_size] [seed]
- cloze: span-corruption format, input 'The language of X is<extra_id_0>.', candidates
  '<extra_id_0> value<extra_id_1>' for the true value and 3 distractors: rank accuracy per relation group
- qa: question prompt (no options), candidates the 4 values: rank accuracy (trained vs held-out relations)
"""
import json, random, sys
import torch
from flanmoe.data.embedded.world import build_world, TRAINED_RELATIONS, HELDOUT_RELATIONS
from flanmoe.data.embedded import vocab
from flanmoe.data.tokenizer import load_tokenizer
from flanmoe.eval.scoring import score_candidates
from flanmoe.model.transformer import FlanMoEModel

torch.set_num_threads(1)
md = sys.argv[1]
ws = int(sys.argv[2]) if len(sys.argv) > 2 else 30
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1234
world = build_world(seed, ws)
model = FlanMoEModel.from_pretrained(md, torch.device("cpu"), None, moe_overrides={"dropless": True}).eval() \
    if True else None
tok = load_tokenizer(md); tok.encode_special_tokens = False  # sentinels as special tokens (no other specials in probe text)
enc = lambda xs: [e.ids for e in tok.encode_batch(xs)]
rng = random.Random(0)

def items(rels, mode):
    P, C = [], []
    for rel in rels:
        pool = world.values(rel.kind, rel.attr)
        for ent in world.of(rel.kind):
            ans = ent.attrs[rel.attr]
            others = sorted(p for p in set(pool) if p != ans)
            if len(others) < 3: continue
            ch = [ans] + rng.sample(others, 3)
            if mode == "cloze":
                t = rel.statements[0]
                pre, post = t.split("{o}")
                pre = vocab.fix_articles(pre.format(s=ent.name)).rstrip()
                pre = pre[0].upper() + pre[1:]
                P.append(f"{pre}<extra_id_0>{post}")
                C.append([f"<extra_id_0> {c}<extra_id_1>" for c in ch])
            else:
                P.append(vocab.fix_articles(rel.questions[0].format(s=ent.name)))
                C.append(ch)
    return P, C

out = {}
for mode in ("cloze", "qa"):
    for name, rels in (("trained", TRAINED_RELATIONS), ("heldout", HELDOUT_RELATIONS)):
        P, C = items(rels, mode)
        sc = score_candidates(model, enc(P), [enc(c) for c in C], batch_size=32)
        acc = sum(max(range(len(s)), key=lambda j: s[j].logprob if hasattr(s[j], 'logprob') else s[j][0]) == 0 for s in sc) / len(sc)
        out[f"{mode}_{name}"] = round(acc, 3)
        out[f"{mode}_{name}_n"] = len(sc)
print(json.dumps(out))
