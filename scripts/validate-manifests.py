#!/usr/bin/env python3
"""Validates deploy/kubernetes offline: every document against a schema, none skipped as unknown.

Core kinds (Deployment, Service, PodDisruptionBudget, Namespace) against the schemas
`kubernetes-validate` (PyPI) ships, strictly (an unknown field is an error); custom resources
against deploy/kubernetes/schemas/{group}/{kind}_{version}.json. Then what a schema cannot say:
every file is in kustomization.yaml and every listed file exists; each Deployment has its /health
and /ready probes, resource requests and a PodDisruptionBudget selecting its pods; each
ScaledObject scales a Deployment of these manifests; the PrometheusRule holds the groups of
observability/prometheus/alerts.yml.

    scripts/validate-manifests.py [DIR]     (default deploy/kubernetes; run with the Python
                                             scripts/ensure-kubernetes-validate.sh prepares)
    scripts/validate-manifests.py --sync-rules
                                            writes the groups of alerts.yml into
                                            deploy/kubernetes/monitoring.yaml's PrometheusRule

Prints one line per document; exits 1 with every problem listed.
"""

import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.30.0"
ROOT = pathlib.Path(__file__).resolve().parent.parent


def documents(directory):
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    present = sorted(
        path.name
        for path in directory.glob("*.yaml")
        if path.name != "kustomization.yaml"
    )
    problems = [f"{name}: not in kustomization.yaml" for name in present if name not in listed]
    problems += [f"{name}: listed in kustomization.yaml, missing" for name in listed if name not in present]
    found = []
    for name in listed:
        path = directory / name
        if not path.exists():
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((name, document))
    return found, problems


def schema_problems(directory, name, document):
    api_version = document.get("apiVersion", "")
    kind = document.get("kind", "")
    where = f"{name}: {kind} {document.get('metadata', {}).get('name', '?')}"
    group, _, version = api_version.rpartition("/")
    custom = directory / "schemas" / group / f"{kind.lower()}_{version}.json"
    if group and (directory / "schemas" / group).is_dir():
        if not custom.exists():
            return where, [f"{where}: no schema {custom.relative_to(directory)}"]
        schema = json.loads(custom.read_text())
        validator = jsonschema.Draft7Validator(schema)
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        return where, [
            f"{where}: {'/'.join(str(p) for p in error.path) or '(root)'}: {error.message}"
            for error in errors
        ]
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return where, [f"{where}: no schema for {api_version} {kind}"]
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(p) for p in error.path) or "(root)"
        return where, [f"{where}: {path}: {error.message}"]
    return where, []


def matches(selector, labels):
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


def semantic_problems(docs):
    problems = []
    by_kind = {}
    for _, document in docs:
        by_kind.setdefault(document["kind"], []).append(document)
    budgets = by_kind.get("PodDisruptionBudget", [])
    deployments = by_kind.get("Deployment", [])
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        if not any(matches(budget["spec"].get("selector", {}), labels) for budget in budgets):
            problems.append(f"Deployment {name}: no PodDisruptionBudget selects its pods")
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            where = f"Deployment {name}, container {container['name']}"
            for probe, path in [("livenessProbe", "/health"), ("readinessProbe", "/ready")]:
                if container.get(probe, {}).get("httpGet", {}).get("path") != path:
                    problems.append(f"{where}: {probe} must GET {path}")
            requests = container.get("resources", {}).get("requests", {})
            if not {"cpu", "memory"} <= requests.keys():
                problems.append(f"{where}: needs cpu and memory requests")
            if "memory" not in container.get("resources", {}).get("limits", {}):
                problems.append(f"{where}: needs a memory limit")
    names = {deployment["metadata"]["name"] for deployment in deployments}
    for scaled in by_kind.get("ScaledObject", []):
        target = scaled["spec"]["scaleTargetRef"]["name"]
        if target not in names:
            problems.append(f"ScaledObject {scaled['metadata']['name']}: no Deployment {target}")
    alerts = yaml.safe_load((ROOT / "observability/prometheus/alerts.yml").read_text())
    rules = by_kind.get("PrometheusRule", [])
    if not rules:
        problems.append("no PrometheusRule")
    for rule in rules:
        if rule["spec"]["groups"] != alerts["groups"]:
            problems.append(
                f"PrometheusRule {rule['metadata']['name']}: its groups differ from "
                "observability/prometheus/alerts.yml (scripts/validate-manifests.py --sync-rules)"
            )
    return problems


def sync_rules():
    path = ROOT / "deploy/kubernetes/monitoring.yaml"
    alerts = yaml.safe_load((ROOT / "observability/prometheus/alerts.yml").read_text())
    parts = path.read_text().split("\n---\n")
    for index, part in enumerate(parts):
        document = yaml.safe_load(part)
        if document and document.get("kind") == "PrometheusRule":
            document["spec"]["groups"] = alerts["groups"]
            parts[index] = yaml.safe_dump(document, sort_keys=False, width=100).rstrip("\n")
    path.write_text("\n---\n".join(parts).rstrip("\n") + "\n")
    return 0


def main():
    if sys.argv[1:] == ["--sync-rules"]:
        return sync_rules()
    directory = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "deploy/kubernetes")
    docs, problems = documents(directory)
    if not docs:
        problems.append("no document")
    for name, document in docs:
        where, found = schema_problems(directory, name, document)
        problems += found
        print(f"{'FAIL' if found else 'ok  '} {where}")
    problems += semantic_problems(docs)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
