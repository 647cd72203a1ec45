"""Deployment files under deploy/ and the root .dockerignore: they cannot be exercised here
(no Docker daemon, no cluster, no Envoy), so they are read and cross-checked.

Every YAML parses; every Kubernetes object passes the OpenAPI schemas that
`kubernetes-validate` bundles (strict: unknown fields fail); and the rules whose breakage
would only show in a rollout hold across files: probe ports and health service names,
termination grace vs. preStop + drain grace, selectors vs. pod labels, the HPA's target and
metric, the STREAMSTT_* names against ServerConfig, the Dockerfiles' stages, user, health
check and entry point against the real CLI parser, and the Envoy cluster's protocol and
health check. Nothing here loads the model: the tests take about 1.5 s.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
import yaml

from streamstt.server.settings import ServerConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = {"cpu": K8S / "overlays" / "cpu", "cuda": K8S / "overlays" / "cuda"}
MONITORING = K8S / "monitoring"
DOCKERFILES = {
    "cpu": DEPLOY / "docker" / "Dockerfile.cpu",
    "cuda": DEPLOY / "docker" / "Dockerfile.cuda",
}
ENVOY = DEPLOY / "envoy" / "envoy.yaml"
DOCS = ROOT / "docs" / "deployment.md"

GRPC_PORT = 50051
METRICS_PORT = 9090
READY_SERVICE = ""  # gRPC health name: ready for a NEW stream (NOT_SERVING at capacity)
LIVENESS_SERVICE = "liveness"  # SERVING from warm-up until exit, at capacity too
ACTIVE_STREAMS = "streamstt_active_streams"
# After the drain grace the server still stops gRPC (<= 1 s) and its scheduler, then exits.
EXIT_MARGIN_S = 2
MIN_K8S = "1.30"  # oldest Kubernetes the manifests are checked against (grpc probes: 1.27)
FIELDS = {f.name for f in fields(ServerConfig)}
ENV_NAME = re.compile(r"\bSTREAMSTT_([A-Z][A-Z0-9_]*)")
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources", "images"}
CUSTOM_GROUPS = {"monitoring.coreos.com"}  # CRDs: not in the bundled schemas, checked by hand


def variant_id(variant: str) -> str:
    """Test ids: a bare "cuda" id would pick up conftest's skip-without-a-GPU rule."""
    return f"{variant}-variant"


# --- loading --------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_docs(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def is_k8s_object(doc: object) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def is_kustomization(doc: dict) -> bool:
    return doc.get("kind") == "Kustomization"


def group_of(doc: dict) -> str:
    return doc["apiVersion"].rpartition("/")[0]


def resolve_kustomization(directory: Path) -> list[dict]:
    """The objects `kubectl apply -k directory` creates, for the subset of kustomize used here
    (resources and namespace; the test below rejects anything else, and compares with
    `kubectl kustomize` where kubectl exists)."""
    kustomization = load_docs(directory / "kustomization.yaml")[0]
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += resolve_kustomization(path)
        else:
            objects += [doc for doc in load_docs(path) if is_k8s_object(doc)]
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] != "Namespace":
                obj.setdefault("metadata", {})["namespace"] = namespace
    return objects


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def only(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_of(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def server_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    named = [c for c in containers if c["name"] == "streamstt"]
    assert named, "the Deployment has no container named streamstt"
    return named[0]


def cpu_quantity(value: object) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def seconds(value: str) -> float:
    """Envoy/protobuf Duration as YAML: '600s', '0.5s'."""
    assert isinstance(value, str) and value.endswith("s"), value
    return float(value[:-1])


def selector_matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- Dockerfiles ----------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.value):
                key, _, value = word.partition("=")
                values[key] = value
        return values


def read_dockerfile(path: Path) -> list[Stage]:
    """Instructions with line continuations joined and comments dropped, split into stages.
    Enough for these files: no heredocs, no escape-character directive."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit between continued lines too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, value = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = ""
    assert not pending, f"{path.name}: file ends inside a continued line"
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif instruction.keyword == "ARG" and not stages:
            continue  # ARGs before the first FROM parameterise the FROM lines
        else:
            assert stages, f"{path.name}:{instruction.line}: {instruction.keyword} before FROM"
            stages[-1].instructions.append(instruction)
    return stages


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(w, str) for w in parsed), value
    return parsed


def dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent
    folders wins; `!` re-includes."""
    excluded = False
    parts = path.split("/")
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


# --- every YAML, every object --------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert len(files) >= 10, files
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path.relative_to(ROOT)} is empty"
        if path.is_relative_to(K8S):
            for doc in docs:
                assert is_k8s_object(doc), f"{path.relative_to(ROOT)}: not a Kubernetes object"


def test_kubernetes_objects_pass_the_bundled_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    shipped = sorted(
        {tuple(map(int, v.split(".")[:2])) for v in kubernetes_validate.utils.all_versions()}
    )
    oldest = min(v for v in shipped if v >= tuple(map(int, MIN_K8S.split("."))))
    versions = [f"{oldest[0]}.{oldest[1]}", kubernetes_validate.latest_version()]
    checked = 0
    for path in yaml_files():
        if not path.is_relative_to(K8S):
            continue
        for doc in load_docs(path):
            if is_kustomization(doc) or group_of(doc) in CUSTOM_GROUPS:
                continue  # checked in their own tests
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    where = "/".join(str(p) for p in error.absolute_path)
                    pytest.fail(
                        f"{path.relative_to(ROOT)} {doc['kind']} (k8s {version}): "
                        f"{where}: {error.message}"
                    )
            checked += 1
    assert checked >= 9


def test_kustomizations_list_every_file_and_use_only_what_the_resolver_knows() -> None:
    listed: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        doc = load_docs(kustomization)[0]
        assert set(doc) <= KUSTOMIZE_KEYS, f"{kustomization}: {set(doc) - KUSTOMIZE_KEYS}"
        for entry in doc["resources"]:
            path = (kustomization.parent / entry).resolve()
            assert path.exists(), f"{kustomization}: {entry} does not exist"
            listed.add(path)
        objects = resolve_kustomization(kustomization.parent)
        images = {
            c["image"].split(":")[0]
            for d in by_kind(objects, "Deployment")
            for c in d["spec"]["template"]["spec"]["containers"]
        }
        for image in doc.get("images", []):
            assert image["name"] in images, f"{kustomization}: image {image['name']} unused"
    for path in K8S.rglob("*.yaml"):
        if path.name == "kustomization.yaml" or path.is_relative_to(MONITORING):
            continue
        assert path.resolve() in listed, f"{path.relative_to(ROOT)} is in no kustomization"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders_what_the_resolver_reads() -> None:
    for overlay in OVERLAYS.values():
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        objects = [d for d in yaml.safe_load_all(rendered) if d]

        def key(obj: dict) -> tuple:
            meta = obj["metadata"]
            return obj["kind"], meta["name"], meta.get("namespace")

        assert sorted(map(key, objects)) == sorted(map(key, resolve_kustomization(overlay)))


# --- the Deployments and what refers to them -----------------------------------------------


def health_probe(probe: dict):
    """The parsed `streamstt health` command of an exec probe (gRPC probes cannot do TLS)."""
    from streamstt.client.cli import build_parser

    command = probe["exec"]["command"]
    assert command[:2] == ["streamstt", "health"], command
    args = build_parser().parse_args(command[1:])
    assert args.func.__name__ == "cmd_health"
    return args


def assert_tls_and_tokens_from_secrets(spec: dict, container: dict, env: dict) -> None:
    """TLS and bearer tokens on by default, their files mounted from Secrets."""
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    for name in ("STREAMSTT_TLS_CERT", "STREAMSTT_TLS_KEY", "STREAMSTT_AUTH_TOKENS_FILE"):
        folder = env[name].rpartition("/")[0]
        assert mounts.get(folder) in secrets, f"{name}={env[name]} is not in a mounted Secret"


@pytest.mark.parametrize("variant", sorted(OVERLAYS), ids=variant_id)
def test_deployment_probes_ports_drain_and_security(variant: str) -> None:
    objects = resolve_kustomization(OVERLAYS[variant])
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = server_container(deployment)
    env = env_of(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    assert int(env["STREAMSTT_PORT"]) == ports["grpc"]
    assert int(env["STREAMSTT_METRICS_PORT"]) == ports["metrics"]
    assert env["STREAMSTT_HOST"] in ("0.0.0.0", "::", "[::]"), "must listen beyond loopback"
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") == "true":
        assert int(annotations["prometheus.io/port"]) == ports["metrics"]

    probes = {
        name: health_probe(container[name])
        for name in ("readinessProbe", "livenessProbe", "startupProbe")
    }
    for name, probe in probes.items():
        assert int(probe.server.rpartition(":")[2]) == ports["grpc"], f"{name}: {probe.server}"
        assert probe.ca, f"{name} must speak TLS, as the server does"
    assert probes["readinessProbe"].service == READY_SERVICE
    assert probes["livenessProbe"].service == LIVENESS_SERVICE
    assert probes["startupProbe"].service == LIVENESS_SERVICE
    assert_tls_and_tokens_from_secrets(spec, container, env)
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "model load needs time"

    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep_s = int(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep", command
        sleep_s = int(command[1])
    assert sleep_s >= 3, "endpoint removal needs a few seconds to reach balancers"
    grace_s = float(env.get("STREAMSTT_GRACE_S", ServerConfig.grace_s))
    finals_s = float(env.get("STREAMSTT_DRAIN_FINALS_S", ServerConfig.drain_finals_s))
    total = spec["terminationGracePeriodSeconds"]
    assert total >= sleep_s + grace_s + finals_s + EXIT_MARGIN_S, (
        f"terminationGracePeriodSeconds {total} < preStop {sleep_s} + grace {grace_s} "
        f"+ drain finals {finals_s} + {EXIT_MARGIN_S}: the drain would be cut by SIGKILL"
    )

    pod_security = spec.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    assert security["runAsNonRoot"] is True
    assert security.get("runAsUser", 1) != 0
    assert security["allowPrivilegeEscalation"] is False
    if security.get("readOnlyRootFilesystem"):
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be writable"
        assert env.get("HOME", "/tmp").startswith("/tmp")

    resources = container["resources"]
    assert "cpu" in resources["requests"] and "memory" in resources["requests"]
    assert "memory" in resources["limits"]
    cpus = cpu_quantity(resources["limits"].get("cpu", resources["requests"]["cpu"]))
    threads = int(env.get("STREAMSTT_THREADS", 0))
    assert 0 < threads <= max(1, cpus), "torch would size its pool from the node's cores"

    gpus = resources["limits"].get("nvidia.com/gpu")
    if variant == "cuda":
        assert int(gpus) == 1
        assert str(env["STREAMSTT_DEVICE"]).startswith("cuda")
    else:
        assert gpus is None
        assert env["STREAMSTT_DEVICE"] == "cpu"

    assert env.get("ORT_DISABLE_TELEMETRY") == "1", "onnxruntime would try to phone home"


@pytest.mark.parametrize("variant", sorted(OVERLAYS), ids=variant_id)
def test_selectors_hpa_and_pdb_point_at_the_pods(variant: str) -> None:
    objects = resolve_kustomization(OVERLAYS[variant])
    deployment = only(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(deployment["spec"]["selector"]["matchLabels"], labels)
    container = server_container(deployment)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}

    services = by_kind(objects, "Service")
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    assert headless, "a headless Service (clusterIP: None) is needed for dns:/// balancing"
    for service in services:
        assert selector_matches(service["spec"]["selector"], labels), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in port_names or target in port_names.values(), port
    for service in headless:
        grpc_ports = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_ports and grpc_ports[0]["port"] == GRPC_PORT

    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert selector_matches(pdb["spec"]["selector"]["matchLabels"], labels)

    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == ACTIVE_STREAMS
    assert metric["pods"]["target"]["type"] == "AverageValue"
    per_pod = float(metric["pods"]["target"]["averageValue"])
    max_streams = int(env_of(container).get("STREAMSTT_MAX_STREAMS", ServerConfig.max_streams))
    assert 0 < per_pod < max_streams, "scale out before replicas reach max_streams"
    assert hpa["spec"]["minReplicas"] >= 1


def test_the_hpa_metric_is_one_the_server_exports_and_the_adapter_serves() -> None:
    from streamstt.server.metrics import Metrics

    exported = {family.name for family in Metrics().registry.collect()}
    assert ACTIVE_STREAMS in exported

    (config_map,) = load_docs(MONITORING / "prometheus-adapter-rules.yaml")
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    served = [r for r in rules if r["name"]["as"] == ACTIVE_STREAMS]
    assert len(served) == 1
    rule = served[0]
    assert ACTIVE_STREAMS in rule["seriesQuery"]
    assert re.fullmatch(rule["name"]["matches"], ACTIVE_STREAMS)
    overrides = rule["resources"]["overrides"]
    assert overrides["pod"]["resource"] == "pod"
    assert overrides["namespace"]["resource"] == "namespace"
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_service_monitor_selects_a_service_with_its_port() -> None:
    (monitor,) = load_docs(MONITORING / "servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    services = by_kind(resolve_kustomization(OVERLAYS["cpu"]), "Service")
    selected = [
        s
        for s in services
        if selector_matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        and s["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    ]
    for endpoint in monitor["spec"]["endpoints"]:
        with_port = [
            s for s in selected if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}
        ]
        assert with_port, f"no selected Service has a port named {endpoint['port']}"
        assert endpoint.get("path", "/metrics") == "/metrics"


# --- settings names ------------------------------------------------------------------------


def test_streamstt_env_names_are_server_config_fields() -> None:
    sources = [*DOCKERFILES.values(), *yaml_files()]
    if DOCS.exists():
        sources.append(DOCS)
    seen = set()
    for path in sources:
        for name in ENV_NAME.findall(path.read_text()):
            seen.add(name)
            assert name.lower() in FIELDS, (
                f"{path.relative_to(ROOT)}: STREAMSTT_{name} is not a ServerConfig field"
            )
    assert {"HOST", "PORT", "METRICS_PORT", "GRACE_S"} <= seen


# --- Dockerfiles ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(DOCKERFILES), ids=variant_id)
def test_dockerfile_stages_user_healthcheck_and_entrypoint(variant: str) -> None:
    from streamstt.client.cli import build_parser

    path = DOCKERFILES[variant]
    stages = read_dockerfile(path)
    assert len(stages) >= 2, "multi-stage: build in one stage, run from a clean one"
    builder, runtime = stages[0], stages[-1]
    assert builder.name, "the builder stage needs a name for COPY --from"
    copies = [c.value for c in runtime.all("COPY") if c.value.startswith("--from=")]
    assert any(c.startswith(f"--from={builder.name} ") for c in copies), copies
    assert not any("pip install" in r.value for r in runtime.all("RUN")), "runtime installs"

    users = runtime.all("USER")
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].value.split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    deployment = only(resolve_kustomization(OVERLAYS[variant]), "Deployment")
    pod_user = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert pod_user == int(user), "the pod's runAsUser should be the image's USER"

    env = runtime.env()
    for name in env:
        if name.startswith("STREAMSTT_"):
            assert name[len("STREAMSTT_") :].lower() in FIELDS, name
    assert env["STREAMSTT_HOST"] == "0.0.0.0"
    exposed = {int(p.split("/")[0]) for e in runtime.all("EXPOSE") for p in e.value.split()}
    assert {int(env["STREAMSTT_PORT"]), int(env["STREAMSTT_METRICS_PORT"])} == exposed
    assert exposed == {GRPC_PORT, METRICS_PORT}
    assert env["STREAMSTT_DEVICE"] == variant
    assert env.get("ORT_DISABLE_TELEMETRY") == "1"
    assert [s.value for s in runtime.all("STOPSIGNAL")] == ["SIGTERM"]

    parser = build_parser()
    (healthcheck,) = runtime.all("HEALTHCHECK")
    options, _, command = healthcheck.value.partition(" CMD ")
    assert "--start-period=" in options, "the model load needs a start period"
    words = shlex.split(command.split("||")[0])
    words = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w) for w in words]
    assert words[:2] == ["streamstt", "health"], words
    args = parser.parse_args(words[1:])
    assert args.func.__name__ == "cmd_health"
    assert args.service == LIVENESS_SERVICE, "'' would mark a busy container unhealthy"
    assert int(args.server.rpartition(":")[2]) == GRPC_PORT
    assert args.ca and env["STREAMSTT_TLS_CERT"] and env["STREAMSTT_TLS_KEY"], "TLS by default"
    assert env["STREAMSTT_AUTH_TOKENS_FILE"], "bearer tokens by default"

    (entrypoint,) = runtime.all("ENTRYPOINT")
    command = exec_form(entrypoint.value) + [
        w for c in runtime.all("CMD") for w in exec_form(c.value)
    ]
    assert command[:2] == ["streamstt", "serve"]
    assert parser.parse_args(command[1:]).func.__name__ == "cmd_serve"

    index = [a.value for a in builder.all("ARG") if a.value.startswith("TORCH_INDEX_URL=")]
    assert len(index) == 1
    expected_index = "/whl/cpu" if variant == "cpu" else "/whl/cu"
    assert expected_index in index[0], index

    for copy in builder.all("COPY"):
        if copy.value.startswith("--"):
            continue
        *sources, _destination = copy.value.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
            assert not dockerignore_excludes(source.rstrip("/")), f".dockerignore drops {source}"


def test_dockerignore_keeps_the_package_and_drops_the_rest() -> None:
    for kept in (
        "pyproject.toml",
        "README.md",
        "server/app.py",
        "models/whisper.py",
        "client/cli/__init__.py",
        "server/stream/session.py",
        "protos/streamstt/v1/asr.proto",
    ):
        assert not dockerignore_excludes(kept), kept
    for dropped in (
        ".git/config",
        "tests/data/sample.wav",
        "bench-out/x.json",
        ".venv/bin/python",
        "server/__pycache__/app.cpython-311.pyc",
        "streamstt.egg-info/PKG-INFO",
        ".pytest_cache/v/cache",
        "docs/benchmarks.md",
    ):
        assert dockerignore_excludes(dropped), dropped


# --- Envoy ---------------------------------------------------------------------------------


def test_envoy_balances_grpc_over_the_headless_service() -> None:
    (config,) = load_docs(ENVOY)
    resources = config["static_resources"]
    clusters = {c["name"]: c for c in resources["clusters"]}

    (listener,) = resources["listeners"]
    (chain,) = listener["filter_chains"]
    tls = chain["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("tls.v3.DownstreamTlsContext"), "clients connect over TLS"
    assert tls["common_tls_context"]["tls_certificates"]
    (hcm,) = [f for f in chain["filters"] if f["name"].endswith("http_connection_manager")]
    manager = hcm["typed_config"]
    assert manager["@type"].endswith("http_connection_manager.v3.HttpConnectionManager")
    assert seconds(manager["stream_idle_timeout"]) > ServerConfig.idle_timeout_s
    assert manager["http_filters"][-1]["name"] == "envoy.filters.http.router"
    routes = [r for vh in manager["route_config"]["virtual_hosts"] for r in vh["routes"]]
    assert routes
    for route in routes:
        assert route["route"]["cluster"] in clusters
        assert seconds(route["route"]["timeout"]) == 0, "a route timeout would cut long streams"

    services = by_kind(resolve_kustomization(OVERLAYS["cpu"]), "Service")
    headless = {
        f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local"
        for s in services
        if s["spec"].get("clusterIP") == "None"
    }
    for cluster in clusters.values():
        assert cluster["type"] in ("STRICT_DNS", "LOGICAL_DNS")
        upstream = cluster["transport_socket"]["typed_config"]
        assert upstream["@type"].endswith("tls.v3.UpstreamTlsContext"), "the pods serve TLS"
        assert upstream["common_tls_context"]["validation_context"]["trusted_ca"]
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert options["@type"].endswith("upstreams.http.v3.HttpProtocolOptions")
        assert "http2_protocol_options" in options["explicit_http_config"], "gRPC needs HTTP/2"
        checks = [
            h["grpc_health_check"] for h in cluster["health_checks"] if "grpc_health_check" in h
        ]
        assert checks, "health checks must be gRPC health checks"
        assert all(c.get("service_name", "") == READY_SERVICE for c in checks)
        assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 0
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                assert address["address"] in headless, address
                assert address["port_value"] == GRPC_PORT

    type_urls = re.findall(r'"@type": (\S+)', ENVOY.read_text())
    assert type_urls and all(
        u.startswith("type.googleapis.com/envoy.") and ".v3." in u for u in type_urls
    )


@pytest.mark.skipif(shutil.which("envoy") is None, reason="envoy not installed")
def test_envoy_accepts_the_config() -> None:
    subprocess.run(["envoy", "--mode", "validate", "-c", str(ENVOY)], check=True, timeout=60)
