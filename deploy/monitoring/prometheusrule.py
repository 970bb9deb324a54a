"""Write the PrometheusRule of the monitoring component from rules.yml (one source of rules).

    python deploy/monitoring/prometheusrule.py > deploy/kubernetes/components/monitoring/prometheusrule.yaml

(`make prometheus-rule` runs exactly this; tests/deploy fails when the two differ.)
"""

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def _literal_blocks(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """Multi-line expressions stay readable blocks (``|``), as in rules.yml."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


yaml.SafeDumper.add_representer(str, _literal_blocks)
rules = yaml.safe_load((HERE / "rules.yml").read_text())
document = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "crop-yield", "labels": {"app.kubernetes.io/name": "crop-yield"}},
    "spec": {"groups": rules["groups"]},
}
sys.stdout.write("# Generated from deploy/monitoring/rules.yml by prometheusrule.py beside it: edit those.\n")
sys.stdout.write(yaml.safe_dump(document, sort_keys=False, width=100))
