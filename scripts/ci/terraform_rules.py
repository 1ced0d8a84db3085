"""Delivery rules that fmt, validate, checkov and actionlint cannot see, checked offline.

Each rule is a mistake that would only show on a real Google Cloud project or a real
deploy: the first apply failing, a plan that wants to replace the database forever, a push
subscription every message of which is refused, a pull request acting as the production
admin, an image that is not the one that was audited, a deploy that does not wait for CI,
traffic on a canary nobody tested. Run with the delivery tools' Python (python-hcl2, PyYAML):

    .venv-tools/bin/python scripts/ci/terraform_rules.py              # check the repository
    .venv-tools/bin/python scripts/ci/terraform_rules.py --self-test  # rules catch their mistakes

Prints one ok:/FAIL: line per rule and exits 1 if any rule failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hcl2
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULE = "infra/modules/latam"
ENV_ROOTS = {"infra/envs/staging": "staging", "infra/envs/prod": "production"}
Files = Mapping[str, str]


def load_files(root: Path) -> dict[str, str]:
    """Every file the rules read, by path relative to the repository."""
    paths = [*root.joinpath("infra").rglob("*.tf"), root / "Dockerfile", root / ".dockerignore"]
    paths += [root / env / ".terraform.lock.hcl" for env in ENV_ROOTS]
    paths += sorted(root.joinpath(".github/workflows").glob("*.yml"))
    paths.append(root / "infra/README.md")
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in paths if p.exists()}


def parse(files: Files, path: str) -> dict[str, Any]:
    parsed: dict[str, Any] = hcl2.load(io.StringIO(files[path]))
    return parsed


def resources(files: Files, kind: str) -> dict[str, dict[str, Any]]:
    """Resources of one type in the module, by name."""
    found: dict[str, dict[str, Any]] = {}
    for path in files:
        if path.startswith(MODULE) and path.endswith(".tf"):
            for block in parse(files, path).get("resource", []):
                found.update(block.get(kind, {}))
    return found


def first(value: Any) -> Any:
    """python-hcl2 wraps attribute values and blocks in lists."""
    return value[0] if isinstance(value, list) and value else value


def local_map(files: Files, name: str) -> str:
    """The source text of `name = { ... }` inside a locals block of the module."""
    for path, text in files.items():
        if path.startswith(MODULE) and path.endswith(".tf"):
            match = re.search(rf"^\s*{name}\s*=\s*(.*?)^\s*\}}", text, re.M | re.S)
            if match:
                return match.group(1)
    return ""


# --- the rules: each returns a list of problems ---


def cloudsql_ip_type(files: Files) -> list[str]:
    """#1: the connector dials the address type the instance has."""
    problems = []
    for name, instance in resources(files, "google_sql_database_instance").items():
        ip = first(first(first(instance["settings"])["ip_configuration"]))
        public = first(ip.get("ipv4_enabled", [False])) is True
        private = "private_network" in ip
        want = "PUBLIC" if public and not private else "PRIVATE"
        env = local_map(files, "common_env")
        match = re.search(r'LATAM_CLOUDSQL_IP_TYPE\s*=\s*"(\w+)"', env)
        got = match.group(1) if match else "PRIVATE (the application's default)"
        if got != want:
            problems.append(f"{name}: instance reachable by {want} address, Cloud Run dials {got}")
    return problems


def slos_wait_for_metrics(files: Files) -> list[str]:
    """#2: nothing that names a latam_* metric fails to apply before the metric exists:
    SLOs wait for var.slos_enabled, PromQL conditions skip metric validation."""
    problems = []
    for name, slo in resources(files, "google_monitoring_slo").items():
        gate = str(slo.get("count", "")) + str(slo.get("for_each", ""))
        if "var.slos_enabled" not in gate and "local.slos" not in gate:
            problems.append(f"google_monitoring_slo.{name} is not behind var.slos_enabled")
    if "var.slos_enabled" not in local_map(files, "slos"):
        problems.append("local.slos (the SLOs' for_each) is not behind var.slos_enabled")
    for name, policy in resources(files, "google_monitoring_alert_policy").items():
        text = str(policy)
        if "prometheus.googleapis.com" in text and "slos_enabled" not in text:
            problems.append(f"alert policy {name} filters on a latam_* metric without the gate")
        if "condition_prometheus_query_language" in text and (
            not re.search(r"'disable_metric_validation': \[?True", text)
        ):
            problems.append(
                f"alert policy {name}: a PromQL condition on metrics that may not exist yet "
                "needs disable_metric_validation = true"
            )
    return problems


def disk_growth_ignored(files: Files) -> list[str]:
    """#3: an autoresized disk never makes a plan replace the instance."""
    problems = []
    for name, instance in resources(files, "google_sql_database_instance").items():
        settings = first(instance["settings"])
        if first(settings.get("disk_autoresize", [False])) is True:
            ignored = str(first(instance.get("lifecycle", [{}])).get("ignore_changes", ""))
            if "settings[0].disk_size" not in ignored:
                problems.append(
                    f"{name}: disk_autoresize without ignore_changes on settings[0].disk_size"
                )
    return problems


def push_audience_matches(files: Files) -> list[str]:
    """#4: the token's audience is the very string the worker compares with."""
    problems = []
    worker_env = local_map(files, "push_env")
    match = re.search(r"LATAM_PUBSUB_PUSH_AUDIENCE\s*=\s*(\S+)", worker_env)
    for name, sub in resources(files, "google_pubsub_subscription").items():
        text = str(sub.get("dynamic", "")) + str(sub.get("push_config", ""))
        found = re.search(r"'audience': \['([^']+)'\]", text)
        if not found:
            continue
        audience = found.group(1).strip("${}")
        if not match or match.group(1) != audience:
            expected = match.group(1) if match else "nothing"
            problems.append(f"{name}: subscription audience {audience}, worker expects {expected}")
    return problems


def uptime_agent_may_invoke(files: Files) -> list[str]:
    """#4: an authenticated uptime check's service agent may invoke the API."""
    checks = resources(files, "google_monitoring_uptime_check_config")
    if "service_agent_authentication" not in str(checks):
        return []
    agent = re.search(r'monitoring_agent\s*=\s*"([^"]+)"', "\n".join(files.values()))
    if not agent or "@gcp-sa-monitoring-notification.iam.gserviceaccount.com" not in agent.group(1):
        return ["local.monitoring_agent is not the Monitoring notification service agent"]
    for binding in resources(files, "google_cloud_run_v2_service_iam_member").values():
        member = str(binding.get("member"))
        if "run.invoker" in str(binding.get("role")) and "local.monitoring_agent" in member:
            return []
    return [
        "uptime check authenticates as the Monitoring agent, which has no run.invoker on the API"
    ]


ALLOWED_SUBJECTS = {
    "planner": {"pull_request"},
    "builder": {"build"},
    "terraform": {"environment", "plan"},
    "deployer": {"environment"},
}


def federation_least_privilege(files: Files) -> list[str]:
    """#8: a pull request never acts as the admin or the deployer."""
    problems = []
    text = "\n".join(t for p, t in files.items() if p.startswith(MODULE) and p.endswith(".tf"))
    if "attribute.repository/" in text and "principalSet://" in text:
        problems.append("an account is bound to every identity of the repository (principalSet)")
    for name, binding in resources(files, "google_service_account_iam_member").items():
        federation = "workloadIdentityUser" in str(binding.get("role"))
        if federation and "local.wif_bindings" not in str(binding.get("for_each", "")):
            problems.append(f"federation binding {name} bypasses local.wif_bindings")
    pairs = re.findall(
        r'"(\w+)/\w+"\s*=\s*\{[^}]*subject\s*=\s*local\.github_subjects\.(\w+)', text
    )
    if not pairs:
        problems.append("no subject-bound federation (local.wif_bindings) found")
    for account, subject in pairs:
        if subject not in ALLOWED_SUBJECTS.get(account, set()):
            problems.append(f"{account} may be used by GitHub subject {subject}")
    return problems


def image_is_what_was_audited(files: Files) -> list[str]:
    """#10: base image by digest, dependencies from the hash-checked lock."""
    problems = []
    dockerfile = files.get("Dockerfile", "")
    for line in dockerfile.splitlines():
        image = re.match(r"\s*(?:FROM\s+(\S+)|ARG\s+\w*IMAGE\w*=(\S+))", line)
        ref = image and (image.group(1) or image.group(2))
        if ref and not ref.startswith("$") and "@sha256:" not in ref:
            problems.append(f"Dockerfile: {ref} is not pinned by digest")
    runs = re.findall(r"^RUN\b(?:.*\\\n)*.*$", dockerfile, re.M)
    if not any("--require-hashes" in r for r in runs) or not any("--no-deps" in r for r in runs):
        problems.append("Dockerfile: dependencies are not installed from the hash-checked lock")
    if "!requirements/runtime.txt" not in files.get(".dockerignore", ""):
        problems.append(".dockerignore excludes requirements/runtime.txt")
    return problems


def providers_locked(files: Files) -> list[str]:
    """#10: every root commits its provider lock, and its state prefix is what CI uses."""
    problems = []
    workflows = "\n".join(t for p, t in files.items() if p.startswith(".github/"))
    for env_root, environment in ENV_ROOTS.items():
        lock = files.get(f"{env_root}/.terraform.lock.hcl", "")
        main = files.get(f"{env_root}/main.tf", "")
        for source in re.findall(r'source\s*=\s*"([\w-]+/[\w-]+)"', main):
            if f'"registry.terraform.io/{source}"' not in lock:
                problems.append(f"{env_root}: {source} is not in .terraform.lock.hcl")
        prefix = re.search(r"prefix=(latam/[\w-]+)", main)
        if not prefix or prefix.group(1) != f"latam/{environment}":
            problems.append(f"{env_root}: state prefix comment is not latam/{environment}")
        if workflows and "prefix=latam/$ENVIRONMENT" not in workflows.replace('"', ""):
            problems.append("workflows do not use the state prefix latam/$ENVIRONMENT")
    return problems


def checkov_skips_explained(files: Files) -> list[str]:
    """Done-when: checkov has no unexplained skip (inline reason, and listed in the README)."""
    problems = []
    readme = files.get("infra/README.md", "")
    for path, text in files.items():
        for check_id, reason in re.findall(r"#checkov:skip=(CKV\w+):?(.*)", text):
            if len(reason.strip()) < 20:
                problems.append(f"{path}: {check_id} skipped without a reason")
            if f"{check_id} " not in readme and f"{check_id} |" not in readme:
                problems.append(f"{path}: {check_id} skipped but not listed in infra/README.md")
    return problems


def workflow(files: Files, name: str) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(files.get(f".github/workflows/{name}", "")) or {}
    return loaded


def steps_text(job: dict[str, Any]) -> list[str]:
    """Each step's own text (uses, with, if, run), as written."""
    return [
        " ".join(str(step.get(key, "")) for key in ("name", "uses", "with", "if", "run"))
        for step in job.get("steps", [])
    ]


def deploy_is_gated(files: Files) -> list[str]:
    """#9: nothing deploys unless CI and security passed on the very commit."""
    problems = []
    for name in ("ci.yml", "security.yml"):
        triggers = workflow(files, name).get(True, {})  # YAML 1.1 reads `on` as True
        if "workflow_call" not in triggers:
            problems.append(f"{name} cannot be called by deploy.yml (no workflow_call)")
        if "push" in triggers:
            problems.append(f"{name} also runs on push, beside deploy.yml's own call")
    jobs = workflow(files, "deploy.yml").get("jobs", {})
    for gate in ("ci", "security"):
        if f"/.github/workflows/{gate}.yml" not in str(jobs.get(gate, {}).get("uses", "")):
            problems.append(f"deploy.yml has no `{gate}` job calling {gate}.yml")

    def upstream(job: str) -> set[str]:
        needs = jobs.get(job, {}).get("needs", [])
        direct = {needs} if isinstance(needs, str) else set(needs)
        return direct.union(*(upstream(n) for n in direct)) if direct else set()

    for job in jobs:
        if job not in ("ci", "security") and not {"ci", "security"} <= upstream(job):
            problems.append(f"deploy.yml job {job} does not wait for ci and security")
    return problems


def shipped_digest_is_scanned(files: Files) -> list[str]:
    """#9: Trivy scans the digest that was pushed, before it is signed or deployed."""
    build = workflow(files, "deploy.yml").get("jobs", {}).get("build", {})
    texts = steps_text(build)
    scan = next((i for i, t in enumerate(texts) if "trivy-action" in t), None)
    if scan is None:
        return ["the build job runs no Trivy scan"]
    problems = []
    if "steps.image.outputs.image" not in texts[scan]:
        problems.append("Trivy does not scan the pushed digest (steps.image.outputs.image)")
    for marker in ("attest-build-provenance", "binauthz attestations"):
        at = next((i for i, t in enumerate(texts) if marker in t), None)
        if at is None or at < scan:
            problems.append(f"{marker} is missing or comes before the scan")
    return problems


def rollout_is_careful(files: Files) -> list[str]:
    """#9: smoke before any traffic, a bake at 10 %, 100 % only after it, rollback always."""
    jobs = workflow(files, "deploy.yml").get("jobs", {})
    texts = steps_text(jobs.get("rollout", {}))

    def first(marker: str) -> int:
        return next((i for i, t in enumerate(texts) if marker in t), -1)

    smoke, ten, bake, full = (
        first("scripts/smoke.py"),
        first('=10"'),
        first("canary_bake.py"),
        first('=100"'),
    )
    problems = []
    if not 0 <= smoke < ten:
        problems.append("no smoke test on the canary before it gets traffic")
    if not 0 <= ten < bake < full:
        problems.append("no bake between 10 % and 100 %")
    if "saved plan" not in " ".join(texts) and "apply -input=false tfplan" not in " ".join(texts):
        problems.append("the rollout does not apply the saved plan")
    if any("|| true" in t and "identity-token" in t for t in texts):
        problems.append("an identity token failure is swallowed")
    restore = [t for t in texts if "cancelled()" in t and "update-traffic" in t]
    rollback = jobs.get("rollback", {})
    if not restore or "always()" not in str(rollback.get("if", "")):
        problems.append("traffic is not restored on failure, cancel and timeout")
    return problems


def module_text(files: Files) -> str:
    return "\n".join(t for p, t in files.items() if p.startswith(MODULE) and p.endswith(".tf"))


def container(service: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The container ``name`` of a Cloud Run service (static blocks only)."""
    template = first(service.get("template", [{}]))
    return next((c for c in template.get("containers", []) if first(c.get("name")) == name), None)


API_URI = "google_cloud_run_v2_service.api.uri"
API_IMAGE = "google_cloud_run_v2_service.api.template[0].containers[0].image"


def canary_reaches_the_api(files: Files) -> list[str]:
    """The canary calls the API's URL with the image the API runs (the pipeline sets no
    var.image), and where the API is IAM-only it sends an ID token for that very URL as an
    account that may invoke the API."""
    canary = resources(files, "google_cloud_run_v2_service").get("canary")
    if canary is None:
        return []
    app = container(canary, "canary")
    if app is None:
        return ["the canary service has no `canary` container"]
    problems = []
    if first(app.get("image")) != f"${{{API_IMAGE}}}":
        problems.append(f"the canary does not run the API's image ({API_IMAGE})")
    args = first(app.get("args", [[]])) or []
    url = args[args.index("--url") + 1] if "--url" in args[:-1] else None
    if url != f"${{{API_URI}}}":
        problems.append(f"the canary's --url is {url}, not the API's URL ({API_URI})")
    text = module_text(files)
    audience = re.search(r"^.*LATAM_CANARY_ID_TOKEN_AUDIENCE\s*=\s*([^\s},]+).*$", text, re.M)
    if not audience or audience.group(1) != API_URI:
        found = audience.group(1) if audience else "nothing"
        problems.append(f"the canary's ID token audience is {found}, not the API's URL")
    elif "var.api_public" not in audience.group(0):
        problems.append("the canary's ID token does not follow var.api_public")
    invokers = [
        b
        for b in resources(files, "google_cloud_run_v2_service_iam_member").values()
        if "run.invoker" in str(b.get("role"))
        and "google_cloud_run_v2_service.api.name" in str(b.get("name"))
        and "google_service_account.canary" in str(b.get("member"))
    ]
    if not invokers:
        problems.append("the canary's account has no roles/run.invoker on the API")
    return problems


def canary_always_on(files: Files) -> list[str]:
    """One canary instance, its CPU always allocated (its rounds run between requests,
    which never come), and the sidecar that ships its metrics."""
    canary = resources(files, "google_cloud_run_v2_service").get("canary")
    if canary is None:
        return []
    template = first(canary["template"])
    scaling = first(template.get("scaling", [{}]))
    problems = []
    if [first(scaling.get(k)) for k in ("min_instance_count", "max_instance_count")] != [1, 1]:
        problems.append("the canary does not run exactly one instance (min = max = 1)")
    for block in template.get("containers", []):
        if first(first(block.get("resources", [{}])).get("cpu_idle")) is not False:
            problems.append(f"container {first(block.get('name'))}: cpu_idle is not false")
    images = [first(c.get("image")) for c in template.get("containers", [])]
    if "${var.gmp_sidecar_image}" not in images:
        problems.append("the canary has no Managed Prometheus sidecar")
    return problems


def traces_reach_their_collector(files: Files) -> list[str]:
    """The API and the worker export spans to the port their traces sidecar receives
    OTLP/HTTP on, and both run that sidecar."""
    text = module_text(files)
    port = re.search(r"^\s*otlp_http_port\s*=\s*(\d+)", text, re.M)
    endpoint = re.search(r'LATAM_OTLP_ENDPOINT\s*=\s*"([^"]+)"', text)
    receiver = re.search(r'http\s*=\s*\{\s*endpoint\s*=\s*"([^"]+)"', text)
    if not (port and endpoint and receiver):
        return ["no OTLP endpoint, receiver or port (tracing.tf)"]

    def resolved(value: str) -> str:
        return value.replace("${local.otlp_http_port}", port.group(1))

    problems = []
    sent, heard = resolved(endpoint.group(1)), resolved(receiver.group(1))
    if not re.fullmatch(r"http://(localhost|127\.0\.0\.1):\d+", sent):
        problems.append(f"LATAM_OTLP_ENDPOINT {sent} is not the sidecar on localhost")
    elif sent.rsplit(":", 1)[1] != heard.rsplit(":", 1)[1]:
        problems.append(f"the app sends spans to {sent}, the sidecar receives on {heard}")
    for name in ("api", "worker"):
        service = resources(files, "google_cloud_run_v2_service").get(name, {})
        template = first(service.get("template", [{}]))
        if "var.otel_collector_image" not in str(template.get("dynamic", "")):
            problems.append(f"the {name} service runs no traces sidecar")
        app = container(service, name)
        if "local.tracing_env" not in str(app):
            problems.append(f"the {name} container does not get local.tracing_env")
    return problems


def sidecars_admitted(files: Files) -> list[str]:
    """Every image a service runs from a variable (the sidecars) is admitted by the Binary
    Authorization policy's allow-list, or each deploy of that service is refused."""
    defaults: dict[str, str] = {}
    for path in files:
        if path.startswith(MODULE) and path.endswith(".tf"):
            for block in parse(files, path).get("variable", []):
                for name, body in block.items():
                    if isinstance(first(body.get("default")), str):
                        defaults[name] = first(body["default"])
    patterns = [
        str(first(p.get("name_pattern")))
        for policy in resources(files, "google_binary_authorization_policy").values()
        for p in policy.get("admission_whitelist_patterns", [])
    ]
    problems = []
    images = set(re.findall(r"image\s*=\s*var\.(\w+)", files.get(f"{MODULE}/cloudrun.tf", "")))
    for variable in sorted(images):
        image = defaults.get(variable)
        if image is None:
            continue
        if not any(fnmatch.fnmatch(image, pattern) for pattern in patterns):
            problems.append(f"var.{variable} ({image}) is not admitted by Binary Authorization")
    return problems


RULES: dict[str, Callable[[Files], list[str]]] = {
    "Cloud SQL address type (LATAM_CLOUDSQL_IP_TYPE)": cloudsql_ip_type,
    "SLOs wait for the metrics (slos_enabled)": slos_wait_for_metrics,
    "autoresized disk ignored by plans": disk_growth_ignored,
    "push audience = what the worker checks": push_audience_matches,
    "uptime check may invoke an IAM-only API": uptime_agent_may_invoke,
    "federation: pull requests never get admin or deployer": federation_least_privilege,
    "image: base by digest, dependencies from the lock": image_is_what_was_audited,
    "providers locked; state prefix matches CI": providers_locked,
    "checkov skips explained inline and in infra/README.md": checkov_skips_explained,
    "deploy waits for ci and security on the commit": deploy_is_gated,
    "Trivy scans the pushed digest before it is signed": shipped_digest_is_scanned,
    "smoke at 0 %, bake at 10 %, then 100 %; rollback always": rollout_is_careful,
    "canary: the API's URL, image and invoker check": canary_reaches_the_api,
    "canary: one instance, CPU always on, metrics shipped": canary_always_on,
    "traces: the app exports to its sidecar's port": traces_reach_their_collector,
    "sidecar images admitted by Binary Authorization": sidecars_admitted,
}

# Each mistake of the issue, as an edit of the real files, and the rule that must catch it.
MUTATIONS: list[tuple[str, str, str, str]] = [
    (
        sidecars_admitted.__name__,
        f"{MODULE}/binauthz.tf",
        "google-cloud-opentelemetry-collector/*",
        "google-cloud-opentelemetry-collector/otelcol-old",
    ),
    (cloudsql_ip_type.__name__, f"{MODULE}/cloudrun.tf", '= "PUBLIC"', '= "PRIVATE"'),
    (
        slos_wait_for_metrics.__name__,
        f"{MODULE}/monitoring.tf",
        "slos = var.slos_enabled ?",
        "slos = true ?",
    ),
    (
        slos_wait_for_metrics.__name__,
        f"{MODULE}/monitoring.tf",
        "disable_metric_validation = true",
        "disable_metric_validation = false",
    ),
    (
        disk_growth_ignored.__name__,
        f"{MODULE}/database.tf",
        "ignore_changes = [settings[0].disk_size]",
        "",
    ),
    (
        push_audience_matches.__name__,
        f"{MODULE}/pubsub.tf",
        "audience              = local.push_audience",
        "audience              = google_cloud_run_v2_service.worker.uri",
    ),
    (
        uptime_agent_may_invoke.__name__,
        f"{MODULE}/monitoring.tf",
        "member   = local.monitoring_agent",
        "",
    ),
    (
        federation_least_privilege.__name__,
        f"{MODULE}/wif.tf",
        "subject = local.github_subjects.plan }",
        "subject = local.github_subjects.pull_request }",
    ),
    (image_is_what_was_audited.__name__, "Dockerfile", "@sha256:", ":"),
    (image_is_what_was_audited.__name__, "Dockerfile", "--require-hashes", ""),
    (
        federation_least_privilege.__name__,
        f"{MODULE}/wif.tf",
        "# Pull-request plans: read the state",
        'resource "google_service_account_iam_member" "extra" {\n'
        '  service_account_id = "x"\n  role = "roles/iam.workloadIdentityUser"\n'
        '  member = "principal://x/subject/repo:o/r:pull_request"\n}\n'
        "# Pull-request plans: read the state",
    ),
    (
        uptime_agent_may_invoke.__name__,
        f"{MODULE}/locals.tf",
        "@gcp-sa-monitoring-notification.iam",
        "@gcp-sa-pubsub.iam",
    ),
    (providers_locked.__name__, "infra/envs/prod/.terraform.lock.hcl", "hashicorp/random", "x"),
    (
        providers_locked.__name__,
        "infra/envs/prod/main.tf",
        "prefix=latam/production",
        "prefix=latam/prod",
    ),
    (checkov_skips_explained.__name__, "infra/README.md", "| CKV_GCP_43 |", "|"),
    (deploy_is_gated.__name__, ".github/workflows/ci.yml", "  workflow_call:\n", "  push:\n"),
    (
        deploy_is_gated.__name__,
        ".github/workflows/deploy.yml",
        "    needs: [ci, security]",
        "    needs: [ci]",
    ),
    (
        shipped_digest_is_scanned.__name__,
        ".github/workflows/deploy.yml",
        "image-ref: ${{ steps.image.outputs.image }}",
        "image-ref: latam:scan",
    ),
    (
        rollout_is_careful.__name__,
        ".github/workflows/deploy.yml",
        '.venv/bin/python scripts/smoke.py --base-url "$CANARY_URL"',
        "true",
    ),
    (rollout_is_careful.__name__, ".github/workflows/deploy.yml", "canary_bake.py", "x.py"),
    (
        deploy_is_gated.__name__,
        ".github/workflows/deploy.yml",
        "uses: $/.github/workflows/security.yml",
        "uses: $/.github/workflows/ci.yml",
    ),
    (
        rollout_is_careful.__name__,
        ".github/workflows/deploy.yml",
        "(failure() || cancelled())",
        "failure()",
    ),
    (
        canary_reaches_the_api.__name__,
        f"{MODULE}/cloudrun.tf",
        "member   = google_service_account.canary[0].member",
        "member   = google_service_account.deployer.member",
    ),
    (
        canary_reaches_the_api.__name__,
        f"{MODULE}/cloudrun.tf",
        "{ LATAM_CANARY_ID_TOKEN_AUDIENCE = google_cloud_run_v2_service.api.uri }",
        "{ LATAM_CANARY_ID_TOKEN_AUDIENCE = local.push_audience }",
    ),
    (
        canary_reaches_the_api.__name__,
        f"{MODULE}/cloudrun.tf",
        "image = google_cloud_run_v2_service.api.template[0].containers[0].image",
        "image = local.image",
    ),
    (
        canary_always_on.__name__,
        f"{MODULE}/cloudrun.tf",
        "cpu_idle          = false\n        startup_cpu_boost = false",
        "cpu_idle          = true\n        startup_cpu_boost = false",
    ),
    (
        traces_reach_their_collector.__name__,
        f"{MODULE}/tracing.tf",
        'LATAM_OTLP_ENDPOINT     = "http://localhost:${local.otlp_http_port}"',
        'LATAM_OTLP_ENDPOINT     = "http://localhost:4317"',
    ),
    (
        traces_reach_their_collector.__name__,
        f"{MODULE}/cloudrun.tf",
        "merge(local.common_env, local.push_env, local.tracing_env)",
        "merge(local.common_env, local.push_env)",
    ),
]


def check(files: Files) -> dict[str, list[str]]:
    return {name: rule(files) for name, rule in RULES.items()}


def self_test(files: Files) -> list[str]:
    """Each mutation must make exactly its rule fail (and the real files must pass)."""
    failures = [f"the repository itself fails: {n}" for n, p in check(files).items() if p]
    by_function = {rule.__name__: name for name, rule in RULES.items()}
    for function, path, old, new in MUTATIONS:
        if old not in files.get(path, ""):
            failures.append(f"{function}: {path} no longer contains {old!r}")
            continue
        mutated = dict(files)
        mutated[path] = files[path].replace(old, new)
        if not RULES[by_function[function]](mutated):
            failures.append(f"{function} did not catch {path}: {old!r} -> {new!r}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--self-test", action="store_true", help="prove each rule catches its mistake"
    )
    args = parser.parse_args()
    files = load_files(ROOT)
    if args.self_test:
        failures = self_test(files)
        for failure in failures:
            print(f"FAIL: {failure}")
        print(f"self-test: {len(MUTATIONS)} mutations, {len(failures)} not caught")
        return 1 if failures else 0
    failed = False
    for name, problems in check(files).items():
        print(("FAIL: " if problems else "ok: ") + name)
        for problem in problems:
            print(f"    {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
