"""The KubeRay manifests (k8s/) and the image (deploy/): schemas, kustomize output, security properties.

Custom resources are validated against the KubeRay v1.7.0 CRDs (tests/data/k8s, unchanged but gzipped) with unknown
fields rejected; built-in kinds, object metadata and every embedded pod template against the Kubernetes schemas of
``kubernetes-validate`` in strict mode. The CRDs' CEL rules (x-kubernetes-validations) are not evaluated:
instead no manifest may set a field that carries one.

kustomize is not installed by CI, so ``build`` below implements the part of it these kustomizations use
(resources, components, namespace, labels, images, configMapGenerator without name hashes) and refuses
anything else. It is checked against recorded ``kubectl kustomize`` output for every feature it covers, and,
where ``kubectl`` is installed, against ``kubectl kustomize`` on the manifests themselves.
"""

from __future__ import annotations

import copy
import fnmatch
import gzip
import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import ROOT, data_path
from thresher.jobs import EXCLUDES, load_runtime_env

K8S = ROOT / "k8s"
DEPLOY = ROOT / "deploy"
ENTRY_POINTS = {"curate": K8S, "train": K8S / "train", "cluster": K8S / "cluster"}
KUBERNETES_VERSION = "1.31"  # the oldest Kubernetes the manifests are meant for
CRDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
# sha256 of each CRD file as copied from KubeRay v1.7.0 (ray-project/kuberay; tests/data/README.md), before gzip
CRD_SHA256 = {
    "ray.io_rayclusters.yaml": "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
    "ray.io_rayjobs.yaml": "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5",
}
KUSTOMIZE_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "namespace",
    "labels",
    "images",
    "configMapGenerator",
    "generatorOptions",
}
SECRETS = {"thresher-s3", "thresher-ray-token"}  # created with kubectl (docs/cluster.md), never in the manifests
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)


# --- the kustomize subset ---------------------------------------------------------------------------------


def _kustomization(directory: Path) -> dict:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(k) - KUSTOMIZE_KEYS
    assert not unsupported, f"{directory}: kustomization fields outside the tested subset: {unsupported}"
    return k


def _generate(directory: Path, k: dict) -> list[dict]:
    generators = k.get("configMapGenerator", [])
    assert not generators or k.get("generatorOptions", {}).get("disableNameSuffixHash") is True, directory
    maps = []
    for g in generators:
        data = {}
        for item in g.get("files", []):
            key, _, rel = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
            data[key] = (directory / rel).read_text()
        for item in g.get("literals", []):
            key, _, value = item.partition("=")
            data[key] = value
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]}, "data": data})
    return maps


def _set_images(node, images: list[dict]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    for image in images:
                        if re.split(r"[:@]", c.get("image", ""))[0] == image["name"]:
                            c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
            _set_images(value, images)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, images)


def _transform(docs: list[dict], k: dict) -> None:
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        if "namespace" in k:
            meta["namespace"] = k["namespace"]
        for label in k.get("labels", []):
            assert not label.get("includeSelectors") and not label.get("includeTemplates")
            meta.setdefault("labels", {}).update(label["pairs"])
        _set_images(doc, k.get("images", []))


def build(directory: Path) -> list[dict]:
    """``kustomize build directory``, for the fields in KUSTOMIZE_KEYS."""
    k = _kustomization(directory)
    docs: list[dict] = []
    for rel in k.get("resources", []):
        path = directory / rel
        docs += build(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    docs += _generate(directory, k)
    components = [_kustomization(directory / c) | {"dir": directory / c} for c in k.get("components", [])]
    for c in components:
        assert c["kind"] == "Component" and not c.get("resources"), c["dir"]
        docs += _generate(c["dir"], c)
    for c in components:
        _transform(docs, c)
    _transform(docs, k)
    return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))


@pytest.fixture(scope="module", params=sorted(ENTRY_POINTS))
def built(request) -> tuple[str, list[dict]]:
    return request.param, build(ENTRY_POINTS[request.param])


def _raw_manifests() -> list[Path]:
    return sorted(
        p
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml"
        and "apiVersion" in p.read_text()
        and yaml.safe_load(p.read_text()).get("kind") in CRDS
    )


# --- schemas ------------------------------------------------------------------------------------------------


def _strict(node):
    """Reject unknown fields: every object schema without additionalProperties or preserve-unknown-fields."""
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key in ("properties",):
            for child in node.get(key, {}).values():
                _strict(child)
        for key in ("items", "additionalProperties"):
            _strict(node.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                _strict(child)
    return node


@pytest.fixture(scope="module")
def crd_schemas() -> dict[str, dict]:
    """The v1 openAPIV3Schema of each KubeRay CRD, unchanged (the files' sha256 checked)."""
    schemas = {}
    for kind, name in CRDS.items():
        text = gzip.decompress(data_path(f"k8s/kuberay-crds-v1.7.0/{name}.gz").read_bytes())
        assert hashlib.sha256(text).hexdigest() == CRD_SHA256[name], f"{name} is not the KubeRay v1.7.0 CRD"
        crd = yaml.load(text, Loader=yaml.CSafeLoader)
        assert crd["spec"]["names"]["kind"] == kind and crd["spec"]["group"] == "ray.io"
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schemas[kind] = version["schema"]["openAPIV3Schema"]
    return schemas


@pytest.fixture(scope="module")
def crd_validators(crd_schemas) -> dict[str, jsonschema.Validator]:
    validators = {}
    for kind, crd_schema in crd_schemas.items():
        schema = copy.deepcopy(crd_schema)
        schema["properties"]["metadata"] = {
            "type": "object",
            "additionalProperties": True,
        }  # kubernetes-validate checks it
        schema["properties"].pop("status", None)  # written by the operator, never by us
        schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
        validators[kind] = jsonschema.Draft7Validator(_strict(schema))
    return validators


def _cel_guarded(schema: dict, path: tuple = ()) -> set[tuple]:
    """Paths (keys, "[]" for list items) of the fields that carry CEL rules (x-kubernetes-validations)."""
    found = {path} if schema.get("x-kubernetes-validations") else set()
    for key, child in schema.get("properties", {}).items():
        found |= _cel_guarded(child, (*path, key))
    if isinstance(schema.get("items"), dict):
        found |= _cel_guarded(schema["items"], (*path, "[]"))
    return found


def _paths(node, path: tuple = ()) -> set[tuple]:
    """Every path set in a document, in _cel_guarded's notation."""
    found = {path}
    if isinstance(node, dict):
        for key, child in node.items():
            found |= _paths(child, (*path, key))
    elif isinstance(node, list):
        for child in node:
            found |= _paths(child, (*path, "[]"))
    return found


def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(where, PodTemplateSpec) of every pod a RayCluster or RayJob makes."""
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec", spec)
    found = [("head", cluster["headGroupSpec"]["template"])]
    found += [(f"worker group {g['groupName']}", g["template"]) for g in cluster.get("workerGroupSpecs", [])]
    if "submitterPodTemplate" in spec:
        found.append(("submitter", spec["submitterPodTemplate"]))
    return found


def _validate_builtin(doc: dict) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise AssertionError(f"{doc['kind']} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}") from None


def validate(doc: dict, crd_validators) -> None:
    """Kubernetes would accept ``doc``, with unknown fields an error."""
    if doc["kind"] not in CRDS:
        _validate_builtin(doc)
        return
    assert doc["apiVersion"] == "ray.io/v1", doc["apiVersion"]
    errors = sorted(crd_validators[doc["kind"]].iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(
        f"{doc['kind']} {doc['metadata'].get('name')}: {e.message} at {'.'.join(map(str, e.path))}" for e in errors
    )
    _validate_builtin({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})  # ObjectMeta
    for where, template in _pod_templates(doc):
        try:
            _validate_builtin(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
            )
        except AssertionError as e:
            raise AssertionError(f"{doc['metadata']['name']} {where}: {e}") from None


# --- tests --------------------------------------------------------------------------------------------------


def test_every_built_object_is_valid(built, crd_validators):
    name, docs = built
    assert {d["kind"] for d in docs} >= {"ConfigMap"} and any(d["kind"] in CRDS for d in docs), name
    for doc in docs:
        validate(doc, crd_validators)


@pytest.mark.parametrize("path", _raw_manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_is_valid_on_its_own(path, crd_validators):
    doc = yaml.safe_load(path.read_text())
    validate(doc, crd_validators)
    images = {c["image"] for _, t in _pod_templates(doc) for c in t["spec"]["containers"]}
    assert images == {"thresher"}, f"{path}: every container names the one image `thresher` ({images})"


def test_no_manifest_sets_a_field_with_cel_rules(built, crd_schemas):
    """The schema checks above leave the CRDs' CEL rules out: no manifest may set a field that has one."""
    name, docs = built
    for kind, schema in crd_schemas.items():
        guarded = _cel_guarded(schema)
        assert guarded, kind  # the walk finds them (managedBy, deletionStrategy, ...)
        for doc in (d for d in docs if d["kind"] == kind):
            assert not guarded & _paths(doc), (name, doc["metadata"]["name"], guarded & _paths(doc))


def test_unknown_and_mistyped_fields_are_rejected(crd_validators):
    job = yaml.safe_load((K8S / "rayjob-curate.yaml").read_text())
    validate(job, crd_validators)
    mistakes = [
        lambda j: j["spec"].update(entrypont="thresher curate x"),
        lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(maxReplica=3),
        lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(
            resource={"limits": {"cpu": "1"}}
        ),
        lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"].update(metadata={"label": {"a": "b"}}),
        lambda j: j["metadata"].update(lables={"a": "b"}),
        lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(minReplicas="1"),
        lambda j: j["spec"]["rayClusterSpec"]["authOptions"].update(mode="password"),
        lambda j: j["spec"]["submitterPodTemplate"]["spec"]["securityContext"].update(runAsNonroot=True),
    ]
    for i, mistake in enumerate(mistakes):
        broken = copy.deepcopy(job)
        mistake(broken)
        with pytest.raises(AssertionError):
            validate(broken, crd_validators)
            pytest.fail(f"mistake {i} was accepted")


# Every feature of the subset, with the output of `kubectl kustomize` (kustomize v5.5.0) for it.
KUSTOMIZE_CASE = {
    "base/kustomization.yaml": """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [job.yaml]
components: [../comp]
configMapGenerator:
  - name: job-config
    files: [conf/a.yaml, renamed.yaml=conf/b.yaml]
generatorOptions: {disableNameSuffixHash: true}
""",
    "base/job.yaml": """
apiVersion: ray.io/v1
kind: RayJob
metadata: {name: job, labels: {own: label}}
spec:
  entrypoint: thresher curate /c/a.yaml
  submitterPodTemplate: {spec: {containers: [{name: s, image: thresher}]}}
  rayClusterSpec:
    headGroupSpec:
      template:
        metadata: {labels: {pod: label}}
        spec:
          containers: [{name: h, image: thresher}, {name: side, image: busybox:1.36}]
          initContainers: [{name: i, image: "thresher:old"}]
    workerGroupSpecs: [{groupName: w, template: {spec: {containers: [{name: w, image: thresher}]}}}]
""",
    "base/conf/a.yaml": "a: 1\n",
    "base/conf/b.yaml": "b: [x, y]\n",
    "comp/kustomization.yaml": """
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
namespace: ns
labels: [{pairs: {app.kubernetes.io/part-of: thresher}}]
images: [{name: thresher, newName: registry.example/team/thresher, newTag: "1.2"}]
configMapGenerator: [{name: settings, literals: [A=1, B=two=2]}]
generatorOptions: {disableNameSuffixHash: true}
""",
}
KUSTOMIZE_EXPECTED = """
apiVersion: v1
data: {a.yaml: "a: 1\\n", renamed.yaml: "b: [x, y]\\n"}
kind: ConfigMap
metadata: {labels: {app.kubernetes.io/part-of: thresher}, name: job-config, namespace: ns}
---
apiVersion: v1
data: {A: "1", B: two=2}
kind: ConfigMap
metadata: {labels: {app.kubernetes.io/part-of: thresher}, name: settings, namespace: ns}
---
apiVersion: ray.io/v1
kind: RayJob
metadata: {labels: {app.kubernetes.io/part-of: thresher, own: label}, name: job, namespace: ns}
spec:
  entrypoint: thresher curate /c/a.yaml
  rayClusterSpec:
    headGroupSpec:
      template:
        metadata: {labels: {pod: label}}
        spec:
          containers:
          - {image: registry.example/team/thresher:1.2, name: h}
          - {image: busybox:1.36, name: side}
          initContainers:
          - {image: registry.example/team/thresher:1.2, name: i}
    workerGroupSpecs:
    - groupName: w
      template: {spec: {containers: [{image: registry.example/team/thresher:1.2, name: w}]}}
  submitterPodTemplate: {spec: {containers: [{image: registry.example/team/thresher:1.2, name: s}]}}
"""


def _sorted_docs(text: str) -> list[dict]:
    return sorted((d for d in yaml.safe_load_all(text) if d), key=lambda d: (d["kind"], d["metadata"]["name"]))


def _kubectl_kustomize(directory: Path) -> str | None:
    """``kubectl kustomize directory`` where kubectl is installed (not in CI), else None."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_kustomize_subset_gives_kustomizes_output(tmp_path):
    for rel, text in KUSTOMIZE_CASE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text.lstrip())
    expected = _sorted_docs(KUSTOMIZE_EXPECTED)
    assert build(tmp_path / "base") == expected
    if (theirs := _kubectl_kustomize(tmp_path / "base")) is not None:
        assert _sorted_docs(theirs) == expected


def test_the_kustomize_subset_matches_kubectl_kustomize_on_the_manifests():
    if _kubectl_kustomize(K8S) is None:
        pytest.skip("kubectl is not installed: the subset is checked against recorded kustomize output above")
    for name, directory in ENTRY_POINTS.items():
        assert _sorted_docs(_kubectl_kustomize(directory)) == build(directory), name


def _containers(doc: dict):
    for where, template in _pod_templates(doc):
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            yield where, template["spec"], c


def _quantity(q) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q)).groups()
    return float(number) * units.get(unit, 1)


def test_no_credentials_in_the_manifests(built):
    name, docs = built
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created with kubectl, not shipped"
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert not [k for k in doc["data"] if SECRET_NAME.search(k) and "REGION" not in k], doc["data"]
        if doc["kind"] not in CRDS:
            continue
        for where, _, c in _containers(doc):
            for env in c.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env and env["valueFrom"]["secretKeyRef"]["name"] in SECRETS, (where, env)
            s3 = {e["name"]: e for e in c.get("env", [])}
            if c["name"] != "ray-job-submitter":  # every Ray node reads and writes S3
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    assert s3[key]["valueFrom"]["secretKeyRef"] == {"name": "thresher-s3", "key": key}, (where, c)
        cluster = doc["spec"].get("rayClusterSpec", doc["spec"])
        assert cluster["authOptions"] == {"mode": "token", "secretName": "thresher-ray-token"}, name


def test_pods_run_as_non_root_with_requests_and_limits(built):
    name, docs = built
    for doc in (d for d in docs if d["kind"] in CRDS):
        for where, pod, c in _containers(doc):
            pod_ctx, ctx = pod.get("securityContext", {}), c.get("securityContext", {})
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, (name, where)
            assert ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 1000, (name, where)
            assert ctx.get("allowPrivilegeEscalation") is False, (name, where, c["name"])
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], (name, where, c["name"])
            assert ctx.get("privileged") is not True
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            for resource in ("cpu", "memory"):
                assert _quantity(requests[resource]) <= _quantity(limits[resource]), (name, where, resource)
            if where != "head" and where != "submitter":
                assert pod.get("automountServiceAccountToken") is False, (name, where)
        cluster = doc["spec"].get("rayClusterSpec", doc["spec"])
        if cluster.get("enableInTreeAutoscaling"):  # the autoscaler sidecar KubeRay adds to the head
            options = cluster["autoscalerOptions"]
            assert options["securityContext"]["allowPrivilegeEscalation"] is False
            assert options["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert options["resources"]["limits"] and options["resources"]["requests"]


def test_jobs_clean_up_after_themselves_and_clusters_match_the_image(built):
    name, docs = built
    ray_version = _constraint("ray")
    for doc in (d for d in docs if d["kind"] in CRDS):
        cluster = doc["spec"].get("rayClusterSpec", doc["spec"])
        assert cluster["rayVersion"] == ray_version
        if doc["kind"] == "RayJob":
            spec = doc["spec"]
            assert spec["shutdownAfterJobFinishes"] is True
            assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
            assert spec["entrypoint"].startswith("thresher ")
    component = yaml.safe_load((K8S / "components" / "thresher" / "kustomization.yaml").read_text())
    (image,) = component["images"]
    expected = f"{image['newName']}:{image['newTag']}"
    for doc in (d for d in docs if d["kind"] in CRDS):
        assert {c["image"] for _, _, c in _containers(doc)} == {expected}, name


def _by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _mounted_config(docs, job) -> dict:
    """The config file a RayJob's entrypoint names, read from the ConfigMap mounted on its head."""
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    path = Path(job["spec"]["entrypoint"].split()[2])
    (mount,) = [m for m in head["containers"][0]["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    config_map = _by_kind(docs, "ConfigMap")[volume["configMap"]["name"]]
    return yaml.safe_load(config_map["data"][str(path.relative_to(mount["mountPath"]))])


def _referenced_config_maps(doc) -> set[str]:
    names = set()
    for _, pod, c in _containers(doc):
        names |= {e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e}
        names |= {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    return names


def test_curation_job_runs_a_valid_s3_config_on_an_autoscaling_cpu_cluster():
    from thresher.curate.config import parse_config

    docs = build(ENTRY_POINTS["curate"])
    (job,) = _by_kind(docs, "RayJob").values()
    assert job["spec"]["entrypoint"].startswith("thresher curate ")
    config = parse_config(_mounted_config(docs, job))
    assert all(p.startswith("s3://") for p in config.input.paths) and config.output.path.startswith("s3://")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] < group["maxReplicas"]
    assert _referenced_config_maps(job) <= set(_by_kind(docs, "ConfigMap"))


def test_training_job_has_a_gpu_worker_group_sized_to_the_config():
    docs = build(ENTRY_POINTS["train"])
    (job,) = _by_kind(docs, "RayJob").values()
    assert job["spec"]["entrypoint"].startswith("thresher train ")
    config = _mounted_config(docs, job)
    assert config["scaling"]["use_gpu"] is True
    for key in ("train", "validation"):
        assert config["data"][key].startswith("s3://")
    assert config["output"]["path"].startswith("s3://") and config["checkpoint"]["storage_path"].startswith("s3://")
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    _assert_gpu_group(group)
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == config["scaling"]["num_workers"]
    assert _referenced_config_maps(job) <= set(_by_kind(docs, "ConfigMap"))


def _assert_gpu_group(group) -> None:
    pod = group["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    (shm,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == shm["name"]]
    assert volume["emptyDir"]["medium"] == "Memory" and _quantity(volume["emptyDir"]["sizeLimit"]) >= 2**30


def test_standing_cluster_autoscales_cpu_and_gpu_workers_from_zero():
    docs = build(ENTRY_POINTS["cluster"])
    (cluster,) = _by_kind(docs, "RayCluster").values()
    assert cluster["metadata"]["name"] == "thresher"  # docs/cluster.md port-forwards svc/thresher-head-svc
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for g in groups.values():
        assert g["minReplicas"] == 0 < g["maxReplicas"]
    _assert_gpu_group(groups["gpu"])
    assert _referenced_config_maps(cluster) <= set(_by_kind(docs, "ConfigMap"))


SPILL_PARAM = "object-spilling-directory"  # rayStartParams key: `ray start --object-spilling-directory=...`
SPILL_ENV = {"RAY_object_spilling_config", "RAY_object_spilling_directory", "RAY_object_spilling_threshold"}


def _ray_nodes(doc: dict):
    """(where, rayStartParams, PodSpec, Ray container) of the head and every worker group of a RayCluster or RayJob."""
    cluster = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(f"worker group {g['groupName']}", g) for g in cluster.get("workerGroupSpecs", [])]
    for where, group in groups:
        pod = group["template"]["spec"]
        yield where, group.get("rayStartParams", {}), pod, pod["containers"][0]  # KubeRay runs Ray in the first


def _spill_problems(doc: dict) -> list[str]:
    """Why the Ray nodes of ``doc`` would not spill to a volume the pod's ephemeral-storage request accounts for."""
    problems = []
    for where, params, pod, c in _ray_nodes(doc):
        at = f"{doc['metadata']['name']} {where}"
        directory = params.get(SPILL_PARAM)
        if not directory:
            problems.append(f"{at}: no rayStartParams {SPILL_PARAM}")
            continue
        if SPILL_ENV & {e["name"] for e in c.get("env", [])}:
            problems.append(f"{at}: spilling configured by environment as well as by rayStartParams")
        mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == directory.rstrip("/")]
        if len(mounts) != 1 or mounts[0].get("readOnly") or mounts[0].get("subPath"):
            problems.append(f"{at}: {directory} is not one writable volume mount of {c['name']} ({mounts})")
            continue
        volumes = [v for v in pod.get("volumes", []) if v["name"] == mounts[0]["name"]]
        if len(volumes) != 1:
            problems.append(f"{at}: no volume {mounts[0]['name']}")
            continue
        volume = volumes[0]
        if "emptyDir" in volume:  # on the node's disk: counted against the pod's ephemeral storage
            if volume["emptyDir"].get("medium"):
                problems.append(f"{at}: the spill volume is in memory ({volume['emptyDir']['medium']})")
            if "sizeLimit" not in volume["emptyDir"]:
                problems.append(f"{at}: the spill emptyDir has no sizeLimit")
                continue
            size = on_node_disk = _quantity(volume["emptyDir"]["sizeLimit"])
        elif "ephemeral" in volume:  # a claim of its own, outside the pod's ephemeral storage
            size = _quantity(volume["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"])
            on_node_disk = 0
        else:
            problems.append(f"{at}: the spill volume is neither an emptyDir nor a generic ephemeral volume")
            continue
        resources = c.get("resources", {})
        request = resources.get("requests", {}).get("ephemeral-storage")
        limit = resources.get("limits", {}).get("ephemeral-storage")
        if request is None or limit is None:
            problems.append(f"{at}: no ephemeral-storage request and limit on {c['name']}")
        elif not on_node_disk < _quantity(request) <= _quantity(limit):
            # The request reserves the spill volume plus room for Ray's logs and session dir: a request below
            # the sizeLimit would let the scheduler overcommit the node's disk, and spilling pods evict others.
            problems.append(
                f"{at}: not spill {on_node_disk:.0f} B < ephemeral-storage request {request} <= limit {limit}"
            )
        shm = [v for v in pod.get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"]
        if shm and size <= max(_quantity(v["emptyDir"].get("sizeLimit", 0)) for v in shm):
            problems.append(f"{at}: the spill volume is no larger than the object store's shared memory")
    return problems


def test_every_ray_node_spills_to_a_volume_its_ephemeral_storage_request_covers(built):
    name, docs = built
    ray_docs = [d for d in docs if d["kind"] in CRDS]
    assert ray_docs, name
    for doc in ray_docs:
        assert not _spill_problems(doc), (name, _spill_problems(doc))
        for where, _, pod, _container in _ray_nodes(doc):
            (spill,) = [v for v in pod["volumes"] if v["name"] == "ray-spill"]
            if where.startswith("worker group cpu"):  # curation work: a node's share of the corpus, see the YAML
                assert _quantity(spill["emptyDir"]["sizeLimit"]) >= 100 * 2**30, (name, where)


def test_spill_misconfigurations_are_caught():
    job = yaml.safe_load((K8S / "rayjob-curate.yaml").read_text())
    assert not _spill_problems(job)

    def cluster(j):
        return j["spec"]["rayClusterSpec"]

    def worker(j):
        return cluster(j)["workerGroupSpecs"][0]

    def container(j):
        return worker(j)["template"]["spec"]["containers"][0]

    def spill(j):
        return next(v for v in worker(j)["template"]["spec"]["volumes"] if v["name"] == "ray-spill")

    mistakes = [
        lambda j: worker(j)["rayStartParams"].pop(SPILL_PARAM),
        lambda j: cluster(j)["headGroupSpec"]["rayStartParams"].update({SPILL_PARAM: "/tmp/spill"}),
        lambda j: container(j)["volumeMounts"].pop(),
        lambda j: container(j)["env"].append({"name": "RAY_object_spilling_config", "value": "{}"}),
        lambda j: spill(j)["emptyDir"].update(medium="Memory"),
        lambda j: spill(j)["emptyDir"].pop("sizeLimit"),
        lambda j: spill(j)["emptyDir"].update(sizeLimit="200Gi"),
        lambda j: spill(j)["emptyDir"].update(sizeLimit="1Gi"),
        lambda j: container(j)["resources"]["requests"].pop("ephemeral-storage"),
        lambda j: container(j)["resources"]["limits"].update({"ephemeral-storage": "50Gi"}),
    ]
    for i, mistake in enumerate(mistakes):
        broken = copy.deepcopy(job)
        mistake(broken)
        assert _spill_problems(broken), f"mistake {i} was accepted"
    # A generic ephemeral volume is a claim of its own: the ephemeral-storage request need not cover it.
    ephemeral = copy.deepcopy(job)
    spill(ephemeral).pop("emptyDir")
    spill(ephemeral)["ephemeral"] = {
        "volumeClaimTemplate": {
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-nvme",
                "resources": {"requests": {"storage": "500Gi"}},
            }
        }
    }
    assert not _spill_problems(ephemeral)


# --- the image ----------------------------------------------------------------------------------------------


def _constraint(package: str) -> str:
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in .ci/constraints.txt")


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    known = {"FROM", "ARG", "ENV", "LABEL", "WORKDIR", "COPY", "RUN", "USER", "ENTRYPOINT", "CMD", "EXPOSE"}
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            op, _, args = line.strip().partition(" ")
            assert op in known, f"unexpected Dockerfile instruction {op}"
            instructions.append((op, args.strip()))
    return instructions


def test_dockerfile_builds_on_the_ray_image_ci_tests_with():
    instructions = _dockerfile()
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)
    (base,) = [a for op, a in instructions if op == "FROM"]
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(-gpu|-cpu|-cu\d+)?", image)
    assert match, image
    ray_version, python = match.group(1), f"{match.group(2)}.{match.group(3)}"
    assert ray_version == _constraint("ray")
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}", "the image's Python is the one tests run on"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray_requirement = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "ray")
    assert ray_requirement.specifier.contains(ray_version)
    assert Requirement("python" + project["requires-python"]).specifier.contains(python + ".0")
    torch = next(Requirement(d) for d in project["optional-dependencies"]["train"] if Requirement(d).name == "torch")
    assert torch.specifier.contains(args["TORCH_VERSION"])
    run = " ".join(a for op, a in instructions if op == "RUN")
    assert '"torch==${TORCH_VERSION}"' in run and '-c .ci/constraints.txt ".[train,augment]"' in run
    assert instructions[-1] == ("USER", "1000:100")  # non-root, numeric: runAsNonRoot can check it


def _docker_ignored(rel: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore of ``name`` and ``**/name`` patterns leaves the path ``rel`` out of the context."""
    parts = rel.split("/")
    for pattern in patterns:
        assert "/" not in pattern.removeprefix("**/") and not pattern.startswith("!"), f"untested form: {pattern}"
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                return True
        elif fnmatch.fnmatchcase(parts[0], pattern):
            return True
    return False


def test_the_image_gets_the_packages_and_not_the_checkouts_clutter():
    instructions = _dockerfile()
    assert [a for op, a in instructions if op == "COPY"] == ["--chown=1000:100 . ."]  # the filtered context
    ops = [op for op, _ in instructions]
    assert "torch==" in instructions[ops.index("RUN")][1] and ops.index("RUN") < ops.index("COPY")  # its own layer
    patterns = [p for p in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if p and p[0] != "#"]
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [ROOT / folder / "thresher" for folder in find["where"]]
    assert packages == [ROOT / "src" / "thresher"] and (packages[0] / "cli.py").is_file()
    needed = [f for d in packages for f in d.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    needed += [
        ROOT / "pyproject.toml",
        ROOT / "README.md",
        ROOT / ".ci" / "constraints.txt",
        ROOT / "examples" / "quickstart.yaml",
    ]
    for f in needed:
        assert not _docker_ignored(f.relative_to(ROOT).as_posix(), patterns), f
    for rel in (
        ".venv/bin/python",
        ".git/HEAD",
        "out/run1/manifest.json",
        "tests/test_k8s.py",
        "bench/results/x.md",
        "src/thresher/__pycache__/cli.cpython-311.pyc",
        "thresher.egg-info/PKG-INFO",
        "k8s/kustomization.yaml",
    ):
        assert _docker_ignored(rel, patterns), rel


def test_runtime_env_examples_match_what_submit_sends_and_the_dependencies():
    plain = load_runtime_env(str(DEPLOY / "runtime-env.yaml"))  # fields and types as Ray's RuntimeEnv takes them
    assert plain == {"working_dir": ".", "excludes": EXCLUDES}
    stock = load_runtime_env(str(DEPLOY / "runtime-env-stock-ray.yaml"))
    assert stock["working_dir"] == "." and stock["excludes"] == EXCLUDES
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (
        stock["pip"]
        == [d for d in project["dependencies"] if Requirement(d).name != "ray"]
        + project["optional-dependencies"]["augment"]
    )
