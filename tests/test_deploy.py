"""The Kubernetes manifests: valid against the API schemas (offline), and consistent with the
service, its settings, the image and each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from service.index.shards import parse_shard
from service.settings import Settings
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes release still supported upstream when this was written, and the newest
# the bundled schemas know: a manifest valid for both uses no field removed or not yet added.
VERSIONS = ("1.32.0", "1.37.0")


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            if doc:
                found.append((str(path.relative_to(DEPLOY)), doc))
    return found


DOCS = documents()


def only(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in DOCS if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    """The pods that run the project's own images (not the optional Redis)."""
    specs = []
    for _, doc in DOCS:
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "redis":
            continue
        if doc["kind"] in ("Deployment", "Job"):
            specs.append((doc["kind"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            specs.append((doc["kind"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[f"{n}:{d['kind']}" for n, d in DOCS])
def test_every_manifest_is_valid_against_the_api_schema(
        name: str, doc: dict[str, Any], version: str) -> None:
    # Strict: a misspelt or misplaced field is an error, not silently ignored.
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_mistakes() -> None:
    deployment = only("Deployment", "cited-qa")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_kustomization_lists_every_manifest_and_names_every_image() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text("utf-8"))
    top = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(top)
    used = {c["image"].split(":")[0] for _, spec in pod_specs()
            for c in spec["containers"] + spec.get("initContainers", [])}
    assert used == {image["name"] for image in kustomization["images"]}


def test_probes_name_routes_the_service_has(fake_client: TestClient) -> None:
    container = only("Deployment", "cited-qa")["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        path = container[probe]["httpGet"]["path"]
        assert fake_client.get(path).status_code == 200, path
    assert container["ports"][0]["containerPort"] == 8000  # the image's CMD port


def test_every_pod_runs_as_non_root_on_a_read_only_root_filesystem() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    for kind, spec in pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, kind
        # The image's own user, so files the image ships (index, corpus) are readable.
        assert f"--uid {pod['runAsUser']}" in dockerfile, kind
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (kind, container["name"])
            assert sc["allowPrivilegeEscalation"] is False, (kind, container["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (kind, container["name"])
            # A read-only root needs a writable /tmp (temporary files, metrics of workers).
            if container["name"] != "seed-corpus":
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts, (kind, container["name"])


def test_the_server_has_resources_and_mounts_the_index_read_only() -> None:
    spec = only("Deployment", "cited-qa")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    data = next(m for m in container["volumeMounts"] if m["name"] == "data")
    assert data["readOnly"] is True


def test_config_and_secret_hold_only_settings_the_service_reads() -> None:
    config = only("ConfigMap", "cited-qa-config")["data"]
    secret = only("Secret", "cited-qa-secrets")["stringData"]
    fields = set(Settings.model_fields)
    for key in [*config, *secret]:
        assert key.startswith("QA_") and key[3:].lower() in fields, key
    # The values parse as the service would parse them from the environment.
    settings = Settings(**{k[3:].lower(): v for k, v in {**config, **secret}.items()})
    assert settings.admin_token is None  # empty: admin routes off, the index is read-only
    assert settings.index_dir == Path("/data/index")
    assert settings.corpus_dir == Path("/data/corpus")


def test_the_optional_redis_is_non_root_read_only_and_named_by_the_config() -> None:
    redis = only("Deployment", "cited-qa-redis")["spec"]["template"]["spec"]
    assert redis["securityContext"]["runAsNonRoot"] is True
    assert redis["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    service = only("Service", "cited-qa-redis")
    hint = (DEPLOY / "configmap.yaml").read_text("utf-8")
    assert f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/0" in hint


def test_names_and_selectors_fit_together() -> None:
    deployment = only("Deployment", "cited-qa")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert only("Service", "cited-qa")["spec"]["selector"].items() <= labels.items()
    assert only("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = only("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert only("HorizontalPodAutoscaler")["spec"]["minReplicas"] > (
        only("PodDisruptionBudget")["spec"]["minAvailable"])
    claims = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "PersistentVolumeClaim"}
    maps = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"] for _, d in DOCS if d["kind"] == "Secret"}
    for kind, spec in pod_specs():
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, kind
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, kind
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, kind


def test_builds_run_the_builder_cli() -> None:
    for kind, spec in pod_specs():
        if kind == "Deployment":
            continue
        build = next(c for c in spec["containers"] if c["name"] == "build")
        assert build["command"][:2] == ["python", "scripts/build_index.py"], kind
        assert (ROOT / build["command"][1]).is_file()
    cron = only("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_sharded_embedding_is_an_indexed_job_and_a_merge_over_one_folder() -> None:
    shards = only("Job", "cited-qa-embed-shards")
    spec = shards["spec"]
    assert spec["completionMode"] == "Indexed"
    command = spec["template"]["spec"]["containers"][0]["command"]
    of = int(command[command.index("--shard") + 1].split("/")[1])
    assert spec["completions"] == spec["parallelism"] == of
    for shard in range(of):  # what each pod's $(SHARD)/N becomes is a shard the CLI accepts
        assert parse_shard(command[command.index("--shard") + 1].replace(
            "$(SHARD)", str(shard))) == (shard, of)
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert "job-completion-index" in env["SHARD"]["valueFrom"]["fieldRef"]["fieldPath"]
    merge = only("Job", "cited-qa-merge-shards")["spec"]["template"]["spec"]["containers"][0]
    assert "--merge-shards" in merge["command"]
    folder = command[command.index("--shards-dir") + 1]
    assert merge["command"][merge["command"].index("--shards-dir") + 1] == folder
    assert folder.startswith("/data/")  # on the shared volume
