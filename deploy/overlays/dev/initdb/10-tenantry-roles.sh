#!/usr/bin/env bash
# Runs once, when the PostgreSQL data directory is first initialised (docker-entrypoint-initdb.d).
# One login role per service, each owning its own schema; neither can read the other's tables.
# The same SQL is what an operator runs once on an external PostgreSQL (see deploy/README.md).
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=db="$POSTGRES_DB" \
  --set=tenant_password="$TENANT_DB_PASSWORD" \
  --set=entitlement_password="$ENTITLEMENT_DB_PASSWORD" <<'SQL'
CREATE ROLE tenant LOGIN PASSWORD :'tenant_password';
CREATE ROLE entitlement LOGIN PASSWORD :'entitlement_password';
-- Only the service roles (and the owner) may connect.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO tenant, entitlement;
-- Nobody creates objects in `public`.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
-- Each role owns its schema, so its migrator can create and alter tables there, and nobody else
-- gets USAGE on it.
CREATE SCHEMA tenant AUTHORIZATION tenant;
CREATE SCHEMA entitlement AUTHORIZATION entitlement;
SQL
