#!/bin/sh
# Makes the secrets that docker-compose.yml hands to its services as Docker
# secrets, in the directory given (default ./secrets), keeping any that
# exist: the superuser's password, the passwords of the two ledger roles,
# their database URLs, the JWT secret, the master key that wraps the data
# keys of the sessions' personal data (keep a copy of it apart from the
# database's backups: docs/data-protection.md), and the key that signs the Merkle
# checkpoints (made by `ledgerd audit keygen`, with Go when it is installed,
# else in the image the Dockerfile builds).
#
# The directory is private to you (mode 0700). The files in it are
# readable by all (0644), because Docker bind-mounts each one into its
# container, where a service's own user (postgres, ledger), not you, reads
# it; the directory keeps the other users of this machine out.
set -eu

dir=${1:-secrets}
mkdir -p "$dir"
chmod 700 "$dir"

random() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# make NAME CONTENT writes CONTENT to NAME unless NAME exists.
make() {
	if [ ! -e "$dir/$1" ]; then
		printf '%s\n' "$2" >"$dir/$1.tmp"
		chmod 644 "$dir/$1.tmp"
		mv "$dir/$1.tmp" "$dir/$1"
	fi
}

make postgres-password "$(random)"
make ledger-owner-password "$(random)"
make ledger-runtime-password "$(random)"
make jwt-secret "$(random)"
make master-key "$(random)"
if [ ! -e "$dir/audit-key" ]; then
	if command -v go >/dev/null 2>&1; then
		make audit-key "$(go run ./cmd/ledgerd audit keygen)"
	else
		make audit-key "$(docker run --rm "$(docker build -q .)" audit keygen)"
	fi
fi
make ledger-owner-database-url "postgres://ledger_owner:$(cat "$dir/ledger-owner-password")@postgres:5432/ledger?sslmode=disable"
make ledger-runtime-database-url "postgres://ledger_runtime:$(cat "$dir/ledger-runtime-password")@postgres:5432/ledger?sslmode=disable"
echo "secrets are in $dir"
