#!/usr/bin/env bash
# Every experiment the paper reports, then every table and figure, the notebooks as HTML (reports/), a summary.
#
#   bash run_all.sh                                            # demo profile: generated data, CPU (41.6 min on a 2-core machine at 165.9 GFLOP/s)
#   bash run_all.sh --profile paper --data-root /data --gpus 8 # the paper's protocol on the real datasets
#   bash run_all.sh --profile paper --dry-run                  # list every paper run with its settings
#   bash run_all.sh --profile paper --follow release --dry-run # ... on release v0.5.0's side of every ledger entry
#   bash run_all.sh --profile paper --weights-root W ...       # also evaluate the published checkpoints in W
#   bash run_all.sh --profile paper --data-root /data --gpus 8 --check   # data, weights, GPUs, NCCL, disk: ✓/✗
#
# Any other option (--follow, --seeds, --runs-root, --from-logs, --device cpu, --pretrained-dir DIR, ...) is passed
# to every reproduce/*.py script. A paper run starts with the --check table and stops on any ✗; every --dry-run
# ends with it. Rerunning resumes: finished runs are reused, unfinished ones continue from their last checkpoint.
set -euo pipefail
cd "$(dirname "$0")"

profile=demo
passthrough=()
published=()  # options for table_published only: the other scripts do not know them
out_root=.    # the scripts' --out-dir: tables/ and figures/ go there, and the reports with them
notebook_runs=()
check=0
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --profile=*) profile="${1#*=}"; shift ;;
        # Seen here too, so that the notebooks read what the scripts wrote; still passed to every script.
        --out-dir) out_root="$2"; passthrough+=("$1" "$2"); shift 2 ;;
        --out-dir=*) out_root="${1#*=}"; passthrough+=("$1"); shift ;;
        --runs-root) notebook_runs=(--runs-root "$2"); passthrough+=("$1" "$2"); shift 2 ;;
        --runs-root=*) notebook_runs=(--runs-root "${1#*=}"); passthrough+=("$1"); shift ;;
        --weights-root) published+=(--weights-root "$2"); shift 2 ;;
        --check) check=1; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) passthrough+=("$1"); shift ;;
    esac
done
case "$profile" in demo|paper) ;; *) echo "run_all.sh: --profile must be demo or paper, got '$profile'" >&2; exit 2 ;; esac

bash scripts/setup_venv.sh
py=.venv/bin/python
export MPLBACKEND=Agg
if [ "$profile" = demo ]; then
    # The demo's tiny convolutions gain nothing from intra-op threads on 2 cores and lose a lot when the
    # cores are busy; one thread also makes a rerun on the same machine give the same numbers. Another CPU may
    # take other kernel paths (vector width, BLAS blocking), so its numbers differ from the committed ones: the
    # demo's verdicts rest on paired seeds and 95 % intervals, not on bit-identity (docs/demo.md, "Reproducibility").
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    # ...and two runs train side by side, one per core (reproduce/*.py --jobs).
    # (nproc --all: plain nproc obeys the OMP_NUM_THREADS=1 just set.)
    case " ${passthrough[*]:-} " in *" --jobs "*) ;; *) passthrough+=(--jobs "$(nproc --all)") ;; esac
fi

dry_run=0
case " ${passthrough[*]:-} " in *" --dry-run "*) dry_run=1 ;; esac
trains=1
case " ${passthrough[*]:-} " in *" --dry-run "*|*" --from-logs "*) trains=0 ;; esac
# Everything every run needs, checked at once (encnet/experiments/preflight.py): --check is only that; a paper run
# does it first and stops on a ✗, so a missing dataset or weights file shows before the first run, not hours in.
if [ "$check" = 1 ]; then
    exec "$py" -m encnet.experiments.preflight --profile "$profile" "${passthrough[@]}"
fi
if [ "$profile" = paper ] && [ "$trains" = 1 ]; then
    "$py" -m encnet.experiments.preflight --profile "$profile" "${passthrough[@]}" \
        || { echo "run_all.sh: nothing was trained; fix each ✗ above (bash run_all.sh ... --check repeats the check)" >&2
             exit 1; }
fi

scripts=(table_ablation figure_se_weight figure_codewords table_pcontext table_voc table_ade20k
         table_cifar10 figure_cifar_curves table_discrepancies)
# Published checkpoints need the real datasets: paper profile only (--weights-root DIR, default weights/).
if [ "$profile" = paper ]; then scripts+=(table_published); fi
# Demo: every script's runs first, in one pool, so both cores stay busy to the last run (encnet/experiments/train_all.py);
# the scripts then only evaluate and write. (Paper runs take the whole GPU machine one after another anyway.)
if [ "$profile" = demo ]; then scripts=(train_all "${scripts[@]}"); fi
start=$(date +%s)
i=0
for name in "${scripts[@]}"; do
    i=$((i + 1))
    echo
    echo "==> [$i/${#scripts[@]}] reproduce/$name.py --profile $profile ${passthrough[*]:-}   ($(( $(date +%s) - start )) s so far)"
    extra=()
    if [ "$name" = table_published ]; then extra=("${published[@]}");
    elif [ "$dry_run" = 1 ]; then extra=(--no-ledger-block); fi  # printed once, with the preflight, below
    "$py" "reproduce/$name.py" --profile "$profile" "${passthrough[@]}" "${extra[@]}"
done
case " ${passthrough[*]:-} " in
    *" --dry-run "*)  # nothing was trained or written: no report to build; the ledger block and the preflight
        echo
        echo "==> ledger sides and preflight: python -m encnet.experiments.preflight --profile $profile --dry-run"
        "$py" -m encnet.experiments.preflight --profile "$profile" "${passthrough[@]}"
        exit 0 ;;
    *)
        echo
        echo "==> notebooks as HTML: python -m encnet.analysis.notebooks --profile $profile   ($(( $(date +%s) - start )) s so far)"
        "$py" -m encnet.analysis.notebooks --profile "$profile" --tables-dir "$out_root/tables" \
            --figures-dir "$out_root/figures" --out-dir "$out_root/reports" "${notebook_runs[@]}" ;;
esac
echo
# Its last line is where the reproduction report is.
"$py" -m encnet.experiments.summary --profile "$profile" --out-dir "$out_root" --since "$start" \
    --elapsed "$(( $(date +%s) - start ))"
