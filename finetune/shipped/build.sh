#!/usr/bin/env bash
# Rebuilds finetune/shipped/groundwork-quote from open data, in one command (about an hour on 2 CPU cores):
#   bash finetune/shipped/build.sh [WORK_DIR]
# 1. one index holding the training corpora (the Python docs and the Acme handbook);
# 2. QLoRA on their train splits (validation examples for the loss and the refusal calibration);
# 3. answer-selection weights with the adapter's log-probabilities as a feature (train splits; threshold on the
#    validation splits), written into the adapter's card;
# 4. the adapter in bf16 (half the size; the LoRA layers load it into their own dtype) with its card, here.
# tool-docs is left out on purpose: it is the blind corpus the settings were never tuned on (see README Results).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/groundwork-shipped}
GW=.venv/bin/groundwork
PY=.venv/bin/python
SHARED=../shared/data
mkdir -p "$WORK"
$GW ingest "$SHARED/python-docs/html" --index "$WORK/train-index" -q
$GW ingest examples/acme/docs --acl examples/acme/acl.toml --index "$WORK/train-index" -q
$GW ingest examples/acme/docs --acl examples/acme/acl.toml --index "$WORK/acme-index" -q
$GW ingest "$SHARED/python-docs/html" --index "$WORK/python-index" -q
GROUNDWORK_ADAPTERS="$WORK/adapters" $GW finetune --name groundwork-quote \
  --data examples/acme/qa.jsonl --data "$SHARED/python-docs/qa.jsonl" --index "$WORK/train-index" \
  --max-steps 16 --validation-examples 8 --threads 2 --promote
ADAPTER="$WORK/adapters/groundwork-quote/versions/v1"
for entry in alice:everyone hannah:everyone,hr frank:everyone,finance; do  # the users acme's QA set asks as
  $GW users list --users "$WORK/users.json" 2>/dev/null | grep -q "^${entry%%:*} " ||
    $GW users add "${entry%%:*}" --groups "${entry#*:}" --password "${entry%%:*}-build" --users "$WORK/users.json"
done
$PY -m eval.selection_fit \
  --corpus "examples/acme/qa.jsonl:$WORK/acme-index:$WORK/users.json" \
  --corpus "$SHARED/python-docs/qa.jsonl:$WORK/python-index" \
  --cache "$WORK/selection-features.npz" --out "$WORK/selection-adapter.json" \
  --model-scores --adapter "$ADAPTER" --model-sample 24 --card "$ADAPTER"
OUT=finetune/shipped/groundwork-quote
rm -rf "$OUT" && mkdir -p "$OUT"
cp "$ADAPTER/adapter_config.json" "$ADAPTER/card.json" "$OUT/"
cp "$ADAPTER/loss.png" "$OUT/" 2>/dev/null || true
$PY - "$ADAPTER/adapter_model.safetensors" "$OUT/adapter_model.safetensors" <<'PYEOF'
import sys, torch
from safetensors.torch import load_file, save_file
save_file({k: v.to(torch.bfloat16) for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])
PYEOF
du -sh "$OUT"
