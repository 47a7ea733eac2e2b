#!/usr/bin/env bash
# Evaluation benchmark (issue 4): a multi-label miml-scenes run and a multi-output utkface-5k
# run (gender, race, age band), each a linear probe on the offline EfficientNet-Lite0, evaluated
# on a held-out test split; per-head metrics, mAP and F1 at tuned vs 0.5 thresholds are copied
# to benchmarks/results/evaluate_<name>.json. Needs ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/pictag-eval-bench}
[ -d ../shared/data ] || { echo "../shared/data is absent: nothing to evaluate"; exit 0; }
mkdir -p benchmarks/results
.venv/bin/pictag train examples/miml-scenes.yaml --out "$out/miml" --overwrite --set train.mode=linear-probe
.venv/bin/pictag evaluate "$out/miml"
.venv/bin/pictag train examples/utkface.yaml --out "$out/utkface" --overwrite --set train.mode=linear-probe \
    --set data.test_fraction=0.2
.venv/bin/pictag evaluate "$out/utkface"
for name in miml utkface; do
  .venv/bin/python - "$out/$name/report.json" "benchmarks/results/evaluate_$name.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
keep = {"split": report["split"], "n_images": report["n_images"],
        "all_heads_correct": report.get("all_heads_correct"), "heads": {}}
for name, head in report["heads"].items():
    keep["heads"][name] = {"kind": head["kind"], "metrics": head["metrics"],
                           "metrics_at_0.5": head.get("metrics_at_0.5"),
                           "thresholds": head.get("thresholds")}
json.dump(keep, open(sys.argv[2], "w"), indent=2)
print(json.dumps(keep, indent=1)[:3000])
PY
done
