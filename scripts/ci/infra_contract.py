"""Offline contract between the application and its Google Cloud deployment.

One ``ok:``/``FAIL:`` line per check (each problem listed under its FAIL); exit 1 if any
check failed. Nothing here needs the cloud or Terraform providers: the Terraform is
read by ``tf_hcl`` (python-hcl2, in the ``dev`` extra and requirements/lock.txt), so this
runs wherever the app is installed for development (``pip install -e .[dev]``).

environment
    Every variable the app reads in production (each ``latam.settings.Settings`` field
    as ``LATAM_<FIELD>``, plus what ``src/latam`` reads through ``os.environ``, the
    ``envvar`` of its click options, and what the container entrypoint reads) is, for each
    Cloud Run workload of ``infra/modules/latam`` (services ``api``, ``worker`` and
    ``canary``, job ``migrate``: every service or job with a container that runs the app's
    image), set by an ``env`` block of its app container, set by the image (Dockerfile
    ``ENV``), or listed with a reason in infra/README.md "Settings left to their defaults
    in Cloud Run". Fails on a variable that is none of these; on a listed one that
    Terraform or the image sets (a contradiction); on a Terraform variable neither the app
    nor a library it configures that way (``LIBRARY_ENV``) reads (a typo); on a listed
    name the app does not read.
google calls
    Every Google API call in ``src/latam`` (Pub/Sub client methods, the Cloud SQL
    connector's ``connect``, the ID token an IAM-only Cloud Run service is called with,
    a query of the Prometheus HTTP API) is a row of infra/README.md "Permissions the code
    needs", matched on code path (``module:function``, or ``module`` for the Prometheus
    API, whose URL a module may assemble from module-level constants) and call; every row
    names a call the code makes.
iam bindings
    Each row's Terraform resource exists in ``infra/modules/latam``, grants the row's
    role, on the row's resource, to the service account its identity runs as (read from
    the workload's ``service_account``); the roles of each call grant the permissions
    the call needs (``CALL_PERMISSIONS``, ``ROLE_PERMISSIONS``, from Google's IAM docs).

Run: ``.venv/bin/python scripts/ci/infra_contract.py`` (``make infra-check``).
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tf_hcl  # a sibling module, found through the line above

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = Path("infra/modules/latam")
README = Path("infra/README.md")
ENV_SECTION = "Settings left to their defaults in Cloud Run"
IAM_SECTION = "Permissions the code needs"

WORKLOAD_TYPES = ("google_cloud_run_v2_service", "google_cloud_run_v2_job")
APP_IMAGE = "local.image"  # the app's containers run it
# ... or the image another workload's app container runs (the canary runs the API's).
APP_IMAGE_OF_WORKLOAD = re.compile(
    r"google_cloud_run_v2_(?:service|job)\.\w+(?:\.template\[0\])+\.containers\[0\]\.image"
)
# Variables a library the app uses reads from the environment, as the app means it to:
# Terraform may set them (they are no typo), none has to be set. The OpenTelemetry SDK
# picks its sampler from these when the app builds its tracer provider without one
# (latam.tracing.configure, when it exports).
LIBRARY_ENV = {
    "OTEL_TRACES_SAMPLER": "opentelemetry-sdk",
    "OTEL_TRACES_SAMPLER_ARG": "opentelemetry-sdk",
}
OPERATOR = "operator"  # a person with their own credentials: no Terraform binding
NO_BINDING = {"", "-", "—", "n/a"}

PROMETHEUS_QUERY = "prometheus_query"  # a call found by its URL path, not a method name
PROMETHEUS_PATH = re.compile(r"/?api/v1/query(?:_range)?\b")

# Google API methods latam may call -> the IAM permissions each needs (Pub/Sub access
# control and Cloud SQL connector docs). Streaming pull settles leases with Acknowledge
# and ModifyAckDeadline on the same subscription: the same permission as the pull.
CONSUME = frozenset({"pubsub.subscriptions.consume"})
CALL_PERMISSIONS: dict[str, frozenset[str]] = {
    "publish": frozenset({"pubsub.topics.publish"}),
    "get_topic": frozenset({"pubsub.topics.get"}),
    "list_topics": frozenset({"pubsub.topics.list"}),
    "list_topic_subscriptions": frozenset({"pubsub.topics.get"}),
    "create_topic": frozenset({"pubsub.topics.create"}),
    "update_topic": frozenset({"pubsub.topics.update"}),
    "delete_topic": frozenset({"pubsub.topics.delete"}),
    "detach_subscription": frozenset({"pubsub.topics.detachSubscription"}),
    "get_subscription": frozenset({"pubsub.subscriptions.get"}),
    "list_subscriptions": frozenset({"pubsub.subscriptions.list"}),
    "create_subscription": frozenset(
        {"pubsub.subscriptions.create", "pubsub.topics.attachSubscription"}
    ),
    "update_subscription": frozenset({"pubsub.subscriptions.update"}),
    "modify_push_config": frozenset({"pubsub.subscriptions.update"}),
    "delete_subscription": frozenset({"pubsub.subscriptions.delete"}),
    "subscribe": CONSUME,
    "streaming_pull": CONSUME,
    "pull": CONSUME,
    "acknowledge": CONSUME,
    "modify_ack_deadline": CONSUME,
    "ack": CONSUME,
    "nack": CONSUME,
    "ack_with_response": CONSUME,
    "nack_with_response": CONSUME,
    "seek": CONSUME,
    "create_snapshot": frozenset({"pubsub.snapshots.create", "pubsub.subscriptions.consume"}),
    "delete_snapshot": frozenset({"pubsub.snapshots.delete"}),
    # Cloud SQL Python Connector with IAM database authentication (enable_iam_auth=True).
    "connect": frozenset(
        {"cloudsql.instances.connect", "cloudsql.instances.get", "cloudsql.instances.login"}
    ),
    "connect_async": frozenset(
        {"cloudsql.instances.connect", "cloudsql.instances.get", "cloudsql.instances.login"}
    ),
    # google-auth's ID token for a Cloud Run URL: the metadata server mints it for the
    # workload's own account without any permission; what it is for, calling that
    # IAM-only service, needs run.routes.invoke on it (Cloud Run's invoker check).
    "fetch_id_token": frozenset({"run.routes.invoke"}),
    # GET .../prometheus/api/v1/query(_range) of Managed Service for Prometheus (the
    # Prometheus HTTP API on monitoring.googleapis.com) reads time series.
    PROMETHEUS_QUERY: frozenset({"monitoring.timeSeries.list"}),
}

PUBSUB_VIEWER = frozenset(
    {
        "pubsub.topics.get",
        "pubsub.topics.list",
        "pubsub.subscriptions.get",
        "pubsub.subscriptions.list",
        "pubsub.snapshots.get",
        "pubsub.snapshots.list",
        "pubsub.schemas.get",
        "pubsub.schemas.list",
    }
)
PUBSUB_PUBLISHER = frozenset({"pubsub.topics.publish"})
PUBSUB_SUBSCRIBER = frozenset(
    {"pubsub.subscriptions.consume", "pubsub.snapshots.seek", "pubsub.topics.attachSubscription"}
)
# The permissions of the predefined roles that matter to the calls above
# (https://cloud.google.com/iam/docs/roles-permissions/pubsub and .../cloudsql).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/pubsub.publisher": PUBSUB_PUBLISHER,
    "roles/pubsub.subscriber": PUBSUB_SUBSCRIBER,
    "roles/pubsub.viewer": PUBSUB_VIEWER,
    "roles/pubsub.editor": PUBSUB_VIEWER
    | PUBSUB_PUBLISHER
    | PUBSUB_SUBSCRIBER
    | {
        f"pubsub.{kind}.{verb}"
        for kind in ("topics", "subscriptions", "snapshots")
        for verb in ("create", "update", "delete")
    }
    | {"pubsub.topics.detachSubscription"},
    "roles/cloudsql.client": frozenset({"cloudsql.instances.connect", "cloudsql.instances.get"}),
    "roles/cloudsql.instanceUser": frozenset(
        {"cloudsql.instances.login", "cloudsql.instances.get"}
    ),
    # https://cloud.google.com/iam/docs/roles-permissions/run and .../monitoring
    "roles/run.invoker": frozenset({"run.routes.invoke"}),
    "roles/monitoring.viewer": frozenset({"monitoring.timeSeries.list"}),
}

# Receivers whose methods are latam's own, not Google's: the class itself, and the
# adapter's ``Puller`` strategy (pullers.py, whose Google calls are found there).
OWN_RECEIVERS = {"self", "cls", "puller", "_puller"}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Repo:
    """The texts the checks read; tests build variants of it."""

    terraform: Mapping[str, str]  # file name -> text, infra/modules/latam/*.tf
    readme: str  # infra/README.md
    dockerfile: str
    entrypoint: str  # scripts/docker-entrypoint.sh
    sources: Mapping[str, str]  # module (latam.x.y) -> Python source under src/latam
    settings: Mapping[str, str]  # environment variable -> Settings field

    @classmethod
    def load(cls, root: Path = ROOT) -> Repo:
        src = root / "src"
        return cls(
            terraform={p.name: p.read_text() for p in sorted((root / MODULE_DIR).glob("*.tf"))},
            readme=(root / README).read_text(),
            dockerfile=(root / "Dockerfile").read_text(),
            entrypoint=(root / "scripts" / "docker-entrypoint.sh").read_text(),
            sources={
                ".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): (
                    p.read_text()
                )
                for p in sorted((src / "latam").rglob("*.py"))
            },
            settings=settings_variables(src),
        )


def settings_variables(src: Path) -> dict[str, str]:
    """Environment variable -> field of ``latam.settings.Settings`` (aliases included)."""
    try:
        from latam.settings import Settings
    except ImportError:  # not installed: the source tree will do
        sys.path.insert(0, str(src))
        from latam.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix") or "")
    names: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias or info.alias
        choices = getattr(alias, "choices", [alias] if alias else [])
        aliases = [choice for choice in choices if isinstance(choice, str)]
        for variable in aliases or [f"{prefix}{name}"]:
            names[variable.upper()] = name
    return names


@dataclass(frozen=True)
class Check:
    name: str
    summary: str
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- terraform


@dataclass
class Module:
    """The resources and locals of a Terraform module."""

    resources: dict[str, tf_hcl.Block]  # "type.name" -> resource block
    evaluator: tf_hcl.Evaluator


def load_module(files: Mapping[str, str]) -> Module:
    resources: dict[str, tf_hcl.Block] = {}
    locals_: dict[str, tf_hcl.Attribute] = {}
    for name, text in sorted(files.items()):
        try:
            body = tf_hcl.parse(text)
        except tf_hcl.HclError as exc:
            raise tf_hcl.HclError(f"{MODULE_DIR / name}: {exc}") from exc
        for block in body.blocks:
            if block.type == "locals":
                locals_.update(block.body.attributes)
            elif block.type == "resource" and len(block.labels) == 2:
                resources[".".join(block.labels)] = block
    return Module(resources, tf_hcl.Evaluator(locals_))


@dataclass(frozen=True)
class Workload:
    """A Cloud Run service or job that runs the app image."""

    name: str  # the resource name: api, worker, migrate
    address: str
    account: str  # google_service_account.<account> it runs as
    env: frozenset[str]  # variables its app container(s) set


def find_workloads(module: Module) -> tuple[dict[str, Workload], list[str]]:
    workloads: dict[str, Workload] = {}
    problems: list[str] = []
    for address, block in module.resources.items():
        kind, name = address.split(".")
        if kind not in WORKLOAD_TYPES:
            continue
        template = _task_template(block.body)
        containers = [
            c
            for c in (template.blocks_of("containers") if template else ())
            if "image" in c.body.attributes and _runs_the_app(c.body.attributes["image"].source)
        ]
        if template is None or not containers:
            problems.append(f"{address}: no container runs the app's image (local.image)")
            continue
        env: set[str] = set()
        for container in containers:
            env |= _container_env(module.evaluator, address, container, problems)
        account = _account(module.evaluator, address, template, problems)
        workloads[name] = Workload(name, address, account, frozenset(env))
    if not workloads:
        problems.append(f"no Cloud Run service or job in {MODULE_DIR}")
    return workloads, problems


def _runs_the_app(image: str) -> bool:
    return image == APP_IMAGE or APP_IMAGE_OF_WORKLOAD.fullmatch(image) is not None


def _task_template(body: tf_hcl.Body) -> tf_hcl.Body | None:
    """The template that holds the containers (a job nests it one level deeper)."""
    for block in body.blocks_of("template"):
        if any(True for _ in block.body.blocks_of("containers")):
            return block.body
        return _task_template(block.body)
    return None


def _account(
    evaluator: tf_hcl.Evaluator, address: str, template: tf_hcl.Body, problems: list[str]
) -> str:
    attribute = template.attributes.get("service_account")
    value = evaluator.eval(attribute.expr) if attribute else None
    if isinstance(value, tf_hcl.Ref) and value.resource().startswith("google_service_account."):
        return value.resource().split(".")[1]
    problems.append(f"{address}: service_account is not a google_service_account's email")
    return "?"


def _container_env(
    evaluator: tf_hcl.Evaluator, address: str, container: tf_hcl.Block, problems: list[str]
) -> set[str]:
    names: set[str] = set()
    for block in container.body.blocks:
        if block.type == "env":
            found = [_env_name(evaluator, block.body, {})]
        elif block.type == "dynamic" and block.labels == ["env"]:
            found = _dynamic_env(evaluator, block)
        else:
            continue
        for name in found:
            if isinstance(name, str):
                names.add(name)
            else:
                problems.append(f"{address}: cannot resolve an env name (line {block.line})")
    return names


def _env_name(evaluator: tf_hcl.Evaluator, body: tf_hcl.Body, scope: dict[str, Any]) -> Any:
    attribute = body.attributes.get("name")
    return evaluator.eval(attribute.expr, scope) if attribute else None


def _dynamic_env(evaluator: tf_hcl.Evaluator, block: tf_hcl.Block) -> list[Any]:
    iterator = block.body.attributes.get("iterator")
    var = iterator.source if iterator else "env"
    for_each = block.body.attributes.get("for_each")
    items = tf_hcl.items_of(evaluator.eval(for_each.expr)) if for_each else None
    content = next(block.body.blocks_of("content"), None)
    if items is None or content is None:
        return [None]
    return [
        _env_name(evaluator, content.body, {var: {"key": key, "value": value}})
        for key, value in items.items()
    ]


# --------------------------------------------------------------------------- other inputs


def image_env(dockerfile: str) -> set[str]:
    """Variables the runtime stage (after the last FROM) of the Dockerfile sets."""
    lines = re.sub(r"\\\r?\n", " ", dockerfile).splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().upper().startswith("FROM ")]
    names: set[str] = set()
    for line in lines[starts[-1] if starts else 0 :]:
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() != "ENV" or not rest.strip():
            continue
        words = shlex.split(rest)
        if "=" in words[0]:
            names |= {word.split("=", 1)[0] for word in words}
        else:
            names.add(words[0])
    return names


def click_env(sources: Mapping[str, str]) -> set[str]:
    """Variables click reads for an option: the ``envvar`` of ``click.option(...)``."""
    names: set[str] = set()
    for text in sources.values():
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg != "envvar":
                    continue
                values = (
                    keyword.value.elts if isinstance(keyword.value, ast.List) else [keyword.value]
                )
                names |= {
                    v.value
                    for v in values
                    if isinstance(v, ast.Constant) and isinstance(v.value, str)
                }
    return names


def entrypoint_env(script: str) -> set[str]:
    """Upper-case variables a shell script expands."""
    code = "\n".join(line.split("#", 1)[0] for line in script.splitlines())
    return set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", code))


def source_env(sources: Mapping[str, str]) -> tuple[dict[str, set[str]], list[str]]:
    """Variable -> modules that read it through ``os.environ``/``os.getenv``."""
    trees = {module: ast.parse(text) for module, text in sources.items()}
    constants = {
        target.id: node.value.value
        for tree in trees.values()
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    reads: dict[str, set[str]] = defaultdict(set)
    problems: list[str] = []
    for module, tree in sorted(trees.items()):
        for node in ast.walk(tree):
            key = _environ_key(node)
            if key is None:
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                reads[key.value].add(module)
            elif isinstance(key, ast.Name) and key.id in constants:
                reads[constants[key.id]].add(module)
            else:
                line = getattr(node, "lineno", 0)
                problems.append(f"{module} line {line}: reads a variable named at run time")
    return dict(reads), problems


def _is_environ(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _environ_key(node: ast.AST) -> ast.expr | None:
    """The key of an environment read (``os.environ.get(k)``, ``os.getenv(k)``,
    ``os.environ[k]``, ``k in os.environ``), else None."""
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
            return node.args[0]
        if isinstance(func, ast.Attribute) and func.attr == "getenv":
            return node.args[0]
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return node.slice if _is_environ(node.value) else None
    if (
        isinstance(node, ast.Compare)
        and isinstance(node.ops[0], ast.In | ast.NotIn)
        and _is_environ(node.comparators[0])
    ):
        return node.left
    return None


Table = tuple[list[str], list[dict[str, str]]]  # lower-cased headers, rows


def section_tables(readme: str, heading: str) -> list[Table] | None:
    """The tables of the section ``heading``: headers and rows (header -> cell, backticks
    removed); None when there is no such section."""
    lines = readme.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.fullmatch(rf"#+\s+{re.escape(heading)}\s*", line)),
        None,
    )
    if start is None:
        return None
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    tables: list[list[list[str]]] = [[]]
    for line in lines[start + 1 :]:
        if re.match(rf"#{{1,{level}}}\s", line):
            break
        if line.lstrip().startswith("|"):
            cells = [c.replace("`", "").strip() for c in line.strip().strip("|").split("|")]
            tables[-1].append(cells)
        elif tables[-1]:
            tables.append([])
    found: list[Table] = []
    for table in tables:
        if len(table) >= 2:
            headers = [h.lower() for h in table[0]]
            found.append((headers, [dict(zip(headers, row, strict=False)) for row in table[2:]]))
    return found


def table_with(readme: str, heading: str, columns: Iterable[str]) -> list[dict[str, str]] | None:
    """The rows of the first table of section ``heading`` that has every one of
    ``columns`` (a header matches a column when it starts with it)."""
    for headers, rows in section_tables(readme, heading) or []:
        chosen = {c: next((h for h in headers if h.startswith(c)), None) for c in columns}
        if all(chosen.values()):
            return [{c: row.get(str(h), "") for c, h in chosen.items()} for row in rows]
    return None


# --------------------------------------------------------------------------- environment


def check_environment(repo: Repo) -> Check:
    name = "environment: every variable the app reads is set by cloudrun.tf or left to its default"
    try:
        module = load_module(repo.terraform)
    except tf_hcl.HclError as exc:
        return Check(name, "", [str(exc)])
    workloads, problems = find_workloads(module)
    read_by_code, read_problems = source_env(repo.sources)
    problems += read_problems
    other = set(read_by_code) | click_env(repo.sources) | entrypoint_env(repo.entrypoint)
    wanted = set(repo.settings) | other
    image = image_env(repo.dockerfile)
    listed, table_problems = defaults_table(repo.readme, set(workloads))
    problems += table_problems
    sources: Counter[str] = Counter()
    for variable in sorted(wanted):
        missing = []
        for w in workloads:
            if variable in workloads[w].env:
                sources["set by cloudrun.tf"] += 1
            elif variable in image:
                sources["set by the image"] += 1
            elif w in listed.get(variable, ()):
                sources["left to defaults"] += 1
            else:
                missing.append(w)
        if missing:
            problems.append(
                f"{variable}: not set for {', '.join(missing)} in cloudrun.tf nor by the image,"
                f' and not listed in {README} "{ENV_SECTION}"'
            )
    problems += _contradictions(listed, workloads, image, wanted)
    for workload in workloads.values():
        for variable in sorted(workload.env - wanted - LIBRARY_ENV.keys()):
            problems.append(
                f"{variable}: set for {workload.name} in cloudrun.tf, but the app reads no such"
                " variable (a typo, or a setting that was removed?)"
            )
    summary = f"{len(wanted)} variables x {', '.join(workloads)}: " + ", ".join(
        f"{count} {source}" for source, count in sources.items()
    )
    return Check(name, summary, problems)


def defaults_table(readme: str, workloads: set[str]) -> tuple[dict[str, set[str]], list[str]]:
    """Variable -> workloads it is deliberately left unset for, from infra/README.md."""
    rows = table_with(readme, ENV_SECTION, ("variable", "workloads", "why"))
    if rows is None:
        return {}, [f'{README} has no table (Variable | Workloads | Why) under "{ENV_SECTION}"']
    listed: dict[str, set[str]] = {}
    problems: list[str] = []
    for row in rows:
        variable, where = row.get("variable", ""), row.get("workloads", "")
        if not variable or not row.get("why"):
            problems.append(f'"{ENV_SECTION}": row {row} needs a variable and a reason (why)')
            continue
        names = workloads if where == "all" else {w.strip() for w in where.split(",")}
        if unknown := names - workloads:
            problems.append(f"{variable}: unknown workloads {sorted(unknown)} in {README}")
        if variable in listed:
            problems.append(f'{variable}: listed twice in "{ENV_SECTION}"')
        listed[variable] = names & workloads
    return listed, problems


def _contradictions(
    listed: Mapping[str, set[str]],
    workloads: Mapping[str, Workload],
    image: set[str],
    wanted: set[str],
) -> Iterator[str]:
    for variable, names in sorted(listed.items()):
        if variable not in wanted:
            yield f'{variable}: listed in "{ENV_SECTION}", but the app reads no such variable'
        if both := sorted(w for w in names if variable in workloads[w].env):
            yield (
                f"{variable}: listed as left to its default for {', '.join(both)}, but"
                " cloudrun.tf sets it there"
            )
        if variable in image:
            yield f"{variable}: listed as left to its default, but the image (Dockerfile) sets it"


# --------------------------------------------------------------------------- google calls


def google_calls(sources: Mapping[str, str]) -> dict[tuple[str, str], int]:
    """(``module:function``, Google method) -> first line, for each call in the code.

    Scanned: the modules that import a ``google`` package, and everything under
    ``latam.broker.pubsub``. A call is an attribute named after a Google method (called
    or passed on, as ``_ensure(publisher.create_topic, ...)`` does) on a receiver that
    is not latam's own (``OWN_RECEIVERS``), or the method's name as a string argument
    (``self._call("acknowledge", ...)`` dispatches through ``getattr``).
    """
    found: dict[tuple[str, str], int] = {}
    for module, text in sorted(sources.items()):
        tree = ast.parse(text)
        if line := _prometheus_api_line(tree):
            found[(module, PROMETHEUS_QUERY)] = line
        if not (module.startswith("latam.broker.pubsub") or _imports_google(tree)):
            continue
        for scope, node in _scopes(tree):
            for inner in ast.walk(node):
                for method in _methods_called(inner):
                    found.setdefault((f"{module}:{scope}", method), getattr(inner, "lineno", 0))
    return found


def _prometheus_api_line(tree: ast.Module) -> int:
    """The first line naming a Prometheus HTTP API query path (``/api/v1/query``), 0 if
    none: wherever the module builds the URL (a constant, an f-string, a function)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and PROMETHEUS_PATH.search(node.value)
        ):
            return getattr(node, "lineno", 0) or 1
    return 0


def _imports_google(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "google" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "google":
            return True
    return False


def _scopes(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """(function or Class.method, node) for each top-level definition."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield f"{node.name}.{item.name}", item


def _methods_called(node: ast.AST) -> Iterable[str]:
    if (
        isinstance(node, ast.Attribute)
        and node.attr in CALL_PERMISSIONS
        and _receiver(node.value) not in OWN_RECEIVERS
    ):
        yield node.attr
    if isinstance(node, ast.Call):
        for arg in node.args:
            if isinstance(arg, ast.Constant) and arg.value in CALL_PERMISSIONS:
                yield str(arg.value)


def _receiver(node: ast.AST) -> str:
    """The last name of a receiver: ``self._subscriber`` -> ``_subscriber``."""
    if isinstance(node, ast.Call):
        return _receiver(node.func)
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


@dataclass(frozen=True)
class Row:
    """One row of "Permissions the code needs" (one call of a multi-call cell)."""

    code_path: str
    call: str
    identity: str
    role: str
    on: str
    resource: str


def permission_rows(readme: str) -> tuple[list[Row], list[str]]:
    columns = ("code path", "google api call", "identity", "role", "on", "terraform resource")
    rows = table_with(readme, IAM_SECTION, columns)
    if rows is None:
        return [], [f'{README} has no table ({" | ".join(columns)}) under "{IAM_SECTION}"']
    out: list[Row] = []
    for row in rows:
        for call in (c.strip() for c in row["google api call"].split(",")):
            out.append(
                Row(
                    row["code path"],
                    call,
                    row["identity"],
                    row["role"],
                    row["on"],
                    row["terraform resource"],
                )
            )
    return out, []


def check_google_calls(repo: Repo) -> Check:
    name = f'google calls: every Google API call in src/latam is a row of "{IAM_SECTION}"'
    rows, problems = permission_rows(repo.readme)
    found = google_calls(repo.sources)
    listed = {(row.code_path, row.call) for row in rows}
    for (path, call), line in sorted(found.items()):
        if (path, call) not in listed:
            problems.append(
                f"{path} (line {line}) calls Google's {call}, but no row of"
                f' {README} "{IAM_SECTION}" names it'
            )
    for path, call in sorted(listed - set(found)):
        problems.append(f"row {path} | {call}: the code makes no such call (stale row?)")
    summary = f"{len(found)} calls in {len({p for p, _ in found})} functions, {len(rows)} rows"
    return Check(name, summary, problems)


# --------------------------------------------------------------------------- bindings

ADDRESS = re.compile(r'^([a-z0-9_]+)\.([A-Za-z0-9_-]+)(?:\["([^"]+)"\])?$')


def check_bindings(repo: Repo) -> Check:
    name = "iam bindings: each row's resource grants its role to the identity that runs the call"
    rows, problems = permission_rows(repo.readme)
    try:
        module = load_module(repo.terraform)
    except tf_hcl.HclError as exc:
        return Check(name, "", [str(exc)])
    workloads, workload_problems = find_workloads(module)
    problems += workload_problems
    accounts = {w.name: w.account for w in workloads.values()}
    granted: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
    bindings = set()
    for row in rows:
        label = f"row {row.code_path} | {row.call} | {row.identity}"
        if row.identity == OPERATOR:
            if row.resource not in NO_BINDING:
                problems.append(f"{label}: an operator's call has no Terraform binding; use —")
            continue
        if row.identity not in accounts:
            problems.append(f"{label}: identity must be one of {sorted(accounts)} or {OPERATOR}")
            continue
        problems += [f"{label}: {p}" for p in _binding_problems(module, row, accounts)]
        granted[(row.code_path, row.call, row.identity, row.on)].add(row.role)
        bindings.add(row.resource)
    for (path, call, identity, on), roles in sorted(granted.items()):
        held = frozenset().union(*(ROLE_PERMISSIONS.get(role, frozenset()) for role in roles))
        if lacking := CALL_PERMISSIONS.get(call, frozenset()) - held:
            problems.append(
                f"{path} | {call} as {identity} on {on}: {', '.join(sorted(roles))} do not"
                f" grant {', '.join(sorted(lacking))}"
            )
    problems += _legend_problems(repo.readme, accounts)
    problems += _unexplained_bindings(module, accounts, bindings)
    identities = ", ".join(f"{n} as google_service_account.{a}" for n, a in accounts.items())
    summary = f"{len(rows)} rows, {len(bindings)} bindings; {identities}"
    return Check(name, summary, problems)


PUBSUB_BINDINGS = ("google_pubsub_topic_iam_member", "google_pubsub_subscription_iam_member")


def _unexplained_bindings(
    module: Module, accounts: Mapping[str, str], named: set[str]
) -> Iterator[str]:
    """Pub/Sub bindings of an app account that no row needs: least privilege says remove
    them (or the table lacks the row of the code that needs them)."""
    app_accounts = {f"google_service_account.{a}" for a in accounts.values()}
    for address, block in module.resources.items():
        if address.split(".")[0] not in PUBSUB_BINDINGS or address in named:
            continue
        member = block.body.attributes.get("member")
        value = module.evaluator.eval(member.expr) if member else None
        if isinstance(value, tf_hcl.Ref) and value.resource() in app_accounts:
            yield (
                f"{address} grants {value.resource()} a Pub/Sub role that no row of"
                f' "{IAM_SECTION}" needs: remove it, or add the row of the code that calls it'
            )


def _legend_problems(readme: str, accounts: Mapping[str, str]) -> Iterator[str]:
    """The table of identities says what each workload runs as, as cloudrun.tf does."""
    legend = table_with(readme, IAM_SECTION, ("identity", "service account"))
    if legend is None:
        yield f'{README} has no table (Identity | Runs | Service account) under "{IAM_SECTION}"'
        return
    described = {row["identity"]: row["service account"] for row in legend}
    for identity, account in accounts.items():
        want = f"google_service_account.{account}"
        if (said := described.get(identity)) != want:
            yield f"identity {identity} runs as {want} (cloudrun.tf); the identities table: {said}"
    for identity in described.keys() - accounts.keys() - {OPERATOR}:
        yield f"identity {identity} in the table of identities is no Cloud Run workload"


def _binding_problems(module: Module, row: Row, accounts: Mapping[str, str]) -> Iterator[str]:
    match = ADDRESS.match(row.resource)
    if not match:
        yield f'{row.resource!r} is not a resource address (type.name or type.name["key"])'
        return
    kind, name, key = match.groups()
    block = module.resources.get(f"{kind}.{name}")
    if block is None:
        yield f"{kind}.{name} does not exist in {MODULE_DIR}"
        return
    if row.role not in ROLE_PERMISSIONS:
        yield f"role {row.role} is not in ROLE_PERMISSIONS of {Path(__file__).name}; add it"
    attributes = block.body.attributes
    scope: dict[str, Any] = {}
    if "for_each" in attributes:
        items = tf_hcl.items_of(module.evaluator.eval(attributes["for_each"].expr))
        if items is None or key not in items:
            yield f'{kind}.{name} has no instance ["{key}"] (for_each keys: {sorted(items or [])})'
            return
        scope["each"] = {"key": key, "value": items[key]}
    elif key is not None:
        yield f"{kind}.{name} has no for_each, so no instance [{key!r}]"
    role = module.evaluator.eval(attributes["role"].expr, scope) if "role" in attributes else None
    if role != row.role:
        yield f"{row.resource} grants {role!r}, not {row.role}"
    member = (
        module.evaluator.eval(attributes["member"].expr, scope) if "member" in attributes else None
    )
    want = f"google_service_account.{accounts[row.identity]}"
    if not (isinstance(member, tf_hcl.Ref) and member.resource() == want):
        shown = member.path if isinstance(member, tf_hcl.Ref) else member
        yield f"{row.resource} grants it to {shown}, but {row.identity} runs as {want}"
    yield from _target_problems(module, row, kind, attributes, scope)


def _target_problems(
    module: Module, row: Row, kind: str, attributes: Mapping[str, Any], scope: dict[str, Any]
) -> Iterator[str]:
    if row.on == "project":
        if kind != "google_project_iam_member":
            yield f"{row.resource} is not a project-level binding"
        return
    targets = {
        ref.resource()
        for attr, attribute in attributes.items()
        if attr not in ("role", "member", "project", "for_each", "count")
        for ref in _refs(module.evaluator.eval(attribute.expr, scope))
    }
    if row.on not in targets:
        yield f"{row.resource} is on {', '.join(sorted(targets)) or 'nothing known'}, not {row.on}"


def _refs(value: Any) -> Iterator[tf_hcl.Ref]:
    if isinstance(value, tf_hcl.Ref):
        yield value
    elif isinstance(value, tf_hcl.Choice):
        for option in value.options:
            yield from _refs(option)


# --------------------------------------------------------------------------- main


def run_checks(repo: Repo) -> list[Check]:
    checks = []
    for check in (check_environment, check_google_calls, check_bindings):
        try:
            checks.append(check(repo))
        except tf_hcl.HclError as exc:  # Terraform this reader cannot follow: say where
            checks.append(Check(check.__name__, "", [f"cannot read the Terraform: {exc}"]))
    return checks


def report(checks: Iterable[Check]) -> tuple[str, bool]:
    lines: list[str] = []
    failed = False
    for check in checks:
        if check.problems:
            failed = True
            lines.append(f"FAIL: {check.name}")
            lines += [f"    - {problem}" for problem in check.problems]
        else:
            lines.append(f"ok: {check.name} ({check.summary})")
    return "\n".join(lines), failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    args = parser.parse_args(argv)
    text, failed = report(run_checks(Repo.load(args.root)))
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
