"""deploy/ cannot be built here (no Docker, no cluster), so CI checks it against the code instead.

Every command line in the Dockerfile, compose file, Kubernetes manifests and README is parsed by the
real CLI (typer's click option parsing: unknown options, missing values and bad types fail), and the
ports, probes, environment variables, secrets and paths are checked to agree with each other and
with what the server and client read. Server and client share no volume and the server gets no model
of its own: the round uploads the base model and its adapters (UploadCheckpoint).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from activedpo_client.cli import app as client_app
from activedpo_server.cli import app as server_app
from activedpo_server.server import SERVICE_NAME

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CLIS = {"activedpo-server": get_command(server_app), "activedpo-client": get_command(client_app)}
ENV_READ = {"ACTIVEDPO_TOKEN", "ACTIVEDPO_CACHE", "ACTIVEDPO_SERVER", "ACTIVEDPO_IMAGE"}  # checked below


def parse(argv: list[str]) -> tuple[str, dict]:
    """Parse ``argv`` (program first) with the real CLI; return (command path, its parameters)."""
    program, *args = argv
    cmd = CLIS[program]  # typer's (vendored) click objects
    ctx = cmd.make_context(program, list(args))
    path = [program]
    while hasattr(cmd, "resolve_command"):  # a group: go down to the subcommand
        protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
        rest = [*protected, *ctx.args]
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        path.append(name)
        ctx = cmd.make_context(name, rest, parent=ctx)
    return " ".join(path), ctx.params


def _variables_read(path: Path) -> set[str]:
    """Names the code reads from the environment: ``envvar=`` of an option, ``os.environ[…]``,
    ``os.environ.get(…)`` and ``os.getenv(…)`` (a name in a comment or a docstring does not count)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "envvar":
            values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            found |= {v.value for v in values if isinstance(v, ast.Constant)}
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            found |= {node.slice.value} if isinstance(node.slice, ast.Constant) else set()
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv") and node.args:
            found |= {node.args[0].value} if isinstance(node.args[0], ast.Constant) else set()
    return found


def test_the_code_reads_the_environment_variables_the_manifests_set():
    read = set().union(*(_variables_read(p) for p in DEPLOY.parent.glob("*/activedpo_*/**/*.py")))
    assert ENV_READ - {"ACTIVEDPO_IMAGE"} <= read  # the image variable is compose's own


# ---- Dockerfile ------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\w+)", line, re.I)
        if m:
            current = m.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def instruction(lines: list[str], name: str) -> list[str]:
    return [line[len(name) :].strip() for line in lines if line.upper().startswith(name + " ")]


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_dockerfile_targets_run_the_server_as_non_root_with_a_working_health_check(target):
    stages = dockerfile_stages()
    lines = stages[target]
    assert instruction(lines, "USER") == ["10001"]
    entry = yaml.safe_load(instruction(lines, "ENTRYPOINT")[0])
    cmd = yaml.safe_load(instruction(lines, "CMD")[0])
    path, params = parse([*entry, *cmd])
    assert path == "activedpo-server serve"
    assert params["host"] == "0.0.0.0" and str(params["state_dir"]) == "/var/lib/activedpo"
    assert instruction(lines, "EXPOSE") == [str(params["port"])]
    assert "/var/lib/activedpo" in instruction(lines, "VOLUME")[0]
    health = instruction(lines, "HEALTHCHECK")[0]
    probe = yaml.safe_load(health[health.index("CMD") + 3 :].strip())
    hpath, hparams = parse(probe)
    assert hpath == "activedpo-server health" and hparams["server"] == f"127.0.0.1:{params['port']}"
    if target == "gpu":
        assert params["device"] == "cuda"
        assert any("faiss-gpu" in r for r in instruction(lines, "RUN"))
    else:
        assert any("whl/cpu" in r and "torch==" in r for r in instruction(lines, "RUN"))
    base = stages["base"]
    assert any("useradd" in r and "10001" in r for r in instruction(base, "RUN"))
    for src in instruction(base, "COPY"):
        for part in src.split()[:-1]:
            assert (DEPLOY.parent / part.rstrip("/")).exists(), f"COPY {part}: no such path"


# ---- compose -----------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_server_round_and_world_agree():
    services = compose()["services"]
    assert set(services) == {"world", "server", "round"}
    parsed = {name: parse([*s["entrypoint"], *s["command"]]) for name, s in services.items()}
    assert parsed["world"][0] == "activedpo-client toyworld build"
    spath, sp = parsed["server"]
    rpath, rp = parsed["round"]
    assert spath == "activedpo-server serve" and rpath == "activedpo-client round"
    assert sp["host"] == "0.0.0.0"
    host, port = rp["server"].split(":")
    assert host == "server" and int(port) == sp["port"]
    assert services["server"]["ports"] == [f"127.0.0.1:{sp['port']}:{sp['port']}"]
    hc = services["server"]["healthcheck"]["test"]
    assert hc[0] == "CMD" and parse(hc[1:])[1]["server"] == f"127.0.0.1:{sp['port']}"
    # both sides hold the token; the round names no base on the server's disk: it uploads the SFT model
    for name in ("server", "round"):
        assert "ACTIVEDPO_TOKEN" in services[name]["environment"]
    assert rp["server_base"] is None
    assert services["round"]["environment"]["ACTIVEDPO_CACHE"] == "/var/cache/activedpo"
    assert str(rp["run_dir"]).startswith("/runs/")
    assert services["round"]["depends_on"]["server"]["condition"] == "service_healthy"
    assert services["round"]["depends_on"]["world"]["condition"] == "service_completed_successfully"
    for var in re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()):
        assert var in ENV_READ, var


def test_compose_server_shares_no_volume_and_gets_no_model_of_its_own():
    services = compose()["services"]
    _, sp = parse([*services["server"]["entrypoint"], *services["server"]["command"]])
    volumes = {name: {v.split(":")[0] for v in s.get("volumes", [])} for name, s in services.items()}
    # its state volume only (database, features, uploads), at its --state-dir; path loads are off
    assert services["server"]["volumes"] == [f"state:{sp['state_dir']}"]
    assert not sp["checkpoint_root"]
    assert not volumes["server"] & volumes["round"]
    assert volumes["world"] <= volumes["round"]  # the toy world is built for the round only
    builders = [n for n, s in services.items() if s["command"][:2] == ["toyworld", "build"]]
    assert builders == ["world"] and not volumes["world"] & volumes["server"]
    assert "depends_on" not in services["server"]  # it waits for no model: it starts at once
    assert set(compose()["volumes"]) == set().union(*volumes.values())  # none declared and unused


# ---- Kubernetes ----------------------------------------------------------------------------------


def k8s() -> dict[tuple[str, str], dict]:
    docs = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            assert doc["apiVersion"] and doc["metadata"]["name"], f
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_kubernetes_server_service_secret_and_job_fit_together():
    docs = k8s()
    sts = docs[("StatefulSet", "activedpo-server")]
    svc = docs[("Service", "activedpo-server")]
    job = docs[("Job", "activedpo-round")]
    secret = docs[("Secret", "activedpo-token")]
    pvc = docs[("PersistentVolumeClaim", "activedpo-runs")]

    pod = sts["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    path, sp = parse(["activedpo-server", *server["args"]])
    assert path == "activedpo-server serve" and sp["host"] == "0.0.0.0" and sp["device"] == "cuda"
    port = {p["name"]: p["containerPort"] for p in server["ports"]}["grpc"]
    assert port == sp["port"]
    assert server["readinessProbe"]["grpc"] == {"port": port, "service": SERVICE_NAME}
    assert server["livenessProbe"]["grpc"]["port"] == port and server["livenessProbe"]["grpc"].get("service", "") == ""
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    state = {m["name"]: m["mountPath"] for m in server["volumeMounts"] if "subPath" not in m}["state"]
    assert state == str(sp["state_dir"])
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["port"] == port and svc["spec"]["ports"][0]["targetPort"] == "grpc"

    (client,) = job["spec"]["template"]["spec"]["containers"]
    jpath, jp = parse([*client["command"], *client["args"]])
    assert jpath == "activedpo-client round"
    host, jport = jp["server"].split(":")
    assert host == svc["metadata"]["name"] and int(jport) == port
    for spec, container in ((pod, server), (job["spec"]["template"]["spec"], client)):
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        env = {e["name"]: e for e in container["env"]}
        ref = env["ACTIVEDPO_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
        assert set(env) <= ENV_READ
    # no volume is shared: the job has its own claim, the server only its state (with the uploads)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert claims == {"runs": pvc["metadata"]["name"]} and "volumes" not in pod
    assert server["volumeMounts"] == [{"name": "state", "mountPath": str(sp["state_dir"])}]
    cache = {e["name"]: e.get("value") for e in client["env"]}["ACTIVEDPO_CACHE"]
    assert cache in {m["mountPath"] for m in client["volumeMounts"]}


def test_kubernetes_server_gets_no_model_of_its_own():
    docs = k8s()
    pod = docs[("StatefulSet", "activedpo-server")]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    _, sp = parse(["activedpo-server", *server["args"]])
    assert not sp["checkpoint_root"]  # path loads off: the round uploads the base model
    assert "initContainers" not in pod  # nothing builds a model copy for it
    (client,) = docs[("Job", "activedpo-round")]["spec"]["template"]["spec"]["containers"]
    _, jp = parse([*client["command"], *client["args"]])
    assert jp["server_base"] is None


def all_command_lines():
    """(where, argv) of every command line in compose and the Kubernetes manifests, init containers included."""
    for name, s in compose()["services"].items():
        yield f"compose {name}", [*s["entrypoint"], *s["command"]]
        if "healthcheck" in s:
            yield f"compose {name} healthcheck", s["healthcheck"]["test"][1:]
    for (kind, name), doc in k8s().items():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            yield f"{kind}/{name} {c['name']}", [*c.get("command", ["activedpo-server"]), *c.get("args", [])]


def readme_command_lines():
    text = (DEPLOY / "README.md").read_text()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] in CLIS:
                yield argv


def test_every_command_line_parses_and_none_builds_a_model_for_the_server():
    lines = list(all_command_lines())
    assert len(lines) >= 6
    for where, argv in lines:
        path, _ = parse(argv)
        assert path != "activedpo-client toyworld build" or where == "compose world", where


def test_the_readme_command_lines_parse_and_show_a_base_the_server_already_has():
    parsed = [parse(argv) for argv in readme_command_lines()]
    serve = [p for path, p in parsed if path == "activedpo-server serve"]
    rounds = [p for path, p in parsed if path == "activedpo-client round"]
    assert serve and rounds
    roots = [str(r) for p in serve for r in p["checkpoint_root"] or ()]
    bases = [p["server_base"] for p in rounds if p["server_base"]]
    assert bases and all(any(b.startswith(r + "/") for r in roots) for b in bases)


def test_no_deploy_file_uses_a_former_option_name():
    for f in [*DEPLOY.glob("*"), *(DEPLOY / "k8s").glob("*")]:
        if f.is_file():
            assert "--lora-targets" not in f.read_text(), f


def test_the_readme_walks_through_every_file():
    readme = (DEPLOY / "README.md").read_text()
    for f in [*DEPLOY.glob("*"), *(DEPLOY / "k8s").glob("*")]:
        if f.is_file() and f.name != "README.md":
            assert f.name in readme, f"deploy/README.md does not explain {f.name}"


@pytest.mark.parametrize(
    "argv, error",
    [
        (["activedpo-server", "serve", "--state-dir", "/s", "--no-such-option"], "NoSuchOption"),
        (["activedpo-server", "serve", "--state-dir", "/s", "--port", "http"], "BadParameter"),
        (["activedpo-server", "serve"], "MissingParameter"),
        (["activedpo-client", "rounds"], "UsageError"),
    ],
)
def test_a_bad_command_line_would_be_caught(argv, error):
    with pytest.raises(Exception) as e:
        parse(argv)
    assert error in [c.__name__ for c in type(e.value).__mro__]
