import sys, yaml
base = yaml.safe_load(open("calib/params.base.yaml"))
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    d = base
    ks = k.split(".")
    for x in ks[:-1]:
        d = d[x]
    d[ks[-1]] = yaml.safe_load(v)
for s in ("pretrain", "instruct", "finetune"):
    base[s]["parallel"]["threads"] = base[s]["parallel"].get("threads") or int(__import__("os").environ.get("CALIB_THREADS", "1"))
base["evaluate"]["threads"] = base["evaluate"].get("threads") or int(__import__("os").environ.get("CALIB_THREADS", "1"))
yaml.safe_dump(base, open("params.yaml", "w"), sort_keys=False)
import hashlib, json
print(hashlib.md5(json.dumps([base["prepare"], base["tokenize"]], sort_keys=True).encode()).hexdigest())
