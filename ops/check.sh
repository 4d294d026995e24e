#!/usr/bin/env bash
# Static checks of ops/: rule files, rule unit tests, the rendered Alertmanager template, shell scripts.
# Needs promtool, amtool, shellcheck, and a python3 with jinja2 first in PATH (the project's .venv).
set -euo pipefail

ops_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

echo "== promtool check rules"
promtool check rules "$ops_dir/prometheus_recording_rules.yml" "$ops_dir/prometheus_alert_rules.yml"

echo "== promtool test rules"
promtool test rules "$ops_dir/prometheus_alert_rules_tests.yml"

# Rendered like the alertmanager role does (Ansible's template module trims blocks); sample values only.
render_alertmanager() {
  "$python" -c '
import sys, jinja2
names = ("alertmanager_webhook_url", "alertmanager_slack_api_url",
         "alertmanager_slack_channel", "alertmanager_pagerduty_routing_key")
env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
template = env.from_string(open(sys.argv[1]).read())
sys.stdout.write(template.render(**dict(zip(names, sys.argv[2:]))))
' "$ops_dir/alertmanager.yml.j2" "$@"
}

echo "== amtool check-config (all receivers set)"
render_alertmanager "http://127.0.0.1:9099/alerts" "https://hooks.slack.example/services/T0/B0/sample" \
  "#quantum-alerts" "0123456789abcdef0123456789abcdef" >"$work_dir/alertmanager.yml"
amtool check-config "$work_dir/alertmanager.yml"

echo "== amtool check-config (no secrets in the inventory)"
render_alertmanager "" "" "" "" >"$work_dir/alertmanager-empty.yml"
amtool check-config "$work_dir/alertmanager-empty.yml"

echo "== shellcheck"
shellcheck "$ops_dir"/*.sh
