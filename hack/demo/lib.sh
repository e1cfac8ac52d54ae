# shellcheck shell=bash
# What the demos share (hack/demo/demo.sh, hack/demo/ambient.sh): the repository, the stage timer and its summary.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
export MESHOPS_REPO="$REPO"
TIMES=()
DEMO_START=$SECONDS

# The local cluster's path named KEY (cluster.py paths, for the cluster MESHOPS_CLUSTER_NAME names).
cluster_path() {
  python3 hack/local-cluster/cluster.py paths | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}

stage() {  # stage "title" command...
  local title=$1
  shift
  printf '\n\033[1m== %s\033[0m\n' "$title"
  local start=$SECONDS
  "$@"
  local took=$((SECONDS - start))
  TIMES+=("$(printf '%4ss  %s' "$took" "$title")")
}

# The cluster up, the sample application, then the rollout stage by stage (the caller defines `playbook`).
cluster_app_and_rollout() {  # cluster_app_and_rollout "what the rollout is"
  stage "local cluster '${MESHOPS_CLUSTER_NAME:-meshops}' up (real control plane, kwok nodes, host istiod, loopback Prometheus)" \
    python3 hack/local-cluster/cluster.py up
  stage "sample application (sample-frontend, sample-backend)" \
    ansible-playbook -i hack/local-cluster/hosts.yml hack/demo/sample-app.yml
  local step
  for step in install injection telemetry traffic mtls waves; do
    stage "$1 up to stage '$step'" playbook playbooks/rollout.yml -e "rollout_stage=$step"
  done
}

print_times() {
  printf '\n\033[1m== time per stage\033[0m\n'
  printf '%s\n' "${TIMES[@]}"
  printf '%4ss  total\n' "$((SECONDS - DEMO_START))"
}
