#!/usr/bin/env bash
# Creates the Secrets the Tenantry manifests read, with fresh random values, in the namespace
# $NAMESPACE (default: tenantry). A Secret that already exists is kept, never overwritten (the dev
# database passwords are baked into PostgreSQL when it first starts; tokens in use stay valid).
#
#   deploy/create-secrets.sh dev
#   TENANT_DATABASE_URL='postgres://tenant:PW@db.example.internal:5432/tenantry?sslmode=require' \
#   ENTITLEMENT_DATABASE_URL='postgres://entitlement:PW@db.example.internal:5432/tenantry?sslmode=require' \
#     deploy/create-secrets.sh prod
#
# Secret values never appear on a command line: they go through files in a private temp dir.
set -euo pipefail

mode=${1:-}
ns=${NAMESPACE:-tenantry}
kubectl=${KUBECTL:-kubectl}
case "$mode" in
  dev | prod) ;;
  *) echo "usage: $0 dev|prod   (NAMESPACE=… to choose the namespace)" >&2; exit 2 ;;
esac
if [ "$mode" = prod ] && { [ -z "${TENANT_DATABASE_URL:-}" ] || [ -z "${ENTITLEMENT_DATABASE_URL:-}" ]; }; then
  echo "prod: set TENANT_DATABASE_URL and ENTITLEMENT_DATABASE_URL (one role per service)" >&2
  exit 2
fi

umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# n random bytes as hex (2n characters).
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
exists() { "$kubectl" -n "$ns" get secret "$1" >/dev/null 2>&1; }
read_key() { "$kubectl" -n "$ns" get secret "$1" -o "jsonpath={.data.$2}" | base64 -d; }
# create NAME key=value…  (values written to files first)
create() {
  local name=$1
  shift
  if exists "$name"; then
    echo "kept     secret/$name"
    return
  fi
  local args=() pair key
  for pair in "$@"; do
    key=${pair%%=*}
    printf '%s' "${pair#*=}" >"$tmp/$name.$key"
    args+=("--from-file=$key=$tmp/$name.$key")
  done
  "$kubectl" -n "$ns" create secret generic "$name" "${args[@]}" >/dev/null
  "$kubectl" -n "$ns" label secret "$name" app.kubernetes.io/part-of=tenantry >/dev/null
  echo "created  secret/$name"
}

"$kubectl" get namespace "$ns" >/dev/null 2>&1 || "$kubectl" create namespace "$ns"

if [ "$mode" = dev ]; then
  create tenantry-postgres \
    "superuser-password=$(random_hex 24)" \
    "tenant-password=$(random_hex 24)" \
    "entitlement-password=$(random_hex 24)"
  # The URLs use the passwords PostgreSQL was (or will be) initialised with.
  tenant_pw=$(read_key tenantry-postgres tenant-password)
  entitlement_pw=$(read_key tenantry-postgres entitlement-password)
  TENANT_DATABASE_URL="postgres://tenant:$tenant_pw@postgres:5432/tenantry"
  ENTITLEMENT_DATABASE_URL="postgres://entitlement:$entitlement_pw@postgres:5432/tenantry"
fi

create tenantry-tenant-db "url=$TENANT_DATABASE_URL"
create tenantry-entitlement-db "url=$ENTITLEMENT_DATABASE_URL"
create tenantry-service-token "token=$(random_hex 32)"
gateway=(
  "client-id=env-$(random_hex 8)"
  "client-secret=$(random_hex 24)"
  "env-token-hs256-secret=$(random_hex 32)"
)
# Dev verifies user tokens with a shared HS256 secret so you can mint one by hand; prod uses the
# identity provider's JWKS (overlays/prod/config/gateway.env).
if [ "$mode" = dev ]; then
  gateway+=("user-jwt-hs256-secret=$(random_hex 32)")
fi
create tenantry-gateway "${gateway[@]}"

cat <<MSG

Environment credentials for POST /auth/vendor:
  CLIENT_ID=\$($kubectl -n $ns get secret tenantry-gateway -o jsonpath='{.data.client-id}' | base64 -d)
  CLIENT_SECRET=\$($kubectl -n $ns get secret tenantry-gateway -o jsonpath='{.data.client-secret}' | base64 -d)
MSG
