#!/usr/bin/env bash
# One-shot initialisation: the `crlib-init` compose service runs it before every other Airflow
# component starts (they wait for it with `condition: service_completed_successfully`).
# Idempotent, so it runs again on every `docker compose up`:
#   1. airflow db migrate                  Airflow metadata database
#   2. crlib db upgrade                    results database schema (as its owner, `crlib`)
#   3. crlib db roles                      crlib_writer (tasks) and crlib_reader (statistics users)
#   4. airflow pools set crlib_inference   bounds concurrent deepCR inference
#   5. airflow connections import          crlib_db, crlib_mlflow, mast (stored Fernet-encrypted)
#   6. SimpleAuthManager password file     the UI/API login, so the api-server prints no password
# Never prints a secret: no `set -x`, no echo of a variable; the CLIs mask database passwords.
set -euo pipefail
umask 077

step() { printf 'crlib-init: %s\n' "$1"; }

for name in AIRFLOW__DATABASE__SQL_ALCHEMY_CONN CRLIB_DATABASE_URL CRLIB_WRITER_PASSWORD \
    CRLIB_READER_PASSWORD AIRFLOW_ADMIN_PASSWORD CRLIB_INFERENCE_POOL_SLOTS \
    AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE; do
    if [[ -z "${!name:-}" ]]; then
        printf 'crlib-init: %s is not set (see docker/env.example)\n' "$name" >&2
        exit 2
    fi
done

# Installed by the Dockerfile; the test suite points it at docker/write_init_files.py.
helper=${CRLIB_INIT_HELPER:-/usr/local/lib/crlib-init/write_init_files.py}

step "migrating the Airflow metadata database"
airflow db migrate

step "migrating the crlib results database"
crlib db upgrade

step "creating/granting roles crlib_writer and crlib_reader"
# Passwords are read from CRLIB_WRITER_PASSWORD / CRLIB_READER_PASSWORD by the command itself.
crlib db roles

step "pool crlib_inference"
airflow pools set crlib_inference "$CRLIB_INFERENCE_POOL_SLOTS" "deepCR inference (crlib)"

step "pool crlib_mast"
airflow pools set crlib_mast "$CRLIB_MAST_POOL_SLOTS" "MAST queries and downloads (crlib)"

step "connections crlib_db, crlib_mlflow, mast"
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
python "$helper" connections "$workdir/connections.json"
airflow connections import --overwrite "$workdir/connections.json"

step "API login"
python "$helper" api-users "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"

step "done"
