#!/bin/bash
# usage: calib/exp.sh NAME "ARCHS" [dotted=val ...]
set -e
cd /work/calib
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=/work/main/.venv/bin/python
name=$1; archs=$2; shift 2
R=calib/results/$name; mkdir -p $R
h=$($PY calib/setp.py "$@")
cp params.yaml $R/params.yaml
if [ "$(cat calib/.datahash 2>/dev/null)" != "$h" ]; then
  $PY -m stages.prepare > $R/prepare.log 2>&1 && $PY -m stages.tokenize >> $R/prepare.log 2>&1
  echo $h > calib/.datahash
fi
ws=$(grep -A20 '  embedded:' params.yaml | grep world_size | awk '{print $2}')
for a in $archs; do
  for st in ${STAGES:-pretrain instruct}; do
    rm -rf checkpoints/$st/$a
    t0=$(date +%s.%N)
    $PY -m stages.$st $a > $R/$st-$a.log 2>&1
    t1=$(date +%s.%N)
    $PY -m stages.evaluate models/$st/$a --name $a-$st > $R/eval-$st-$a.log 2>&1
    t2=$(date +%s.%N)
    cp metrics/evaluate/$a-$st.json $R/
    cp metrics/$st/$a.json $R/train-$st-$a.json
    $PY calib/probe.py models/$st/$a $ws > $R/probe-$st-$a.json 2>$R/probe-$st-$a.err || true
    echo "$st $a train_s=$(echo "$t1-$t0"|bc) eval_s=$(echo "$t2-$t1"|bc) probe=$(cat $R/probe-$st-$a.json)" | tee -a $R/times.txt
  done
done
