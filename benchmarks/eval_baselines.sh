#!/usr/bin/env bash
# The README's evaluation Results: baselines side by side on examples/acme (held-out test split) and on the
# Python docs (test split). Run from the repository root:
#
#   bash benchmarks/eval_baselines.sh acme     # ingest (if needed), users, 3 runs, report (~11 min)
#   bash benchmarks/eval_baselines.sh pydocs   # 2 runs and a report; ingests first if needed (~29 min)
#
# (times on the 2-core box with a training run sharing the CPU). Every run is resumable: re-run the script after
# an interruption and it continues where it stopped. RAG_BASE_ADAPTER (default "none": the base model) is passed
# as --adapter to the closed-book and RAG runs; RESCORE=1 recomputes the metrics of the answers already there.
set -euo pipefail
export HF_HUB_OFFLINE=1
GW=${GW:-.venv/bin/groundwork}
OUT=${OUT:-/tmp/gw-eval}
ACME_INDEX=${ACME_INDEX:-/tmp/acme-index}
PYDOCS=${PYDOCS:-../shared/data/python-docs}
PYDOCS_INDEX=${PYDOCS_INDEX:-/tmp/pydocs-index}
EXTRA=()  # --adapter for the model runs, --rescore for all
if [ -n "${RESCORE:-}" ]; then EXTRA+=(--rescore); fi
BASE=("${EXTRA[@]}")
if [ -n "${RAG_BASE_ADAPTER-none}" ]; then BASE+=(--adapter "${RAG_BASE_ADAPTER-none}"); fi
mkdir -p "$OUT"

acme() {
    [ -f "$ACME_INDEX/index.sqlite" ] || $GW ingest examples/acme/docs --acl examples/acme/acl.toml --index "$ACME_INDEX"
    local users="$OUT/acme-users.json"  # the QA set asks as alice (everyone), hannah (+hr) and frank (+finance)
    for spec in alice: hannah:hr frank:finance; do
        GROUNDWORK_PASSWORD="$(head -c 12 /dev/urandom | base64)" \
            $GW users add "${spec%%:*}" --groups "${spec#*:}" --users "$users" --replace
    done
    local common=(--qa examples/acme/qa.jsonl --index "$ACME_INDEX" --users "$users" --split test)
    $GW eval "${common[@]}" --closed-book "${BASE[@]}" --out "$OUT/acme-closed-book" --name "closed-book"
    $GW eval "${common[@]}" --extractive "${EXTRA[@]}" --out "$OUT/acme-extractive" --name "extractive"
    $GW eval "${common[@]}" "${BASE[@]}" --decoding free --out "$OUT/acme-rag-free" --name "RAG base, free"
    $GW eval "${common[@]}" "${BASE[@]}" --out "$OUT/acme-rag-base" --name "RAG base, quote"
    $GW eval compare "$OUT/acme-closed-book" "$OUT/acme-extractive" "$OUT/acme-rag-free" "$OUT/acme-rag-base" \
        --out "$OUT/acme-report"
}

pydocs() {
    [ -f "$PYDOCS_INDEX/index.sqlite" ] || $GW ingest "$PYDOCS/html" --index "$PYDOCS_INDEX"  # ~11 min
    local common=(--qa "$PYDOCS/qa.jsonl" --index "$PYDOCS_INDEX" --split test)
    $GW eval "${common[@]}" --extractive "${EXTRA[@]}" --out "$OUT/pydocs-extractive" --name "extractive"
    $GW eval "${common[@]}" "${BASE[@]}" --decoding free --out "$OUT/pydocs-rag-free" --name "RAG base, free"
    $GW eval "${common[@]}" "${BASE[@]}" --out "$OUT/pydocs-rag-base" --name "RAG base, quote"
    $GW eval compare "$OUT/pydocs-extractive" "$OUT/pydocs-rag-free" "$OUT/pydocs-rag-base" --out "$OUT/pydocs-report"
}

case "${1:-all}" in
    acme) acme ;;
    pydocs) pydocs ;;
    all) acme; pydocs ;;
    *) echo "usage: $0 [acme|pydocs|all]" >&2; exit 2 ;;
esac
