#!/usr/bin/env bash
# ESTM evaluation (sliding window of 3, memory of the last 2 windows) of the released ESTDepth
# checkpoint (the official eval_hybrid_seq.sh), followed by the metrics table. Paths come from
# the environment; extra flags are passed through, e.g.
#   DATASET=7scenes DATAPATH=/data/7scenes ./eval_hybrid_seq.sh --device cuda:1
# Outputs: $EVALPATH/estm/<scene>[/<seq>]/{init_depth,refined_depth}/<frame>.{npy,jpg},
# $EVALPATH/estm/metrics.{json,csv}. Re-running resumes (finished scenes are skipped).
set -euo pipefail
cd "$(dirname "$0")"

DATASET="${DATASET:-scannet}"                       # scannet | 7scenes | synthetic
DATAPATH="${DATAPATH:-./data/scannet_test}"         # ScanNet test scans / 7-Scenes root
EVALPATH="${EVALPATH:-./outputs/hybrid_EST_ndepths64}"
CKPT="${CKPT:-./checkpoint/model_000006.ckpt}"      # released: ResNet-50, 64 planes, 0.1-10 m
TESTLIST="${TESTLIST:-}"                            # default: the dataset's official list

python eval_hybrid_seq.py --seq_len 5 --summary_freq 10 --ndepths 64 --resnet 50 \
    --loadckpt "$CKPT" \
    --datapath "$DATAPATH" \
    --evalpath "$EVALPATH" \
    ${TESTLIST:+--testlist "$TESTLIST"} \
    --IF_EST_transformer True \
    --lwindow 3 --memory_size 2 \
    --depth_min 0.1 --depth_max 10. \
    --save_init_prob False --save_refined_prob False \
    --eval_dataset "$DATASET" \
    --metrics True "$@"
