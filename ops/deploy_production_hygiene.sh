#!/usr/bin/env bash
# Deploy the apply layer and its monitoring with playbooks/deploy.yml, the careful way:
# preflight, then a `--check --diff` dry run, then (only with --apply) the real run.
# It refuses a production inventory that would run the apply layer in testnet mode.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ops/deploy_production_hygiene.sh [--apply] [--skip-check] [--yes] [--playbook FILE] INVENTORY [-- ANSIBLE_ARGS...]

  INVENTORY        an inventory directory or file, e.g. inventories/production
  --apply          after the dry run, make the changes (default: dry run only)
  --skip-check     with --apply: no dry run first
  --yes            with --apply: do not ask for confirmation (needed without a terminal)
  --playbook FILE  the playbook to run (default: playbooks/deploy.yml in this repository)
  ANSIBLE_ARGS     passed to ansible-playbook as they are, e.g. -- --limit apply1; vault options
                   (--vault-password-file, --vault-id, --ask-vault-pass) also go to ansible-inventory

Production is an inventory directory named `production` or one whose hosts set
`quantum_environment: production`. Such an inventory is refused when any host sets
`apply_layer_testnet` to anything but false, when ANSIBLE_ARGS mention apply_layer_testnet or TESTNET,
or when TESTNET=true is in this shell's environment.
EOF
}

die() {
  echo "deploy_production_hygiene: $*" >&2
  exit 2
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
apply=false
skip_check=false
assume_yes=false
playbook="$repo_root/playbooks/deploy.yml"
inventory=""
ansible_args=()

while (($# > 0)); do
  case "$1" in
    --apply) apply=true ;;
    --skip-check) skip_check=true ;;
    --yes) assume_yes=true ;;
    --playbook)
      (($# >= 2)) || die "--playbook needs a file"
      playbook=$2
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      ansible_args=("$@")
      break
      ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      [[ -z "$inventory" ]] || die "one inventory only (got $inventory and $1)"
      inventory=$1
      ;;
  esac
  shift
done

[[ -n "$inventory" ]] || { usage >&2; exit 2; }
if [[ "$skip_check" == true && "$apply" != true ]]; then
  die "--skip-check only makes sense with --apply"
fi

# --- Preflight: tools, files, and what the inventory says. ---
for tool in ansible-playbook ansible-inventory python3; do
  command -v "$tool" >/dev/null || die "$tool not found in PATH (run 'make venv' and use .venv/bin)"
done
[[ -e "$inventory" ]] || die "inventory $inventory does not exist"
[[ -f "$playbook" ]] || die "playbook $playbook does not exist"

# Variables are read from Ansible's own view of the inventory (group_vars merged into each host),
# never by grepping YAML. Prints one line per host: name, quantum_environment, apply_layer_testnet.
read_inventory='
import json, sys
hostvars = json.load(sys.stdin).get("_meta", {}).get("hostvars", {})
for host, hv in sorted(hostvars.items()):
    env = hv.get("quantum_environment", "")
    testnet = hv.get("apply_layer_testnet", False)
    print(host, env if isinstance(env, str) and env else "-", json.dumps(testnet).replace(" ", ""))
'
# ansible-inventory must decrypt vault files too: hand it the vault options meant for ansible-playbook.
vault_args=()
for ((i = 0; i < ${#ansible_args[@]}; i++)); do
  case "${ansible_args[i]}" in
    --vault-id | --vault-password-file | --vault-pass-file)
      vault_args+=("${ansible_args[i]}" "${ansible_args[i + 1]:-}")
      i=$((i + 1))
      ;;
    --vault-id=* | --vault-password-file=* | --vault-pass-file=* | --ask-vault-pass | --ask-vault-password | -J)
      vault_args+=("${ansible_args[i]}")
      ;;
  esac
done
inventory_json=$(ansible-inventory -i "$inventory" "${vault_args[@]}" --list) ||
  die "ansible-inventory cannot read $inventory (encrypted group_vars need ANSIBLE_VAULT_PASSWORD_FILE or -- --vault-password-file FILE)"
host_lines=$(python3 -c "$read_inventory" <<<"$inventory_json")
[[ -n "$host_lines" ]] || die "inventory $inventory has no hosts"

# The inventory's name is its directory's (inventories/production, or inventories/production/hosts.yml).
inventory_dir=$(realpath "$inventory")
[[ -d "$inventory_dir" ]] || inventory_dir=$(dirname "$inventory_dir")
inventory_name=$(basename "$inventory_dir")

production=false
if [[ "$inventory_name" == production ]]; then
  production=true
fi
while read -r _host environment _testnet; do
  if [[ "$environment" == production ]]; then
    production=true
  fi
done <<<"$host_lines"

if [[ "$production" == true ]]; then
  refusals=()
  while read -r host _environment testnet; do
    # Only a real boolean false (or the role default) is accepted: strings and templates are refused.
    [[ "$testnet" == false ]] || refusals+=("$host sets apply_layer_testnet=$testnet")
  done <<<"$host_lines"
  if [[ "${TESTNET:-}" =~ ^[[:space:]]*([Tt][Rr][Uu][Ee]|1|[Yy][Ee][Ss])[[:space:]]*$ ]]; then
    refusals+=("TESTNET=${TESTNET} is set in this shell")
  fi
  for arg in "${ansible_args[@]}"; do
    if [[ "$arg" == *apply_layer_testnet* || "$arg" == *TESTNET* ]]; then
      refusals+=("extra argument '$arg' touches testnet mode")
    fi
  done
  if ((${#refusals[@]} > 0)); then
    printf 'deploy_production_hygiene: refusing production inventory %s:\n' "$inventory" >&2
    printf '  - %s\n' "${refusals[@]}" >&2
    echo "Set apply_layer_testnet: false in the production group_vars; testnet belongs in a lab inventory." >&2
    exit 3
  fi
fi

revision=$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "inventory: $inventory (production: $production), playbook: $playbook, revision: $revision"
ansible-playbook -i "$inventory" --syntax-check "$playbook" >/dev/null

run_playbook() {
  ansible-playbook -i "$inventory" "$playbook" "$@" "${ansible_args[@]}"
}

# --- Dry run first, unless told otherwise. ---
if [[ "$skip_check" != true ]]; then
  echo "== dry run: --check --diff"
  run_playbook --check --diff
fi

if [[ "$apply" != true ]]; then
  echo "Dry run only. Re-run with --apply to make these changes."
  exit 0
fi

if [[ "$assume_yes" != true ]]; then
  [[ -t 0 ]] || die "no terminal to confirm on: add --yes to apply"
  read -r -p "Apply these changes to $inventory? Type its name ($inventory_name) to go on: " answer
  [[ "$answer" == "$inventory_name" ]] || die "not confirmed; nothing changed"
fi

echo "== applying: --diff"
run_playbook --diff
