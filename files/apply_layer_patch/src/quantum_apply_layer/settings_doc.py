"""README's "Environment" table, written from config.SETTINGS: `python -m quantum_apply_layer.settings_doc`
prints it, and tests/test_settings_table.py fails when README's copy differs."""

from __future__ import annotations

from .config import CREDENTIAL_NAMES, SETTINGS

CREDENTIALS_HELP = (
    "under systemd from `$CREDENTIALS_DIRECTORY` (`LoadCredential=`, root-only files); elsewhere from "
    "the environment. Never in the env file."
)


def environment_table() -> str:
    rows = ["| variable | default | accepted | meaning |", "|---|---|---|---|"]
    rows += [f"| `{s.name}` | {s.documented_default()} | {s.accepted} | {s.help} |" for s in SETTINGS]
    names = ", ".join(f"`{name}`" for name in CREDENTIAL_NAMES)
    rows.append(f"| {names} | none | text | {CREDENTIALS_HELP} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(environment_table(), end="")
