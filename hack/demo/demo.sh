#!/usr/bin/env bash
# `make demo`: the local cluster, the sample application, the staged rollout stage by stage,
# drift detection and correction, and the verify summary. Prints the time of each stage.
set -euo pipefail
# shellcheck source=hack/demo/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPORTS="$REPO/.build/drift-report"
ROLLOUT_REPORTS="$REPO/.build/rollout-report"
INVENTORY=(-i hack/local-cluster/hosts.yml -e @hack/sample-app/rollout.yml -e "rollout_report_dir=$ROLLOUT_REPORTS")
KUBECONFIG="$(cluster_path kubeconfig)"
PROMETHEUS_URL="$(cluster_path prometheus_url)"
export KUBECONFIG

playbook() { ansible-playbook "${INVENTORY[@]}" "$@"; }

cluster_app_and_rollout "rollout"

# Real Envoy sidecars (hack/local-cluster/dataplane.py) for sample-mesh/echo, configured by the host istiod: what
# the baseline's timeout and retries do to requests, and the mTLS identity the server sees.
stage "the baseline in a real data plane (pilot-agent + Envoy on loopback for sample-mesh/echo)" \
  .venv/bin/python hack/local-cluster/dataplane.py demo sample-mesh

# A second wave, sample-payments, whose application (checkout, behind a real sidecar on loopback) answers 30 % of
# its requests with 503 once the rollout has meshed it; a client sidecar in sample-frontend calls it 6 times a second
# (hack/local-cluster/dataplane.py traffic, spec hack/demo/payments-traffic.json). The bake's analysis reads what
# the real Envoys counted, fails, and the wave alone is rolled back (label removed, pods restarted without sidecars);
# the backend wave stays.
degrading_wave() {
  kubectl apply -f hack/demo/payments.yml
  kubectl -n sample-payments rollout status deployment/pay --timeout=120s
  local log="$REPO/.build/payments-traffic.log" traffic
  mkdir -p "$REPO/.build"
  .venv/bin/python hack/local-cluster/dataplane.py traffic hack/demo/payments-traffic.json >"$log" 2>&1 &
  traffic=$!
  # shellcheck disable=SC2064  # the pid now
  trap "kill $traffic 2>/dev/null || true" RETURN
  for _ in $(seq 120); do grep -q "sidecars ready" "$log" && break; sleep 0.5; done
  grep "sidecars ready" "$log" || { cat "$log" >&2; return 1; }
  sleep 8 # a few scrapes of real requests before the baseline read
  local failed=0
  playbook playbooks/rollout.yml \
    -e '{"rollout_waves": [{"name": "backend", "namespaces": ["sample-backend"]},
                           {"name": "payments", "namespaces": ["sample-payments"]}]}' || failed=1
  echo
  echo "== what the real sidecars reported (Prometheus, istio_requests_total by reporter and code, since the start)"
  .venv/bin/python - "$PROMETHEUS_URL" <<'EOF_QUERY'
import json, sys, urllib.parse, urllib.request
query = 'sum by (reporter, response_code) (istio_requests_total{destination_workload_namespace="sample-payments"})'
url = f"{sys.argv[1]}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
for row in json.load(urllib.request.urlopen(url, timeout=10))["data"]["result"]:
    print(f"  reporter={row['metric']['reporter']:<12} code={row['metric']['response_code']}  {float(row['value'][1]):.0f} requests")
EOF_QUERY
  kill "$traffic" && wait "$traffic" || true
  cat "$log"
  if [ "$failed" = 0 ]; then
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
printf '\n\033[1m== reports\033[0m\n'
echo "rollout (the payments wave's bake charted against its thresholds): $ROLLOUT_REPORTS/local-cluster-rollout.html"
echo "drift after the hand change, with its diff: $REPORTS/2-changed/local-cluster.html"
print_times
echo
echo "Try it: export KUBECONFIG=$KUBECONFIG; .venv/bin/kubectl get pods -A"
