"""Validates the Kubernetes manifests under k8s/ before anyone applies them.

Run through scripts/k8s-validate.sh, which installs the dependencies. Three steps:

1. Render: every kustomization (k8s/base, k8s/overlays/dev, k8s/overlays/prod) with kustomize,
   plus k8s/secrets with its `*.example` templates standing in for the real files.
2. Schemas, strict: each rendered object against the schema of its exact kind and apiVersion.
   Custom kinds use the `openAPIV3Schema` of that version in the CRDs of ../shared/crds (read at
   run time), made strict: every object schema that lists its properties and does not preserve
   unknown fields gets `additionalProperties: false`, because the API server would silently
   prune such a field (a typo). Their metadata is checked against the strict ObjectMeta schema.
   Core kinds use the strict schemas that the kubernetes-validate package ships for Kubernetes
   K8S_VERSION. A kind with no schema is an error.
3. Agreement: the values that several files must share (pubsub name, topics, consumer group, app
   id and port, cron bindings and routes, Spin variables, database host and port, Secret names
   and keys, NetworkPolicy selectors, the migration files) are compared across spin.toml, the
   Dapr components, the Strimzi resources and the SpinApp.

Exit status 0 only when every object is valid and every agreement check passed.
"""

from __future__ import annotations

import argparse
import copy
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils

# Kubernetes version whose core schemas are used (kubernetes-validate ships several).
K8S_VERSION = "1.31"

# The kustomizations that are validated, relative to k8s/.
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod")
SECRETS_KUSTOMIZATION = "secrets"

# API groups served by Kubernetes itself; validated with kubernetes-validate's schemas.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apps",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
    }
)

# Facts of the deployment (README and k8s/README.md).
APP_ID = "todo-backend"
# SpinKube's containerd-shim-spin serves the app on this port.
APP_PORT = "80"
HEALTH_PATH = "/.well-known/spin/health"
# Topic name -> (partitions, retention in ms).
TOPIC_LAYOUT = {
    "tasks": (3, 7 * 24 * 3600 * 1000),
    "reminders": (3, 7 * 24 * 3600 * 1000),
    "tasks-dlq": (1, 30 * 24 * 3600 * 1000),
}
# Spin variable -> topic it names.
TOPIC_VARIABLES = ("topic_tasks", "topic_reminders", "topic_dead_letter")
# Cron input bindings that drive background work; Dapr POSTs to /<name>.
CRON_BINDINGS = {"outbox-relay": "@every 10s", "reminder-sweep": "@every 30s"}
# Routes the sidecar calls on the app, besides the cron bindings'.
DAPR_APP_ROUTES = ("/dapr/subscribe", "/api/events/tasks", "/api/events/reminders")
# Dapr reads the token of dapr.io/app-token-secret and dapr.io/api-token-secret from this key.
DAPR_TOKEN_KEY = "token"
RUNTIME_CONFIG_KEY = "runtime-config.toml"
# Strimzi 1.2.0 runs these Kafka versions.
KAFKA_VERSION = re.compile(r"^4\.[23]\.\d+$")
SPIN_VARIABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MIGRATION_NAME = re.compile(r"^(\d+).*\.sql$")


class RenderError(Exception):
    """kustomize failed to render a kustomization."""


# ---------------------------------------------------------------------------------------------
# Rendering


def kustomize_command() -> list[str]:
    return shlex.split(os.environ.get("K8S_KUSTOMIZE", "kubectl kustomize"))


def render(directory: Path, command: list[str] | None = None) -> list[dict]:
    """Renders one kustomization. The load restrictor is off because the migrations ConfigMap is
    generated from ../../migrations, outside k8s/ (k8s/README.md explains the choice)."""
    command = command or kustomize_command()
    result = subprocess.run(
        [*command, "--load-restrictor", "LoadRestrictionsNone", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(f"{directory}: {result.stderr.strip() or result.stdout.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def render_secret_templates(directory: Path, command: list[str] | None = None) -> list[dict]:
    """Renders k8s/secrets with each `*.example` template copied to the file it stands for."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / directory.name
        shutil.copytree(directory, work)
        for template in work.glob("*.example"):
            shutil.copyfile(template, template.with_suffix(""))
        return render(work, command)


# ---------------------------------------------------------------------------------------------
# Schemas


def strict_schema(node: Any, in_junction: bool = False) -> Any:
    """Turns a CRD's OpenAPI v3 schema into a strict JSON schema (see the module docs)."""
    if isinstance(node, list):
        return [strict_schema(item, in_junction) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = strict_schema(value) if isinstance(value, (dict, list)) else value
        elif key in ("allOf", "anyOf", "oneOf", "not"):
            out[key] = strict_schema(value, in_junction=True)
        elif key in ("description", "example"):
            continue
        else:
            out[key] = value
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string") is True and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("x-kubernetes-embedded-resource") is True and "properties" in out:
        for name in ("apiVersion", "kind"):
            out["properties"].setdefault(name, {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    preserves = out.get("x-kubernetes-preserve-unknown-fields") is True
    is_object = out.get("type") == "object" or "properties" in out
    if is_object and not preserves and not in_junction and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@dataclass
class CrdSchemas:
    """The served versions of every CRD in a directory, by (group, version, kind)."""

    directory: Path
    schemas: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    sources: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> "CrdSchemas":
        if not directory.is_dir():
            raise FileNotFoundError(f"CRD directory {directory} does not exist")
        crds = cls(directory)
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    if not version.get("served", False):
                        continue
                    schema = version.get("schema", {}).get("openAPIV3Schema")
                    if schema is None:
                        continue
                    key = (spec["group"], version["name"], spec["names"]["kind"])
                    crds.schemas[key] = strict_schema(schema)
                    crds.sources[key] = path.name
        if not crds.schemas:
            raise FileNotFoundError(f"no CustomResourceDefinition found in {directory}")
        return crds

    @property
    def groups(self) -> set[str]:
        return {group for group, _, _ in self.schemas}

    def versions_of(self, group: str, kind: str) -> list[str]:
        return sorted(v for g, v, k in self.schemas if g == group and k == kind)


def _kubernetes_validate_dir() -> Path:
    """The strict schema directory kubernetes-validate uses for K8S_VERSION."""
    version = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) <= K8S_VERSION][-1]
    root = importlib.resources.files(kubernetes_validate) / "kubernetes-json-schema"
    return Path(str(root / f"v{version}-local-strict"))


def object_meta_validator() -> jsonschema.protocols.Validator:
    """Strict ObjectMeta from kubernetes-validate's definitions, for custom resources."""
    definitions = json.loads((_kubernetes_validate_dir() / "_definitions.json").read_text())
    schema = {
        "$defs": definitions["$defs"],
        "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    }
    return jsonschema.Draft202012Validator(schema)


def describe(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')} ({doc.get('apiVersion', '?')})"


def _error_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(root)"


class SchemaValidator:
    """Validates rendered objects against the schema of their exact kind and apiVersion."""

    def __init__(self, crds: CrdSchemas):
        self.crds = crds
        self.meta = object_meta_validator()
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = {}

    def validate(self, doc: dict) -> list[str]:
        api_version = doc.get("apiVersion")
        kind = doc.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return [f"{describe(doc)}: apiVersion and kind are required"]
        group, _, version = api_version.rpartition("/")
        if group in self.crds.groups:
            return self._validate_custom(doc, group, version, kind)
        if group in BUILTIN_GROUPS:
            return self._validate_core(doc)
        return [f"{describe(doc)}: no schema for API group {group!r} (no CRD in {self.crds.directory})"]

    def _validate_custom(self, doc: dict, group: str, version: str, kind: str) -> list[str]:
        key = (group, version, kind)
        if key not in self.crds.schemas:
            served = self.crds.versions_of(group, kind)
            hint = f"served versions: {', '.join(served)}" if served else "no CRD defines this kind"
            return [f"{describe(doc)}: no schema for {kind} in {group}/{version} ({hint})"]
        validator = self._validators.get(key)
        if validator is None:
            schema = copy.deepcopy(self.crds.schemas[key])
            # metadata is checked against ObjectMeta below, as the API server does.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            validator = jsonschema.Draft4Validator(schema)
            self._validators[key] = validator
        errors = [
            f"{describe(doc)}: {_error_path(e)}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
        ]
        errors += [
            f"{describe(doc)}: {'.'.join(['metadata', *map(str, e.absolute_path)])}: {e.message}"
            for e in self.meta.iter_errors(doc.get("metadata") or {})
        ]
        if not (doc.get("metadata") or {}).get("name"):
            errors.append(f"{describe(doc)}: metadata.name is required")
        return errors

    def _validate_core(self, doc: dict) -> list[str]:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kv_utils.ValidationError as e:
            return [f"{describe(doc)}: {_error_path(e)}: {e.message}"]
        except kv_utils.SchemaNotFoundError as e:
            return [f"{describe(doc)}: {e.message}"]
        return []


# ---------------------------------------------------------------------------------------------
# Agreement


@dataclass
class SpinManifest:
    """What the agreement checks need from spin.toml."""

    variables: dict[str, dict]
    routes: list[str]
    components: dict[str, dict]

    @classmethod
    def load(cls, path: Path) -> "SpinManifest":
        return cls.parse(tomllib.loads(path.read_text()))

    @classmethod
    def parse(cls, data: dict) -> "SpinManifest":
        triggers = data.get("trigger", {}).get("http", [])
        return cls(
            variables=dict(data.get("variables", {})),
            routes=[t["route"] for t in triggers if isinstance(t.get("route"), str)],
            components=dict(data.get("component", {})),
        )

    def required_variables(self) -> set[str]:
        return {
            name
            for name, spec in self.variables.items()
            if spec.get("required") is True or "default" not in spec
        }

    def serves(self, path: str) -> bool:
        """Whether a trigger route of the manifest matches the path, as Spin routes it."""
        return any(route_matches(route, path) for route in self.routes)


def route_matches(route: str, path: str) -> bool:
    """Spin route syntax: exact segments, `:name` for one segment, a trailing `/...` for the rest."""
    route_parts = [p for p in route.split("/") if p]
    path_parts = [p for p in path.split("/") if p]
    wildcard = bool(route_parts) and route_parts[-1] == "..."
    if wildcard:
        route_parts = route_parts[:-1]
        if len(path_parts) < len(route_parts):
            return False
    elif len(path_parts) != len(route_parts):
        return False
    return all(r.startswith(":") or r == p for r, p in zip(route_parts, path_parts))


def render_template(template: str, values: dict[str, str]) -> str:
    """Expands Spin's `{{ name }}` references."""
    return re.sub(r"\{\{\s*([a-z0-9_]+)\s*\}\}", lambda m: values.get(m.group(1), m.group(0)), template)


def list_migrations(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.sql")) if directory.is_dir() else []


@dataclass
class Bundle:
    """One rendered kustomization and everything it is compared with."""

    name: str
    docs: list[dict]
    secrets: list[dict]
    spin: SpinManifest
    migrations: list[str]


@dataclass
class Checks:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, condition: bool, what: str, why: str = "") -> bool:
        if condition:
            self.passed.append(what)
        else:
            self.failed.append(f"{what}: {why}" if why else what)
        return condition


def _by_kind(docs: Iterable[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def _name(doc: dict) -> str:
    return (doc.get("metadata") or {}).get("name", "")


def _labels_match(selector: dict, labels: dict) -> bool:
    """matchLabels (and simple matchExpressions) of a label selector against labels."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr.get("values", []):
            return False
        if op == "NotIn" and value in expr.get("values", []):
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _component_metadata(component: dict) -> dict[str, Any]:
    return {m["name"]: m.get("value") for m in component["spec"].get("metadata", [])}


class Agreement:
    """Cross-file checks of one bundle. Each check adds one pass or one failure."""

    def __init__(self, bundle: Bundle, require_routes: bool = False):
        self.b = bundle
        self.docs = bundle.docs
        self.require_routes = require_routes
        self.c = Checks()
        spinapps = _by_kind(self.docs, "SpinApp")
        self.spinapp = spinapps[0] if len(spinapps) == 1 else None
        self.pod_annotations = (self.spinapp or {}).get("spec", {}).get("podAnnotations") or {}
        self.pod_labels = (self.spinapp or {}).get("spec", {}).get("podLabels") or {}
        self.variables = {v["name"]: v for v in (self.spinapp or {}).get("spec", {}).get("variables") or []}

    # -- helpers --------------------------------------------------------------------------

    def one(self, kind: str, name: str | None = None) -> dict | None:
        found = [d for d in _by_kind(self.docs, kind) if name is None or _name(d) == name]
        return found[0] if len(found) == 1 else None

    def secret(self, name: str) -> dict | None:
        found = [d for d in _by_kind(self.b.secrets, "Secret") if _name(d) == name]
        return found[0] if found else None

    def secret_has(self, name: str, key: str) -> bool:
        secret = self.secret(name)
        if secret is None:
            return False
        return key in (secret.get("data") or {}) or key in (secret.get("stringData") or {})

    def config_value(self, name: str, key: str) -> str | None:
        cm = self.one("ConfigMap", name)
        return None if cm is None else (cm.get("data") or {}).get(key)

    def effective(self, variable: str) -> str | None:
        """The value the app sees for a Spin variable in this deployment: set by the SpinApp
        (value or ConfigMap; a Secret's value is unknown here) or else spin.toml's default."""
        binding = self.variables.get(variable)
        if binding is None:
            return (self.b.spin.variables.get(variable) or {}).get("default")
        if "value" in binding:
            return binding["value"]
        ref = (binding.get("valueFrom") or {}).get("configMapKeyRef")
        if ref:
            return self.config_value(ref["name"], ref["key"])
        return None

    def namespace(self) -> str | None:
        namespaces = {
            (d.get("metadata") or {}).get("namespace") for d in self.docs if d.get("kind") != "Namespace"
        }
        return namespaces.pop() if len(namespaces) == 1 else None

    # -- checks ---------------------------------------------------------------------------

    def run(self) -> Checks:
        c = self.c
        if not c.check(self.spinapp is not None, "exactly one SpinApp", "found none or several"):
            return c
        self.check_namespace()
        self.check_variables()
        self.check_secrets()
        self.check_sidecar_routes_closed()
        self.check_dapr_app()
        self.check_pubsub()
        self.check_topics()
        self.check_kafka()
        self.check_resiliency()
        self.check_cron_bindings()
        self.check_routes()
        self.check_database()
        self.check_network_policies()
        self.check_migrations()
        return c

    def check_namespace(self) -> None:
        namespaces = _by_kind(self.docs, "Namespace")
        ns = self.namespace()
        self.c.check(ns is not None, "every object in one namespace", "objects are spread over namespaces")
        if namespaces:
            self.c.check(
                [_name(n) for n in namespaces] == [ns],
                "the Namespace object is the objects' namespace",
                f"Namespace {[_name(n) for n in namespaces]} vs objects in {ns}",
            )
        secret_ns = {(s.get("metadata") or {}).get("namespace") for s in self.b.secrets}
        self.c.check(secret_ns == {ns}, "secret templates target the app's namespace", f"{secret_ns} vs {ns}")
        executor = self.spinapp["spec"].get("executor")
        self.c.check(
            self.one("SpinAppExecutor", executor) is not None,
            f"SpinApp executor {executor!r} is defined beside it",
            "no SpinAppExecutor of that name in the namespace",
        )

    def check_variables(self) -> None:
        spin = self.b.spin
        names = [v["name"] for v in self.spinapp["spec"].get("variables") or []]
        self.c.check(len(names) == len(set(names)), "SpinApp variables are unique", f"duplicates in {names}")
        for name in names:
            if self.c.check(
                name in spin.variables,
                f"SpinApp variable {name} exists in spin.toml",
                "spin.toml [variables] does not declare it (Spin would reject the app)",
            ):
                self.c.check(
                    bool(SPIN_VARIABLE_NAME.match(name)),
                    f"SpinApp variable {name} is a valid Spin variable name",
                    "use lower-case letters, digits and underscores",
                )
        for name in sorted(spin.required_variables()):
            self.c.check(
                name in self.variables,
                f"required spin.toml variable {name} is provided by the SpinApp",
                "it has no default, so the app cannot start without it",
            )
        for name in sorted(set(spin.variables) - set(self.variables) - spin.required_variables()):
            self.c.notes.append(
                f"spin.toml variable {name} is not set by the SpinApp; the app uses its default"
            )
        for name, spec in sorted(spin.variables.items()):
            if spec.get("secret") is True and name in self.variables:
                source = self.variables[name].get("valueFrom") or {}
                self.c.check(
                    "secretKeyRef" in source,
                    f"secret variable {name} comes from a Secret",
                    "spin.toml marks it secret; do not put it in a value or ConfigMap",
                )
        for name, binding in sorted(self.variables.items()):
            ref = (binding.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                self.c.check(
                    self.config_value(ref["name"], ref["key"]) is not None,
                    f"variable {name}: ConfigMap {ref['name']} has key {ref['key']}",
                    "missing from the rendered ConfigMaps",
                )

    def _secret_refs(self) -> list[tuple[str, str, str]]:
        """(where, secret name, key) for every Secret the rendered objects depend on."""
        refs = []
        for name, binding in self.variables.items():
            ref = (binding.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                refs.append((f"SpinApp variable {name}", ref["name"], ref["key"]))
        runtime = (self.spinapp["spec"].get("runtimeConfig") or {}).get("loadFromSecret")
        if runtime:
            refs.append(("SpinApp runtimeConfig.loadFromSecret", runtime, RUNTIME_CONFIG_KEY))
        for annotation in ("dapr.io/app-token-secret", "dapr.io/api-token-secret"):
            if annotation in self.pod_annotations:
                refs.append((f"annotation {annotation}", self.pod_annotations[annotation], DAPR_TOKEN_KEY))
        for kind in ("StatefulSet", "Deployment", "Job"):
            for doc in _by_kind(self.docs, kind):
                pod = doc["spec"]["template"]["spec"]
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    for env in container.get("env") or []:
                        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                        if ref:
                            refs.append((f"{kind}/{_name(doc)} env {env['name']}", ref["name"], ref["key"]))
        return refs

    def check_secrets(self) -> None:
        for where, name, key in sorted(self._secret_refs()):
            self.c.check(
                self.secret_has(name, key),
                f"{where}: Secret {name} key {key} has a template in k8s/secrets",
                "no such Secret/key in the secret templates",
            )
        for annotation, variable in (
            ("dapr.io/app-token-secret", "app_api_token"),
            ("dapr.io/api-token-secret", "dapr_api_token"),
        ):
            ref = ((self.variables.get(variable) or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            self.c.check(
                annotation in self.pod_annotations
                and ref.get("name") == self.pod_annotations.get(annotation)
                and ref.get("key") == DAPR_TOKEN_KEY,
                f"{annotation} and Spin variable {variable} use the same Secret",
                f"annotation {self.pod_annotations.get(annotation)!r} vs variable from {ref or 'nowhere'}",
            )

    def check_sidecar_routes_closed(self) -> None:
        """The routes only the sidecar calls must never answer an anonymous caller: the app
        token comes from a Secret that must exist (not `optional`), the development switch
        that opens them is off, and the loopback-only guard stays on while the sidecar runs
        in the pod (todo_core::sidecar)."""
        binding = self.variables.get("app_api_token")
        ref = ((binding or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        self.c.check(
            bool(ref) and ref.get("optional") is not True,
            "SpinApp cannot run without an app token (app_api_token from a required Secret)",
            "without it every sidecar route refuses every call; an optional Secret lets the pod "
            "start without one" if ref else "app_api_token is not set from a Secret",
        )
        opened = self.effective("allow_open_sidecar_routes")
        self.c.check(
            (opened or "false").strip().lower() != "true",
            "allow_open_sidecar_routes is off (it is for local development only)",
            f"got {opened!r}",
        )
        if self.pod_annotations.get("dapr.io/enabled") == "true":
            loopback = self.effective("sidecar_loopback_only")
            self.c.check(
                (loopback or "true").strip().lower() != "false",
                "sidecar routes answer callers on the pod's loopback only (the sidecar is in the pod)",
                f"sidecar_loopback_only={loopback!r}",
            )

    def check_dapr_app(self) -> None:
        a = self.pod_annotations
        self.c.check(a.get("dapr.io/enabled") == "true", "Dapr sidecar enabled on the SpinApp pods")
        self.c.check(
            a.get("dapr.io/app-id") == APP_ID, f"Dapr app id is {APP_ID}", f"got {a.get('dapr.io/app-id')!r}"
        )
        self.c.check(
            a.get("dapr.io/app-port") == APP_PORT,
            f"Dapr app port is {APP_PORT} (SpinKube's port)",
            f"got {a.get('dapr.io/app-port')!r}",
        )
        config = a.get("dapr.io/config")
        self.c.check(
            config is not None and self.one("Configuration", config) is not None,
            "dapr.io/config names a Dapr Configuration",
            f"{config!r} not found",
        )
        checks = self.spinapp["spec"].get("checks") or {}
        for probe in ("liveness", "readiness"):
            path = ((checks.get(probe) or {}).get("httpGet") or {}).get("path")
            self.c.check(path == HEALTH_PATH, f"SpinApp {probe} check uses {HEALTH_PATH}", f"got {path!r}")
        if a.get("dapr.io/enable-app-health-check") == "true":
            self.c.check(
                a.get("dapr.io/app-health-check-path") == HEALTH_PATH,
                f"Dapr app health check uses {HEALTH_PATH}",
                f"got {a.get('dapr.io/app-health-check-path')!r}",
            )
        for doc in _by_kind(self.docs, "Component") + _by_kind(self.docs, "Resiliency"):
            scopes = doc.get("scopes")
            self.c.check(
                scopes is None or APP_ID in scopes,
                f"{doc['kind']}/{_name(doc)} is scoped to {APP_ID}",
                f"scopes {scopes}",
            )

    def pubsub(self) -> dict | None:
        found = [d for d in _by_kind(self.docs, "Component") if d["spec"].get("type") == "pubsub.kafka"]
        return found[0] if len(found) == 1 else None

    def topics(self) -> dict[str, dict]:
        return {(t["spec"].get("topicName") or _name(t)): t for t in _by_kind(self.docs, "KafkaTopic")}

    def check_pubsub(self) -> None:
        pubsub = self.pubsub()
        if not self.c.check(pubsub is not None, "exactly one pubsub.kafka Component"):
            return
        name = _name(pubsub)
        default = (self.b.spin.variables.get("pubsub_name") or {}).get("default")
        self.c.check(
            self.effective("pubsub_name") == name,
            "SpinApp pubsub_name is the Kafka pub/sub component's name",
            f"{self.effective('pubsub_name')!r} vs Component {name!r}",
        )
        self.c.check(
            default == name, "spin.toml default pubsub_name matches the component", f"{default!r} vs {name!r}"
        )
        meta = _component_metadata(pubsub)
        for required in ("brokers", "authType"):
            self.c.check(bool(meta.get(required)), f"pubsub metadata {required} is set")
        self.c.check(
            meta.get("consumerGroup") == APP_ID == self.pod_annotations.get("dapr.io/app-id"),
            "pubsub consumerGroup is the app id",
            f"consumerGroup {meta.get('consumerGroup')!r}, app id {self.pod_annotations.get('dapr.io/app-id')!r}",
        )
        version = str(meta.get("version") or "2.0.0")
        parts = (
            tuple(int(p) for p in re.findall(r"\d+", version)[:2])
            if re.match(r"^\d+\.\d+\.\d+", version)
            else ()
        )
        self.c.check(
            bool(parts) and parts >= (2, 1),
            "pubsub Kafka protocol version is one Kafka 4 accepts (>= 2.1)",
            f"version {version!r} (Dapr's default 2.0.0 is too old)",
        )
        allowed = meta.get("allowedTopics")
        if allowed is not None:
            self.c.check(
                sorted(t.strip() for t in str(allowed).split(",")) == sorted(self.topics()),
                "pubsub allowedTopics are exactly the KafkaTopics",
                f"{allowed!r} vs {sorted(self.topics())}",
            )

    def check_topics(self) -> None:
        topics = self.topics()
        for variable in TOPIC_VARIABLES:
            value = self.effective(variable)
            default = (self.b.spin.variables.get(variable) or {}).get("default")
            self.c.check(
                value in topics, f"SpinApp {variable} ({value}) is a KafkaTopic", f"topics: {sorted(topics)}"
            )
            self.c.check(
                default == value,
                f"spin.toml default {variable} matches the deployment",
                f"{default!r} vs {value!r}",
            )
        for name, (partitions, retention) in TOPIC_LAYOUT.items():
            topic = topics.get(name)
            if not self.c.check(topic is not None, f"KafkaTopic {name} exists"):
                continue
            spec = topic["spec"]
            self.c.check(
                spec.get("partitions") == partitions,
                f"KafkaTopic {name} has {partitions} partitions",
                f"got {spec.get('partitions')}",
            )
            got = (spec.get("config") or {}).get("retention.ms")
            self.c.check(
                got is not None and int(got) == retention,
                f"KafkaTopic {name} keeps records {retention} ms",
                f"got {got}",
            )

    def kafka(self) -> dict | None:
        found = _by_kind(self.docs, "Kafka")
        return found[0] if len(found) == 1 else None

    def check_kafka(self) -> None:
        kafka = self.kafka()
        if not self.c.check(kafka is not None, "exactly one Kafka cluster"):
            return
        cluster = _name(kafka)
        spec = kafka["spec"]["kafka"]
        self.c.check(
            bool(KAFKA_VERSION.match(str(spec.get("version", "")))),
            "Kafka version is one Strimzi 1.2.0 runs (4.2.x or 4.3.x)",
            f"got {spec.get('version')!r}",
        )
        for doc in _by_kind(self.docs, "KafkaNodePool") + _by_kind(self.docs, "KafkaTopic"):
            label = (doc["metadata"].get("labels") or {}).get("strimzi.io/cluster")
            self.c.check(
                label == cluster,
                f"{doc['kind']}/{_name(doc)} belongs to Kafka {cluster}",
                f"strimzi.io/cluster {label!r}",
            )
        pools = [
            p
            for p in _by_kind(self.docs, "KafkaNodePool")
            if (p["metadata"].get("labels") or {}).get("strimzi.io/cluster") == cluster
        ]
        brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"].get("roles", []))
        controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"].get("roles", []))
        self.c.check(brokers >= 1, "the node pools have brokers", f"{brokers} brokers")
        self.c.check(controllers % 2 == 1, "an odd number of KRaft controllers", f"{controllers} controllers")
        config = spec.get("config") or {}
        for key in (
            "default.replication.factor",
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
        ):
            value = int(config.get(key, 3))
            self.c.check(value <= brokers, f"Kafka {key} fits {brokers} broker(s)", f"{value} > {brokers}")
        for name, topic in sorted(self.topics().items()):
            replicas = topic["spec"].get("replicas", int(config.get("default.replication.factor", 3)))
            isr = int(
                (topic["spec"].get("config") or {}).get(
                    "min.insync.replicas", config.get("min.insync.replicas", 1)
                )
            )
            self.c.check(
                replicas <= brokers,
                f"KafkaTopic {name} replicas fit {brokers} broker(s)",
                f"{replicas} > {brokers}",
            )
            self.c.check(
                isr <= replicas, f"KafkaTopic {name} min.insync.replicas <= replicas", f"{isr} > {replicas}"
            )
        pubsub = self.pubsub()
        if pubsub is None:
            return
        meta = _component_metadata(pubsub)
        ns = (kafka.get("metadata") or {}).get("namespace")
        bootstrap = f"{cluster}-kafka-bootstrap"
        hosts = {
            bootstrap,
            f"{bootstrap}.{ns}",
            f"{bootstrap}.{ns}.svc",
            f"{bootstrap}.{ns}.svc.cluster.local",
        }
        listeners = {int(l["port"]): l for l in spec.get("listeners", [])}
        for broker in str(meta.get("brokers", "")).split(","):
            host, _, port = broker.strip().rpartition(":")
            listener = listeners.get(int(port)) if port.isdigit() else None
            if not self.c.check(
                host in hosts and listener is not None,
                f"pubsub broker {broker.strip()} is the Strimzi bootstrap service and a listener port",
                f"expected {bootstrap}[.{ns}[.svc[.cluster.local]]]:<one of {sorted(listeners)}>",
            ):
                continue
            tls_off = str(meta.get("disableTls", "false")).lower() == "true"
            self.c.check(
                tls_off == (not listener.get("tls")),
                f"pubsub disableTls matches listener {listener['name']} (tls: {listener.get('tls')})",
            )
            auth = (listener.get("authentication") or {}).get("type")
            self.c.check(
                (auth is None) == (meta.get("authType") == "none"),
                f"pubsub authType matches listener {listener['name']} authentication",
                f"authType {meta.get('authType')!r}, listener authentication {auth!r}",
            )
            peers = listener.get("networkPolicyPeers")
            if peers is not None:
                self.c.check(
                    any(
                        _labels_match(p.get("podSelector") or {}, self.pod_labels)
                        for p in peers
                        if "podSelector" in p
                    ),
                    f"listener {listener['name']} networkPolicyPeers admit the app pods",
                    f"no peer selects {self.pod_labels}",
                )

    def check_resiliency(self) -> None:
        components = {_name(d) for d in _by_kind(self.docs, "Component")}
        for res in _by_kind(self.docs, "Resiliency"):
            policies = res["spec"].get("policies") or {}
            kinds = {"retry": "retries", "timeout": "timeouts", "circuitBreaker": "circuitBreakers"}
            for target, spec in (res["spec"].get("targets", {}).get("components") or {}).items():
                self.c.check(
                    target in components,
                    f"Resiliency target {target} is a Component",
                    f"components: {sorted(components)}",
                )
                for direction in ("inbound", "outbound"):
                    for kind, policy in (spec.get(direction) or {}).items():
                        self.c.check(
                            policy in (policies.get(kinds[kind]) or {}),
                            f"Resiliency {target}.{direction}.{kind} names a defined policy",
                            f"{policy!r} is not in policies.{kinds[kind]}",
                        )
        pubsub = self.pubsub()
        if pubsub is not None:
            self.c.check(
                any(
                    (
                        (r["spec"].get("targets", {}).get("components") or {})
                        .get(_name(pubsub), {})
                        .get("inbound")
                        or {}
                    ).get("retry")
                    for r in _by_kind(self.docs, "Resiliency")
                ),
                f"inbound deliveries from {_name(pubsub)} have a retry policy (then the dead-letter topic)",
            )

    def cron_bindings(self) -> dict[str, dict]:
        return {
            _name(d): d for d in _by_kind(self.docs, "Component") if d["spec"].get("type") == "bindings.cron"
        }

    def check_cron_bindings(self) -> None:
        bindings = self.cron_bindings()
        self.c.check(
            sorted(bindings) == sorted(CRON_BINDINGS),
            "cron bindings are outbox-relay and reminder-sweep",
            f"got {sorted(bindings)}",
        )
        for name, binding in sorted(bindings.items()):
            meta = _component_metadata(binding)
            route = meta.get("route") or f"/{name}"
            self.c.check(route == f"/{name}", f"cron binding {name} posts to /{name}", f"route {route!r}")
            if name in CRON_BINDINGS:
                self.c.check(
                    meta.get("schedule") == CRON_BINDINGS[name],
                    f"cron binding {name} runs {CRON_BINDINGS[name]}",
                    f"schedule {meta.get('schedule')!r}",
                )

    def check_routes(self) -> None:
        """The routes Dapr calls must be served by spin.toml. Until the components that serve
        them exist, a missing one is reported as pending (a failure with --require-routes)."""
        routes = [*DAPR_APP_ROUTES, *(f"/{n}" for n in sorted(self.cron_bindings()))]
        for route in routes:
            what = f"spin.toml serves {route}, which the sidecar calls"
            if self.b.spin.serves(route):
                self.c.passed.append(what)
            elif self.require_routes:
                self.c.failed.append(f"{what}: no trigger route matches it")
            else:
                self.c.pending.append(what)

    def check_database(self) -> None:
        host = self.effective("db_host")
        port = self.effective("db_port")
        ns = self.namespace()
        service = None
        for svc in _by_kind(self.docs, "Service"):
            name = _name(svc)
            if host in {name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}:
                service = svc
        if not self.c.check(
            service is not None, f"db_host {host} is a Service of the deployment", "no such Service"
        ):
            return
        ports = [p for p in service["spec"].get("ports", []) if str(p.get("port")) == str(port)]
        self.c.check(bool(ports), f"db_port {port} is a port of Service {_name(service)}")
        selector = service["spec"].get("selector") or {}
        backends = [
            s
            for s in _by_kind(self.docs, "StatefulSet")
            if selector
            and _labels_match(
                {"matchLabels": selector}, s["spec"]["template"]["metadata"].get("labels") or {}
            )
        ]
        self.c.check(bool(backends), f"Service {_name(service)} selects the PostgreSQL StatefulSet")
        if backends and ports:
            target = ports[0].get("targetPort", ports[0]["port"])
            container_ports = [
                p for c in backends[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
            ]
            self.c.check(
                any(p.get("name") == target or p.get("containerPort") == target for p in container_ports),
                f"Service {_name(service)} targets a PostgreSQL container port",
                f"targetPort {target!r}",
            )
        # spin.toml derives allowed_outbound_hosts from the same variables as the connection.
        values = {name: v for name in self.b.spin.variables if (v := self.effective(name)) is not None}
        expected = f"postgres://{host}:{port}"
        for cname, component in sorted(self.b.spin.components.items()):
            hosts = [render_template(h, values) for h in component.get("allowed_outbound_hosts", [])]
            pg_hosts = [h for h in hosts if h.startswith("postgres://")]
            if not pg_hosts:
                continue
            self.c.check(
                expected in pg_hosts,
                f"component {cname} may connect to {expected}",
                f"allowed_outbound_hosts render to {pg_hosts}",
            )
            for var, template in (component.get("variables") or {}).items():
                if str(template).startswith("postgres://"):
                    url = render_template(str(template), {**values, "db_user": "u", "db_password": "p"})
                    hostport = url.split("@", 1)[-1].split("/", 1)[0]
                    self.c.check(
                        f"postgres://{hostport}" == expected,
                        f"component {cname} {var} connects to the allowed host",
                        f"{hostport} vs {expected}",
                    )
            dapr = f"http://{self.effective('dapr_host')}:{self.effective('dapr_http_port')}"
            if any(h.startswith("http://") for h in hosts) and "dapr_host" in values:
                self.c.check(
                    dapr in hosts, f"component {cname} may call the sidecar at {dapr}", f"allowed: {hosts}"
                )
        self.c.check(
            self.effective("dapr_host") in ("127.0.0.1", "localhost")
            and self.effective("dapr_http_port") == "3500",
            "dapr_host/dapr_http_port point at the sidecar in the pod",
            f"{self.effective('dapr_host')}:{self.effective('dapr_http_port')}",
        )

    def check_network_policies(self) -> None:
        policies = _by_kind(self.docs, "NetworkPolicy")
        postgres = _by_kind(self.docs, "StatefulSet")
        jobs = _by_kind(self.docs, "Job")
        for sts in postgres:
            labels = sts["spec"]["template"]["metadata"].get("labels") or {}
            guarding = [
                p
                for p in policies
                if p["spec"].get("podSelector") and _labels_match(p["spec"]["podSelector"], labels)
            ]
            if not self.c.check(bool(guarding), f"a NetworkPolicy guards StatefulSet/{_name(sts)}"):
                continue
            peers = [
                f for p in guarding for rule in p["spec"].get("ingress") or [] for f in rule.get("from") or []
            ]

            def admitted(pod_labels: dict, peers: list[dict] = peers) -> bool:
                return any(_labels_match(f["podSelector"], pod_labels) for f in peers if "podSelector" in f)

            self.c.check(admitted(self.pod_labels), f"the app pods may reach StatefulSet/{_name(sts)}")
            for job in jobs:
                self.c.check(
                    admitted(job["spec"]["template"]["metadata"].get("labels") or {}),
                    f"Job/{_name(job)} may reach StatefulSet/{_name(sts)}",
                )
            others = [
                d
                for d in _by_kind(self.docs, "StatefulSet")
                if d is not sts and admitted(d["spec"]["template"]["metadata"].get("labels") or {})
            ]
            self.c.check(
                not others,
                f"no other workload may reach StatefulSet/{_name(sts)}",
                f"{[_name(o) for o in others]}",
            )
        self.c.check(
            any(
                p["spec"].get("podSelector") and _labels_match(p["spec"]["podSelector"], self.pod_labels)
                for p in policies
            ),
            "a NetworkPolicy selects the app pods (SpinApp podLabels)",
        )

    def check_migrations(self) -> None:
        configmaps = [d for d in _by_kind(self.docs, "ConfigMap") if _name(d).startswith("todo-migrations")]
        if not self.c.check(len(configmaps) == 1, "one migrations ConfigMap"):
            return
        keys = sorted((configmaps[0].get("data") or {}).keys())
        self.c.check(
            keys == self.b.migrations,
            "the migrations ConfigMap holds exactly the files of migrations/",
            f"generator lists {keys}, migrations/ has {self.b.migrations} "
            "(update configMapGenerator todo-migrations in k8s/base/kustomization.yaml)",
        )
        numbers = [int(m.group(1)) for name in self.b.migrations if (m := MIGRATION_NAME.match(name))]
        self.c.check(
            len(numbers) == len(self.b.migrations) and numbers == sorted(numbers),
            "migration files sort by name in their numeric order",
            "start each name with a zero-padded number, e.g. 0001_setup.sql",
        )
        volumes = [
            v["configMap"]["name"]
            for job in _by_kind(self.docs, "Job")
            for v in job["spec"]["template"]["spec"].get("volumes", [])
            if "configMap" in v
        ]
        self.c.check(_name(configmaps[0]) in volumes, "the migration Job mounts the migrations ConfigMap")


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class Report:
    kustomizations: int = 0
    objects: int = 0
    schema_errors: list[str] = field(default_factory=list)
    checks: Checks = field(default_factory=Checks)

    @property
    def ok(self) -> bool:
        return not self.schema_errors and not self.checks.failed

    def summary(self) -> str:
        c = self.checks
        pending = f", {len(c.pending)} pending" if c.pending else ""
        if self.ok:
            return (
                f"k8s: {self.kustomizations} overlays, {self.objects} objects valid, "
                f"{len(c.passed)} agreement checks passed{pending}"
            )
        return (
            f"k8s: FAILED: {len(self.schema_errors)} schema errors, {len(c.failed)} agreement checks "
            f"failed ({self.kustomizations} overlays, {self.objects} objects, {len(c.passed)} checks passed{pending})"
        )


def validate_repo(
    repo: Path, crd_dir: Path, require_routes: bool = False, command: list[str] | None = None
) -> Report:
    report = Report()
    schemas = SchemaValidator(CrdSchemas.load(crd_dir))
    spin = SpinManifest.load(repo / "spin.toml")
    migrations = list_migrations(repo / "migrations")
    k8s = repo / "k8s"

    secrets = render_secret_templates(k8s / SECRETS_KUSTOMIZATION, command)
    report.objects += len(secrets)
    report.schema_errors += [f"[secrets] {e}" for doc in secrets for e in schemas.validate(doc)]

    for name in KUSTOMIZATIONS:
        docs = render(k8s / name, command)
        report.kustomizations += 1
        report.objects += len(docs)
        report.schema_errors += [f"[{name}] {e}" for doc in docs for e in schemas.validate(doc)]
        checks = Agreement(Bundle(name, docs, secrets, spin, migrations), require_routes).run()
        report.checks.passed += [f"[{name}] {p}" for p in checks.passed]
        report.checks.failed += [f"[{name}] {f}" for f in checks.failed]
        report.checks.pending += [f"[{name}] {p}" for p in checks.pending]
        report.checks.notes += [f"[{name}] {n}" for n in checks.notes]
    return report


def main(argv: list[str] | None = None) -> int:
    repo_default = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repo", type=Path, default=repo_default, help="repository root (default: %(default)s)"
    )
    parser.add_argument(
        "--crds",
        type=Path,
        default=Path(os.environ["K8S_CRDS"]) if os.environ.get("K8S_CRDS") else None,
        help="CRD directory (default: ../shared/crds beside the repository)",
    )
    parser.add_argument(
        "--require-routes",
        action="store_true",
        help="fail (instead of reporting pending) when spin.toml does not serve a route Dapr calls",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list every check that passed")
    args = parser.parse_args(argv)
    crds = args.crds or (args.repo.resolve().parent / "shared" / "crds")

    try:
        report = validate_repo(args.repo.resolve(), crds, args.require_routes)
    except (RenderError, FileNotFoundError) as e:
        print(f"FAIL {e}")
        print("k8s: FAILED: could not render or load the inputs")
        return 1

    for line in report.checks.passed if args.verbose else []:
        print(f"ok   {line}")
    for line in report.checks.notes:
        print(f"NOTE {line}")
    for line in report.checks.pending:
        print(f"PENDING {line}")
    for line in report.schema_errors:
        print(f"FAIL schema {line}")
    for line in report.checks.failed:
        print(f"FAIL agreement {line}")
    print(report.summary())
    # Counted by scripts/test.sh's summary: each object's schema check and each agreement check.
    valid = report.objects - len(report.schema_errors)
    print(f"# checks: {max(valid, 0) + len(report.checks.passed)} passed, "
          f"{len(report.schema_errors) + len(report.checks.failed)} failed")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
