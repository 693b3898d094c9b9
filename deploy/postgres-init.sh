#!/bin/sh
# Creates the ledger's database and its two roles. The postgres image runs
# this once, as its superuser, when it initialises an empty data directory
# (it is mounted into /docker-entrypoint-initdb.d by docker-compose.yml).
#
#   ledger_owner    owns the database and its schema; `ledgerd migrate`
#                   connects as it. Not a superuser.
#   ledger_runtime  what `ledgerd serve` connects as; `ledgerd migrate
#                   --runtime-role ledger_runtime` grants it only what serve
#                   needs (SELECT and INSERT on events).
#
# The passwords come from the Docker secrets ledger_owner_password and
# ledger_runtime_password (see deploy/make-secrets.sh).
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
	-v owner_password="$(cat /run/secrets/ledger_owner_password)" \
	-v runtime_password="$(cat /run/secrets/ledger_runtime_password)" <<'SQL'
CREATE ROLE ledger_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
CREATE ROLE ledger_runtime LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'runtime_password';
CREATE DATABASE ledger OWNER ledger_owner;
-- Only the two roles may connect, and neither may make temporary tables.
REVOKE ALL ON DATABASE ledger FROM PUBLIC;
GRANT CONNECT ON DATABASE ledger TO ledger_runtime;
SQL
