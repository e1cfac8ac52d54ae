#!/usr/bin/env bash
# `make demo`: the local cluster, the sample application, the staged rollout stage by stage,
# drift detection and correction, and the verify summary. Prints the time of each stage.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
export MESHOPS_REPO="$REPO"
INVENTORY=(-i hack/local-cluster/hosts.yml -e @hack/sample-app/rollout.yml)
REPORTS="$REPO/.build/drift-report"
KUBECONFIG="$(python3 hack/local-cluster/cluster.py paths | python3 -c 'import json,sys; print(json.load(sys.stdin)["kubeconfig"])')"
SPEC="$(python3 hack/local-cluster/cluster.py paths | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics_spec"])')"
export KUBECONFIG
TIMES=()
DEMO_START=$SECONDS

stage() {  # stage "title" command...
  local title=$1
  shift
  printf '\n\033[1m== %s\033[0m\n' "$title"
  local start=$SECONDS
  "$@"
  local took=$((SECONDS - start))
  TIMES+=("$(printf '%4ss  %s' "$took" "$title")")
}

playbook() { ansible-playbook "${INVENTORY[@]}" "$@"; }

stage "local cluster up (real control plane, kwok nodes, host istiod, loopback Prometheus)" \
  python3 hack/local-cluster/cluster.py up
stage "sample application (sample-frontend, sample-backend)" \
  ansible-playbook -i hack/local-cluster/hosts.yml hack/demo/sample-app.yml

for step in install injection telemetry traffic mtls waves; do
  stage "rollout up to stage '$step'" playbook playbooks/rollout.yml -e "rollout_stage=$step"
done

# Real Envoy sidecars (hack/local-cluster/dataplane.py) for sample-mesh/echo, configured by the host istiod: what
# the baseline's timeout and retries do to requests, and the mTLS identity the server sees.
stage "the baseline in a real data plane (pilot-agent + Envoy on loopback for sample-mesh/echo)" \
  .venv/bin/python hack/local-cluster/dataplane.py demo sample-mesh

# A second wave whose service serves 30 % 503s once it is meshed: the bake's analysis fails and the wave alone is
# rolled back (label removed, pods restarted without sidecars); the backend wave stays.
degrading_wave() {
  kubectl apply -f hack/demo/payments.yml
  kubectl -n sample-payments rollout status deployment/pay --timeout=120s
  python3 - "$SPEC" <<'EOF_SERIES'
import json, sys
sys.path.insert(0, "hack/local-cluster")
from localcluster.prometheus import istio_request_series
spec = json.loads(open(sys.argv[1]).read())
caller, pay = ("sample-frontend", "web"), ("sample-payments", "pay")
spec["series"] = [s for s in spec["series"] if s["labels"].get("destination_workload_namespace") != pay[0]]
spec["series"] += istio_request_series(caller, pay, 3.0, unless_labeled=pay[0])
spec["series"] += istio_request_series(caller, pay, 3.0, errors=0.3, when_labeled=pay[0])
open(sys.argv[1], "w").write(json.dumps(spec, indent=2))
EOF_SERIES
  sleep 5  # a few scrapes of the new series before the baseline read
  if playbook playbooks/rollout.yml \
    -e '{"rollout_waves": [{"name": "backend", "namespaces": ["sample-backend"]},
                           {"name": "payments", "namespaces": ["sample-payments"]}]}'; then
    echo "expected the payments wave to fail its analysis and be rolled back" >&2
    return 1
  fi
  echo
  echo "== after the automatic rollback: sample-payments unlabeled, pods without sidecars, the analysis kept"
  kubectl get namespace sample-payments --show-labels
  kubectl -n sample-payments get pods -o custom-columns='POD:.metadata.name,CONTAINERS:.spec.containers[*].name'
  kubectl get namespace sample-payments -o jsonpath='{.metadata.annotations.meshops\.istio/last-analysis}'
  echo
}

stage "wave 'payments' degrades once meshed: its analysis fails and it is rolled back on its own" degrading_wave

stage "drift: report only (expect none)" playbook playbooks/drift.yml -e "drift_report_dir=$REPORTS/1-clean"

echo
echo "== by hand: kubectl patch the api VirtualService's timeout from 5s to 30s"
kubectl -n sample-backend patch virtualservices.networking.istio.io baseline-api --type=json \
  -p '[{"op": "replace", "path": "/spec/http/0/timeout", "value": "30s"}]'

stage "drift: report only (expect exactly that timeout)" \
  playbook playbooks/drift.yml -e "drift_report_dir=$REPORTS/2-changed"
stage "drift: correct" playbook playbooks/drift.yml -e "drift_report_dir=$REPORTS/3-correct" -e drift_correct=true
stage "drift: report only (clean again)" \
  playbook playbooks/drift.yml -e "drift_report_dir=$REPORTS/4-after" -e drift_fail_on_drift=true
stage "verify (every gate, read-only)" playbook playbooks/verify.yml

printf '\n\033[1m== drift report after the hand change (%s)\033[0m\n' "$REPORTS/2-changed/local-cluster.md"
cat "$REPORTS/2-changed/local-cluster.md"
printf '\n\033[1m== time per stage\033[0m\n'
printf '%s\n' "${TIMES[@]}"
printf '%4ss  total\n' "$((SECONDS - DEMO_START))"
echo
echo "Try it: export KUBECONFIG=$KUBECONFIG; .venv/bin/kubectl get pods -A"
