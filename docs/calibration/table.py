"""Markdown table: per held-out task, chance / best constant, pretrained-only and instruction-tuned
scores with 95% CI (zero-shot and few-shot), from calib/results/<run>/<arch>-{pretrain,instruct}.json."""
import json, sys
run, arch = sys.argv[1], sys.argv[2]
P = json.load(open(f"calib/results/{run}/{arch}-pretrain.json"))
I = json.load(open(f"calib/results/{run}/{arch}-instruct.json"))
f = lambda t: f"{t['score']:.2f} [{t['score_lo']:.2f},{t['score_hi']:.2f}]"
print(f"| {arch} ({run}) task | chance | best const | PT zs | IT zs | PT fs | IT fs |")
print("|---|---|---|---|---|---|---|")
for suite in ("mmlu", "bbh"):
    for task in P[suite]["zero_shot"]["tasks"]:
        pz, iz = P[suite]["zero_shot"]["tasks"][task], I[suite]["zero_shot"]["tasks"][task]
        pf, i_f = P[suite]["few_shot"]["tasks"][task], I[suite]["few_shot"]["tasks"][task]
        sep = " **" if (iz["score_lo"] > pz["score_hi"] and iz["score_lo"] > iz["chance"]) else ""
        print(f"| {suite}/{task} | {iz['chance']:.2f} | {iz['best_constant']:.2f} | {f(pz)} | {f(iz)}{sep} | {f(pf)} | {f(i_f)} |")
    print(f"| **{suite} overall** | {I[suite]['zero_shot']['chance']:.2f} | | {f(P[suite]['zero_shot'])} | {f(I[suite]['zero_shot'])} | {f(P[suite]['few_shot'])} | {f(I[suite]['few_shot'])} |")
na = lambda d, m: f"{d['normalized_average'][m]['score']:.1f} [{d['normalized_average'][m]['score_lo']:.1f},{d['normalized_average'][m]['score_hi']:.1f}]"
print(f"| **normalized avg** | 0 | | {na(P,'zero_shot')} | {na(I,'zero_shot')} | {na(P,'few_shot')} | {na(I,'few_shot')} |")
print(f"| heldin EM (IT) | | | {P['heldin']['zero_shot']['score']:.2f} | {I['heldin']['zero_shot']['score']:.2f} | | |")
