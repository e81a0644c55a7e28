import sys, re, statistics, datasets, json
from flanmoe.data.embedded.world import build_world, RELATIONS
from flanmoe.data.embedded import vocab
ws = int(sys.argv[1]) if len(sys.argv) > 1 else 30
world = build_world(1234, ws)
ds = datasets.load_from_disk("data/prepared/pretrain") if not sys.argv[2:] else None
text = "\n".join(ds["text"]).lower()
tot = len(text.encode())
res = {}
for rel in RELATIONS:
    cnt = []
    for ent in world.of(rel.kind):
        c = 0
        for t in rel.statements:
            s = vocab.fix_articles(t.format(s=ent.name, o=ent.attrs[rel.attr])).lower().rstrip(".")
            c += text.count(s)
        cnt.append(c)
    res[f"{rel.kind}.{rel.attr}{'' if rel.subject is None else '*'}"] = (statistics.mean(cnt), min(cnt))
print("corpus MB", tot/1e6)
for k, v in res.items(): print(k, "mean %.1f min %d" % v)
