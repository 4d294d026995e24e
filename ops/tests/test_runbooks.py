"""Every alert carries what on-call needs and has one runbook page that answers the four questions."""

from typing import Any

import pytest
from ops_files import OPS_DIR, RUNBOOKS_DIR, alerting_rules

ALERTS = alerting_rules()
SEVERITIES = {"critical", "warning"}
SECTIONS = ("**Means:**", "**Confirm**", "**Mitigate", "**Resume safely:**")


@pytest.mark.parametrize("rule", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"]
    assert "$value" in annotations["description"], "the description must carry the live value"
    assert annotations["runbook_url"] == f"ops/runbooks/{rule['alert']}.md"
    assert (OPS_DIR.parent / annotations["runbook_url"]).is_file()


@pytest.mark.parametrize("rule", ALERTS, ids=[rule["alert"] for rule in ALERTS])
def test_runbook_answers_the_four_questions(rule: dict[str, Any]) -> None:
    page = (RUNBOOKS_DIR / f"{rule['alert']}.md").read_text()
    assert page.startswith(f"# {rule['alert']} ({rule['labels']['severity']})")
    for section in SECTIONS:
        assert section in page, f"{rule['alert']}.md lacks {section}"


def test_every_runbook_page_belongs_to_an_alert_and_is_listed_in_the_index() -> None:
    pages = {page.stem for page in RUNBOOKS_DIR.glob("*.md")} - {"README"}
    assert pages == {rule["alert"] for rule in ALERTS}
    index = (RUNBOOKS_DIR / "README.md").read_text()
    assert all(f"[{page}.md]({page}.md)" in index for page in pages)
