"""Tests of scripts/k8s_validate.py: the manifests pass, and broken ones fail.

Run by scripts/k8s-validate.sh (`python3 -m unittest`), which provides kustomize and the Python
packages. Every test that breaks something starts from the rendered dev overlay, changes one
thing, and asserts the exact check that catches it.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import unittest
from pathlib import Path

import k8s_validate as kv

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO.parent / "shared" / "crds"


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} matches"
    return matches[0]


def variable(spinapp: dict, name: str) -> dict:
    return next(v for v in spinapp["spec"]["variables"] if v["name"] == name)


class ValidatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.schemas = kv.SchemaValidator(kv.CrdSchemas.load(CRDS))
        cls.dev = kv.render(REPO / "k8s" / "overlays" / "dev")
        cls.secrets = kv.render_secret_templates(REPO / "k8s" / "secrets")
        cls.spin = kv.SpinManifest.load(REPO / "spin.toml")
        cls.migrations = kv.list_migrations(REPO / "migrations")

    def docs(self) -> list[dict]:
        return copy.deepcopy(self.dev)

    def schema_errors(self, doc: dict) -> list[str]:
        return self.schemas.validate(doc)

    def agreement(
        self, docs=None, secrets=None, spin=None, migrations=None, require_routes=False
    ) -> kv.Checks:
        bundle = kv.Bundle(
            "dev",
            self.docs() if docs is None else docs,
            copy.deepcopy(self.secrets) if secrets is None else secrets,
            self.spin if spin is None else spin,
            list(self.migrations) if migrations is None else migrations,
        )
        return kv.Agreement(bundle, require_routes).run()

    def assertFailure(self, checks: kv.Checks, fragment: str):
        self.assertTrue(
            any(fragment in f for f in checks.failed),
            f"expected a failed check containing {fragment!r}; failed: {checks.failed}",
        )

    # -- the real manifests -------------------------------------------------------------

    def test_rendered_dev_overlay_and_secret_templates_are_valid(self):
        errors = [e for doc in self.dev + self.secrets for e in self.schema_errors(doc)]
        self.assertEqual(errors, [])

    def test_rendered_dev_overlay_agrees_with_spin_toml(self):
        checks = self.agreement()
        self.assertEqual(checks.failed, [])
        self.assertGreater(len(checks.passed), 50)

    # -- schemas ------------------------------------------------------------------------

    def test_unknown_field_in_kafka_spec_fails(self):
        kafka = find(self.docs(), "Kafka")
        # `replicas` moved to KafkaNodePool; kafka.strimzi.io/v1 no longer has it.
        kafka["spec"]["kafka"]["replicas"] = 3
        errors = self.schema_errors(kafka)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("spec.kafka", errors[0])
        self.assertIn("'replicas' was unexpected", errors[0])

    def test_zookeeper_section_fails(self):
        kafka = find(self.docs(), "Kafka")
        kafka["spec"]["zookeeper"] = {"replicas": 3, "storage": {"type": "ephemeral"}}
        self.assertIn("'zookeeper' was unexpected", " ".join(self.schema_errors(kafka)))

    def test_unknown_field_in_dapr_component_fails(self):
        component = find(self.docs(), "Component", "kafka-pubsub")
        component["spec"]["metdata"] = []
        self.assertIn("'metdata' was unexpected", " ".join(self.schema_errors(component)))

    def test_unknown_field_in_spinapp_fails(self):
        spinapp = find(self.docs(), "SpinApp")
        spinapp["spec"]["annotations"] = {"dapr.io/enabled": "true"}
        self.assertIn("'annotations' was unexpected", " ".join(self.schema_errors(spinapp)))

    def test_unknown_metadata_field_of_custom_resource_fails(self):
        topic = find(self.docs(), "KafkaTopic", "tasks")
        topic["metadata"]["label"] = {"a": "b"}
        self.assertIn("'label' was unexpected", " ".join(self.schema_errors(topic)))

    def test_wrong_type_in_custom_resource_fails(self):
        topic = find(self.docs(), "KafkaTopic", "tasks")
        topic["spec"]["partitions"] = "3"
        self.assertIn("spec.partitions", " ".join(self.schema_errors(topic)))

    def test_unknown_field_in_core_object_fails(self):
        sts = find(self.docs(), "StatefulSet")
        sts["spec"]["template"]["spec"]["containers"][0]["envs"] = []
        self.assertIn("'envs' was unexpected", " ".join(self.schema_errors(sts)))

    def test_wrong_api_version_of_custom_kind_fails(self):
        kafka = find(self.docs(), "Kafka")
        kafka["apiVersion"] = "kafka.strimzi.io/v1beta2"
        errors = self.schema_errors(kafka)
        self.assertEqual(len(errors), 1)
        self.assertIn("served versions: v1", errors[0])

    def test_wrong_api_version_of_core_kind_fails(self):
        sts = find(self.docs(), "StatefulSet")
        sts["apiVersion"] = "apps/v1beta2"
        self.assertIn("Couldn't find schema", " ".join(self.schema_errors(sts)))

    def test_core_kind_in_a_foreign_group_fails(self):
        sts = find(self.docs(), "StatefulSet")
        sts["apiVersion"] = "apps.example.com/v1"
        self.assertIn("no schema for API group", " ".join(self.schema_errors(sts)))

    def test_kind_without_crd_fails(self):
        bridge = {
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "KafkaBridge",
            "metadata": {"name": "b"},
            "spec": {},
        }
        self.assertIn("no CRD defines this kind", " ".join(self.schema_errors(bridge)))

    def test_strict_schema_closes_objects_but_keeps_preserved_ones_open(self):
        schema = kv.strict_schema(
            {
                "type": "object",
                "properties": {
                    "a": {"type": "object", "properties": {"b": {"type": "string", "nullable": True}}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "q": {"x-kubernetes-int-or-string": True},
                },
            }
        )
        validator = kv.jsonschema.Draft4Validator(schema)
        self.assertTrue(validator.is_valid({"a": {"b": None}, "free": {"x": 1}, "q": "50%"}))
        self.assertFalse(validator.is_valid({"a": {"c": 1}}))
        self.assertFalse(validator.is_valid({"z": 1}))
        self.assertFalse(validator.is_valid({"q": 1.5}))

    # -- agreement ----------------------------------------------------------------------

    def test_topic_name_mismatch_fails(self):
        docs = self.docs()
        find(docs, "KafkaTopic", "tasks")["metadata"]["name"] = "task-events"
        checks = self.agreement(docs)
        self.assertFailure(checks, "SpinApp topic_tasks (tasks) is a KafkaTopic")
        self.assertFailure(checks, "KafkaTopic tasks exists")
        self.assertFailure(checks, "allowedTopics are exactly the KafkaTopics")

    def test_topic_setting_mismatch_fails(self):
        docs = self.docs()
        find(docs, "ConfigMap", self._settings_name(docs))["data"]["topic_reminders"] = "reminder"
        checks = self.agreement(docs)
        self.assertFailure(checks, "SpinApp topic_reminders (reminder) is a KafkaTopic")
        self.assertFailure(checks, "spin.toml default topic_reminders matches the deployment")

    def test_topic_layout_mismatch_fails(self):
        docs = self.docs()
        find(docs, "KafkaTopic", "tasks-dlq")["spec"]["partitions"] = 3
        self.assertFailure(self.agreement(docs), "KafkaTopic tasks-dlq has 1 partitions")

    def test_missing_required_variable_fails(self):
        docs = self.docs()
        spinapp = find(docs, "SpinApp")
        spinapp["spec"]["variables"] = [v for v in spinapp["spec"]["variables"] if v["name"] != "jwt_secret"]
        self.assertFailure(
            self.agreement(docs), "required spin.toml variable jwt_secret is provided by the SpinApp"
        )

    def test_new_required_variable_in_spin_toml_fails(self):
        spin = copy.deepcopy(self.spin)
        spin.variables["oidc_issuer"] = {"required": True}
        self.assertFailure(self.agreement(spin=spin), "required spin.toml variable oidc_issuer")

    def test_variable_unknown_to_spin_toml_fails(self):
        docs = self.docs()
        find(docs, "SpinApp")["spec"]["variables"].append({"name": "db_url", "value": "postgres://x"})
        self.assertFailure(self.agreement(docs), "SpinApp variable db_url exists in spin.toml")

    def test_secret_variable_from_a_configmap_fails(self):
        docs = self.docs()
        variable(find(docs, "SpinApp"), "db_password")["valueFrom"] = {
            "configMapKeyRef": {"name": self._settings_name(docs), "key": "db_port"}
        }
        self.assertFailure(self.agreement(docs), "secret variable db_password comes from a Secret")

    def test_app_token_secret_mismatch_fails(self):
        docs = self.docs()
        find(docs, "SpinApp")["spec"]["podAnnotations"]["dapr.io/app-token-secret"] = "app-api-token"
        checks = self.agreement(docs)
        self.assertFailure(
            checks, "dapr.io/app-token-secret and Spin variable app_api_token use the same Secret"
        )
        self.assertFailure(checks, "annotation dapr.io/app-token-secret: Secret app-api-token key token")

    def test_spinapp_that_could_run_without_an_app_token_fails(self):
        check = "SpinApp cannot run without an app token"
        docs = self.docs()
        variable(find(docs, "SpinApp"), "app_api_token")["valueFrom"]["secretKeyRef"]["optional"] = True
        self.assertFailure(self.agreement(docs), check)
        docs = self.docs()
        spinapp = find(docs, "SpinApp")
        spinapp["spec"]["variables"] = [v for v in spinapp["spec"]["variables"] if v["name"] != "app_api_token"]
        self.assertFailure(self.agreement(docs), check)

    def test_opening_the_sidecar_routes_fails(self):
        docs = self.docs()
        find(docs, "SpinApp")["spec"]["variables"].append({"name": "allow_open_sidecar_routes", "value": "true"})
        self.assertFailure(self.agreement(docs), "allow_open_sidecar_routes is off")
        docs = self.docs()
        find(docs, "SpinApp")["spec"]["variables"].append({"name": "sidecar_loopback_only", "value": "false"})
        self.assertFailure(self.agreement(docs), "sidecar routes answer callers on the pod's loopback only")

    def test_secret_without_template_fails(self):
        secrets = copy.deepcopy(self.secrets)
        del find(secrets, "Secret", "todo-db")["data"]["password"]
        self.assertFailure(self.agreement(secrets=secrets), "Secret todo-db key password has a template")

    def test_database_host_mismatch_fails(self):
        docs = self.docs()
        find(docs, "ConfigMap", self._settings_name(docs))["data"][
            "db_host"
        ] = "postgres.todo.svc.cluster.local"
        self.assertFailure(self.agreement(docs), "db_host postgres.todo.svc.cluster.local is a Service")

    def test_database_port_mismatch_fails(self):
        docs = self.docs()
        find(docs, "Service", "todo-postgres")["spec"]["ports"][0]["port"] = 5433
        self.assertFailure(self.agreement(docs), "db_port 5432 is a port of Service todo-postgres")

    def test_allowed_outbound_host_mismatch_fails(self):
        spin = copy.deepcopy(self.spin)
        spin.components["tasks-api"]["allowed_outbound_hosts"] = ["postgres://localhost:5432"]
        self.assertFailure(self.agreement(spin=spin), "component tasks-api may connect to postgres://")

    def test_pubsub_name_mismatch_fails(self):
        docs = self.docs()
        find(docs, "Component", "kafka-pubsub")["metadata"]["name"] = "pubsub"
        checks = self.agreement(docs)
        self.assertFailure(checks, "SpinApp pubsub_name is the Kafka pub/sub component's name")
        self.assertFailure(checks, "Resiliency target kafka-pubsub is a Component")

    def test_consumer_group_mismatch_fails(self):
        docs = self.docs()
        pubsub = find(docs, "Component", "kafka-pubsub")
        next(m for m in pubsub["spec"]["metadata"] if m["name"] == "consumerGroup")["value"] = "todo"
        self.assertFailure(self.agreement(docs), "pubsub consumerGroup is the app id")

    def test_too_old_kafka_protocol_version_fails(self):
        docs = self.docs()
        pubsub = find(docs, "Component", "kafka-pubsub")
        pubsub["spec"]["metadata"] = [m for m in pubsub["spec"]["metadata"] if m["name"] != "version"]
        self.assertFailure(self.agreement(docs), "Kafka protocol version is one Kafka 4 accepts")

    def test_broker_address_mismatch_fails(self):
        docs = self.docs()
        pubsub = find(docs, "Component", "kafka-pubsub")
        next(m for m in pubsub["spec"]["metadata"] if m["name"] == "brokers")[
            "value"
        ] = "my-cluster-kafka-bootstrap:9092"
        self.assertFailure(self.agreement(docs), "is the Strimzi bootstrap service")

    def test_app_id_and_port_mismatch_fail(self):
        docs = self.docs()
        annotations = find(docs, "SpinApp")["spec"]["podAnnotations"]
        annotations["dapr.io/app-id"] = "todo"
        annotations["dapr.io/app-port"] = "3000"
        checks = self.agreement(docs)
        self.assertFailure(checks, "Dapr app id is todo-backend")
        self.assertFailure(checks, "Dapr app port is 80")

    def test_cron_binding_route_mismatch_fails(self):
        docs = self.docs()
        binding = find(docs, "Component", "outbox-relay")
        next(m for m in binding["spec"]["metadata"] if m["name"] == "route")["value"] = "/relay"
        self.assertFailure(self.agreement(docs), "cron binding outbox-relay posts to /outbox-relay")

    def test_routes_the_sidecar_calls_must_be_served_when_required(self):
        spin = copy.deepcopy(self.spin)
        spin.routes = ["/users/:user_id/tasks"]
        checks = self.agreement(spin=spin, require_routes=True)
        self.assertFailure(checks, "spin.toml serves /outbox-relay")
        self.assertFailure(checks, "spin.toml serves /api/events/tasks")
        spin.routes += ["/dapr/subscribe", "/api/events/...", "/outbox-relay", "/reminder-sweep"]
        self.assertEqual(self.agreement(spin=spin, require_routes=True).failed, [])

    def test_spin_route_matching(self):
        self.assertTrue(kv.route_matches("/api/:user_id/tasks", "/api/u1/tasks"))
        self.assertFalse(kv.route_matches("/api/:user_id/tasks", "/api/u1/tasks/7"))
        self.assertTrue(kv.route_matches("/api/...", "/api/events/tasks"))
        self.assertTrue(kv.route_matches("/outbox-relay", "/outbox-relay"))
        self.assertFalse(kv.route_matches("/outbox-relay", "/reminder-sweep"))

    def test_topic_replication_beyond_brokers_fails(self):
        docs = self.docs()
        find(docs, "KafkaTopic", "tasks")["spec"]["replicas"] = 3
        self.assertFailure(self.agreement(docs), "KafkaTopic tasks replicas fit 1 broker(s)")

    def test_node_pool_of_another_cluster_fails(self):
        docs = self.docs()
        find(docs, "KafkaNodePool")["metadata"]["labels"]["strimzi.io/cluster"] = "my-cluster"
        checks = self.agreement(docs)
        self.assertFailure(checks, "KafkaNodePool/dual-role belongs to Kafka todo-kafka")
        self.assertFailure(checks, "the node pools have brokers")

    def test_app_pod_labels_out_of_step_with_network_policies_fail(self):
        docs = self.docs()
        find(docs, "SpinApp")["spec"]["podLabels"]["app.kubernetes.io/name"] = "todo-spin"
        checks = self.agreement(docs)
        self.assertFailure(checks, "the app pods may reach StatefulSet/todo-postgres")
        self.assertFailure(checks, "networkPolicyPeers admit the app pods")
        self.assertFailure(checks, "a NetworkPolicy selects the app pods")

    def test_migration_missing_from_the_configmap_fails(self):
        checks = self.agreement(migrations=sorted([*self.migrations, "9999_new.sql"]))
        self.assertFailure(checks, "the migrations ConfigMap holds exactly the files of migrations/")

    def test_migrations_out_of_numeric_order_fail(self):
        docs = self.docs()
        names = ["1_setup.sql", "10_later.sql", "2_users.sql"]
        find(docs, "ConfigMap", self._name_with_prefix(docs, "todo-migrations"))["data"] = {
            n: "" for n in names
        }
        self.assertFailure(
            self.agreement(docs, migrations=names), "migration files sort by name in their numeric order"
        )

    # -- the whole pipeline on a broken copy --------------------------------------------

    def test_broken_manifest_in_a_copy_of_the_repository_fails_end_to_end(self):
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            repo.mkdir()
            shutil.copytree(
                REPO / "k8s", repo / "k8s", ignore=shutil.ignore_patterns("*.env", "runtime-config.toml")
            )
            shutil.copyfile(REPO / "spin.toml", repo / "spin.toml")
            if (REPO / "migrations").is_dir():
                shutil.copytree(REPO / "migrations", repo / "migrations")
            self.assertTrue(kv.validate_repo(repo, CRDS).ok)

            kafka = repo / "k8s" / "base" / "kafka" / "kafka.yaml"
            kafka.write_text(
                kafka.read_text().replace("    version: 4.2.0\n", "    version: 4.2.0\n    replicas: 3\n")
            )
            topic = repo / "k8s" / "base" / "kafka" / "topic-reminders.yaml"
            topic.write_text(topic.read_text().replace("name: reminders", "name: reminder"))
            report = kv.validate_repo(repo, CRDS)

        self.assertFalse(report.ok)
        self.assertEqual(report.kustomizations, 3)
        # The unknown field fails in every kustomization that renders it.
        self.assertEqual(len([e for e in report.schema_errors if "'replicas' was unexpected" in e]), 3)
        self.assertTrue(any("topic_reminders (reminders) is a KafkaTopic" in f for f in report.checks.failed))
        self.assertTrue(report.summary().startswith("k8s: FAILED"))

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _name_with_prefix(docs: list[dict], prefix: str) -> str:
        return next(
            d["metadata"]["name"]
            for d in docs
            if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(prefix)
        )

    def _settings_name(self, docs: list[dict]) -> str:
        return self._name_with_prefix(docs, "todo-backend-settings")


if __name__ == "__main__":
    unittest.main()
