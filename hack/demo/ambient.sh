#!/usr/bin/env bash
# `make demo-ambient`: the same staged path in ambient mode, on a local cluster of its own (ambient-demo): step 1 with
# istio-cni and ztunnel, the sample application enrolled in waves without a restart, a sidecar namespace migrated to
# ambient mode and back, drift of a hand-removed ambient label, and the verify summary. Prints the time of each stage.
set -euo pipefail
# shellcheck source=hack/demo/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export MESHOPS_CLUSTER_NAME=ambient-demo
REPORTS="$REPO/.build/ambient-demo"
# The sample rollout, with the baseline's timeouts on waypoints as HTTPRoutes. Retries have no HTTPRoute field in
# the Gateway API's standard channel, so step 4 refuses them in ambient mode (docs/ambient.md), and this demo has none.
AMBIENT_BASELINE='{"traffic_baseline_services": [
  {"name": "web", "namespace": "sample-frontend", "port": 80},
  {"name": "api", "namespace": "sample-backend", "port": 80, "timeout": "5s"},
  {"name": "ledger", "namespace": "sample-backend", "port": 80, "load_balancer": "ROUND_ROBIN"}]}'
INVENTORY=(-i hack/local-cluster/hosts.yml -e @hack/sample-app/rollout.yml -e meshops_dataplane_mode=ambient
  -e "$AMBIENT_BASELINE" -e "rollout_report_dir=$REPORTS/rollout")
KUBECONFIG="$(cluster_path kubeconfig)"
MONITORING="$(cluster_path istiod_monitoring_url)"
export KUBECONFIG
playbook() { ansible-playbook "${INVENTORY[@]}" "$@"; }

# A namespace still on sidecars: labeled for injection first, so the real injector gives its pods their sidecars.
LEGACY=sample-legacy
LEGACY_WAVES='{"rollout_waves": [{"name": "backend", "namespaces": ["sample-backend"]},
                                 {"name": "legacy", "namespaces": ["sample-legacy"]}],
               "migrate_namespaces": ["sample-legacy"]}'

enrolled() {  # what istiod serves through ztunnel, per namespace of the sample application
  echo "== istiod's ambient index (/debug/ambientz): pods served over HBONE through ztunnel"
  .venv/bin/python - "$MONITORING" <<'EOF_INDEX'
import collections, json, sys, urllib.request
workloads = json.load(urllib.request.urlopen(f"{sys.argv[1]}/debug/ambientz", timeout=10))["workloads"]
count = collections.Counter(
    w["namespace"] for w in workloads if w.get("tunnelProtocol") == "HBONE" and not w.get("nativeTunnel"))
sidecars = collections.Counter(w["namespace"] for w in workloads if w.get("nativeTunnel"))
for ns in sorted({w["namespace"] for w in workloads if w["namespace"].startswith("sample-")}):
    print(f"  {ns:<16} through ztunnel: {count[ns]}  sidecars: {sidecars[ns]}")
EOF_INDEX
}

legacy_namespace() {
  kubectl create namespace "$LEGACY" --dry-run=client -o yaml | kubectl apply -f -
  kubectl label namespace "$LEGACY" istio-injection=enabled --overwrite
  kubectl -n "$LEGACY" create deployment ledger --image=example.com/ledger:1 --replicas=2 --dry-run=client -o yaml |
    kubectl apply -f -
  kubectl -n "$LEGACY" rollout status deployment/ledger --timeout=120s
  kubectl -n "$LEGACY" get pods -o custom-columns='POD:.metadata.name,CONTAINERS:.spec.containers[*].name'
}

migrate() {  # migrate ambient|sidecar
  playbook playbooks/migrate.yml -e "migrate_to=$1" -e "$LEGACY_WAVES"
  kubectl get namespace "$LEGACY" --show-labels
  kubectl -n "$LEGACY" get pods -o custom-columns='POD:.metadata.name,CONTAINERS:.spec.containers[*].name'
  enrolled
}

cluster_app_and_rollout "rollout in ambient mode"
stage "the sample application enrolled, no pod restarted" enrolled

stage "a namespace still on sidecars (sample-legacy, injected by the real injector)" legacy_namespace
stage "migrate sample-legacy to ambient mode (ambient label, injection removed, restart, gate)" migrate ambient
stage "and back to sidecars (injection label, ambient label removed, restart, gate)" migrate sidecar
# sample-legacy was only there to move: it sends no traffic, so step 3's gate (Istio metrics wherever pods are in the
# mesh) would wait for it in the drift correction's converge below.
kubectl delete namespace "$LEGACY" --wait=true

echo
echo "== by hand: kubectl label namespace sample-backend istio.io/dataplane-mode-"
kubectl label namespace sample-backend istio.io/dataplane-mode-
stage "drift: report only (expect exactly that label)" \
  playbook playbooks/drift.yml -e "drift_report_dir=$REPORTS/drift-1-changed"
stage "drift: correct" playbook playbooks/drift.yml -e "drift_report_dir=$REPORTS/drift-2-correct" -e drift_correct=true
stage "verify (every gate, read-only)" playbook playbooks/verify.yml

printf '\n\033[1m== drift report after the hand change (%s)\033[0m\n' "$REPORTS/drift-1-changed/local-cluster.md"
cat "$REPORTS/drift-1-changed/local-cluster.md"
print_times
echo
echo "Try it: export KUBECONFIG=$KUBECONFIG; .venv/bin/kubectl get pods -A"
echo "Done with it: python3 hack/local-cluster/cluster.py --name ambient-demo down"
