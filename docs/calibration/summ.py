import json, sys, glob, os
for R in sys.argv[1:]:
    for f in sorted(glob.glob(f"{R}/*-pretrain.json") + glob.glob(f"{R}/*-instruct.json")):
        d = json.load(open(f)); name = os.path.basename(f)[:-5]
        print(f"== {R.split('/')[-1]} {name}")
        for suite in ("mmlu", "bbh"):
            for mode in ("zero_shot", "few_shot"):
                s = d[suite][mode]
                ts = " ".join(f"{t[:6]}={v['score']:.2f}" for t, v in s["tasks"].items())
                print(f"  {suite} {mode[:4]} {s['score']:.3f} [{s['score_lo']:.3f},{s['score_hi']:.3f}] norm {s['normalized']:.1f} | {ts}")
        h = d.get("heldin", {}).get("zero_shot", {})
        na = d["normalized_average"]
        print(f"  heldin {h.get('score')}  normavg zs {na['zero_shot']['score']:.1f} [{na['zero_shot']['score_lo']:.1f},{na['zero_shot']['score_hi']:.1f}] fs {na['few_shot']['score']:.1f} [{na['few_shot']['score_lo']:.1f},{na['few_shot']['score_hi']:.1f}]")
    if os.path.exists(f"{R}/times.txt"): print(open(f"{R}/times.txt").read())
