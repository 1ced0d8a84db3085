"""scripts/ci/infra_contract.py: the app and its Cloud Run deployment agree.

The real repository passes; each defect the check exists for (a setting Cloud Run never
gets, a typo, a call without a binding, a binding on the wrong account or resource) is
planted, in the real files or in a small synthetic module, and reported.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "ci"))
contract: Any = importlib.import_module("infra_contract")
tf_hcl: Any = importlib.import_module("tf_hcl")


@pytest.fixture(scope="module")
def repo() -> Any:
    return contract.Repo.load(ROOT)


def _sub(text: str, pattern: str, new: str = "", flags: int = re.MULTILINE) -> str:
    """``text`` with exactly one match of ``pattern`` replaced (the test fails loudly
    when the real file no longer has what it plants a defect in)."""
    changed, count = re.subn(pattern, new, text, count=1, flags=flags)
    assert count == 1, f"pattern not found: {pattern}"
    return changed


def _with_tf(repo: Any, name: str, pattern: str, new: str = "", flags: int = re.M) -> Any:
    terraform = dict(repo.terraform)
    terraform[name] = _sub(terraform[name], pattern, new, flags)
    return dataclasses.replace(repo, terraform=terraform)


def _without_resource(repo: Any, name: str, kind: str, label: str) -> Any:
    pattern = rf'^resource "{kind}" "{label}" \{{.*?^\}}\n'
    return _with_tf(repo, name, pattern, "", re.M | re.S)


def _problems(check: Any) -> str:
    return "\n".join(check.problems)


# --------------------------------------------------------------------------- the real repo


def test_the_repository_passes_every_check(repo: Any) -> None:
    checks = contract.run_checks(repo)
    assert [c.problems for c in checks] == [[], [], []], contract.report(checks)[0]


def test_the_script_runs_from_anywhere_and_says_ok(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ci" / "infra_contract.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("ok: ") for line in lines)


def test_the_workloads_and_their_accounts_come_from_cloudrun_tf(repo: Any) -> None:
    workloads, problems = contract.find_workloads(contract.load_module(repo.terraform))
    assert problems == []
    assert {w.name: w.account for w in workloads.values()} == {
        "api": "api",
        "worker": "worker",
        "migrate": "worker",
        "canary": "canary",  # runs the API's image, as its own account (count-indexed)
    }
    # Push-only variables come from a map chosen by var.worker_delivery: set on the worker.
    assert "LATAM_PUBSUB_PUSH_AUDIENCE" in workloads["worker"].env
    assert "LATAM_PUBSUB_PUSH_AUDIENCE" not in workloads["api"].env
    assert {"LATAM_DATABASE_URL", "LATAM_CLOUDSQL_IP_TYPE"} <= workloads["migrate"].env
    # Traces only where a sidecar receives them; the ID token only while the API is IAM-only.
    assert {"LATAM_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER"} <= workloads["worker"].env
    assert "LATAM_OTLP_ENDPOINT" not in workloads["migrate"].env
    assert {"LATAM_API_KEY", "LATAM_CANARY_ID_TOKEN_AUDIENCE"} <= workloads["canary"].env
    assert "LATAM_DATABASE_URL" not in workloads["canary"].env


def test_the_calls_found_are_the_pubsub_and_cloud_sql_ones(repo: Any) -> None:
    found = set(contract.google_calls(repo.sources))
    assert ("latam.broker.pubsub.adapter:PubsubBroker.ping", "get_topic") in found
    assert ("latam.broker.pubsub.dead_letters:DeadLetterStore._scan", "pull") in found
    # self._call("acknowledge", ...) dispatches through getattr: found by its string.
    assert ("latam.broker.pubsub.pullers:UnaryPuller.ack", "acknowledge") in found
    assert ("latam.storage.cloudsql:cloudsql_engine", "connect") in found
    # The canary's ID token for the IAM-only API.
    assert ("latam.process.canary:google_id_token", "fetch_id_token") in found
    # The adapter's own Puller and its own methods are not Google's.
    assert not {path for path, _ in found if path.endswith(("PubsubBroker.ack", ".dead_letter"))}


# --------------------------------------------------------------------------- environment


def test_a_setting_cloud_run_never_gets_is_reported(repo: Any) -> None:
    """The issue's defect: LATAM_CLOUDSQL_IP_TYPE missing, so the connector dials PRIVATE."""
    broken = _with_tf(repo, "cloudrun.tf", r"^\s*LATAM_CLOUDSQL_IP_TYPE\s*=.*\n")
    problems = _problems(contract.check_environment(broken))
    assert "LATAM_CLOUDSQL_IP_TYPE: not set for api, worker, migrate in cloudrun.tf" in problems


def test_a_new_setting_must_be_set_or_listed(repo: Any) -> None:
    settings = dict(repo.settings, LATAM_NEW_KNOB="new_knob")
    problems = _problems(contract.check_environment(dataclasses.replace(repo, settings=settings)))
    assert "LATAM_NEW_KNOB: not set for api, worker, migrate" in problems


def test_a_typo_in_terraform_is_reported(repo: Any) -> None:
    broken = _with_tf(repo, "cloudrun.tf", r"^(\s*)LATAM_LOG_LEVEL(\s*=)", r"\1LATAM_LOGLEVEL\2")
    problems = _problems(contract.check_environment(broken))
    assert "LATAM_LOGLEVEL: set for api in cloudrun.tf, but the app reads no such variable" in (
        problems
    )
    assert "LATAM_LOG_LEVEL: not set for api, worker, migrate" in problems


def test_a_listed_variable_that_terraform_sets_is_a_contradiction(repo: Any) -> None:
    row = "| `LATAM_LOG_LEVEL` | worker | planted |\n"
    readme = _sub(repo.readme, r"^(\| `LATAM_PORT` \|)", row + r"\1")
    problems = _problems(contract.check_environment(dataclasses.replace(repo, readme=readme)))
    assert "LATAM_LOG_LEVEL: listed as left to its default for worker, but cloudrun.tf sets" in (
        problems
    )


def test_a_listed_variable_the_image_sets_is_a_contradiction(repo: Any) -> None:
    readme = _sub(repo.readme, r"^(\| `LATAM_PORT` \|)", "| `LATAM_HOST` | all | planted |\n\\1")
    problems = _problems(contract.check_environment(dataclasses.replace(repo, readme=readme)))
    assert "LATAM_HOST: listed as left to its default, but the image (Dockerfile) sets it" in (
        problems
    )


def test_a_listed_name_the_app_does_not_read_is_reported(repo: Any) -> None:
    row = "| `LATAM_NOT_A_SETTING` | all | planted |\n"
    readme = _sub(repo.readme, r"^(\| `LATAM_PORT` \|)", row + r"\1")
    problems = _problems(contract.check_environment(dataclasses.replace(repo, readme=readme)))
    assert "LATAM_NOT_A_SETTING: listed in" in problems


def test_what_the_image_sets_counts_as_set(repo: Any) -> None:
    dockerfile = _sub(repo.dockerfile, r"LATAM_HOST=0\.0\.0\.0\s*\\\n\s*")
    problems = _problems(
        contract.check_environment(dataclasses.replace(repo, dockerfile=dockerfile))
    )
    assert "LATAM_HOST: not set for api, worker, migrate" in problems


def test_variables_the_code_reads_directly_must_be_set_or_listed(repo: Any) -> None:
    sources = dict(
        repo.sources,
        **{
            "latam.planted": 'import os\nNAME = "LATAM_SECRET_SAUCE"\n'
            'def f():\n    return os.environ.get(NAME), os.getenv("OTHER_KNOB")\n'
        },
    )
    problems = _problems(contract.check_environment(dataclasses.replace(repo, sources=sources)))
    assert "LATAM_SECRET_SAUCE: not set for api, worker, migrate" in problems
    assert "OTHER_KNOB: not set for api, worker, migrate" in problems


def test_an_options_envvar_is_a_variable_the_app_reads(repo: Any) -> None:
    """``click.option(..., envvar=...)`` reads the environment as surely as os.environ."""
    assert {"LATAM_API_KEY", "LATAM_CANARY_ID_TOKEN_AUDIENCE"} <= contract.click_env(repo.sources)
    planted = (
        "import click\n"
        'opt = click.option("--knob", envvar="LATAM_KNOB")\n'
        'both = click.option("--x", envvar=["LATAM_X", "X_FALLBACK"])\n'
    )
    sources = dict(repo.sources, **{"latam.cli.planted": planted})
    problems = _problems(contract.check_environment(dataclasses.replace(repo, sources=sources)))
    assert "LATAM_KNOB: not set for api, worker, migrate, canary" in problems
    assert "X_FALLBACK: not set for api, worker, migrate, canary" in problems


def test_a_library_variable_may_be_set_and_need_not_be(repo: Any) -> None:
    """OTEL_TRACES_SAMPLER is the OpenTelemetry SDK's: set on the API and the worker, not a
    typo; left unset on migrate and the canary, not missing. Any other name is a typo."""
    problems = _problems(contract.check_environment(repo))
    assert "OTEL_TRACES_SAMPLER" not in problems
    broken = _with_tf(repo, "tracing.tf", r"OTEL_TRACES_SAMPLER(\s+=)", r"OTEL_TRACE_SAMPLER\1")
    problems = _problems(contract.check_environment(broken))
    assert "OTEL_TRACE_SAMPLER: set for api in cloudrun.tf, but the app reads no such" in problems


def test_a_workload_running_another_workloads_image_is_checked_too(repo: Any) -> None:
    """The canary runs the API's image: a setting it lacks is reported for it."""
    broken = _with_tf(repo, "cloudrun.tf", r"^\s*LATAM_LOG_LEVEL\s*=\s*\"INFO\"\n(?=\s*\})", "")
    problems = _problems(contract.check_environment(broken))
    assert "LATAM_LOG_LEVEL: not set for canary in cloudrun.tf" in problems


# --------------------------------------------------------------------------- google calls


def test_a_google_call_without_a_row_is_reported(repo: Any) -> None:
    planted = "def rewind(subscriber):\n    subscriber.seek(request={})\n"
    sources = dict(repo.sources, **{"latam.broker.pubsub.rewind": planted})
    problems = _problems(contract.check_google_calls(dataclasses.replace(repo, sources=sources)))
    assert "latam.broker.pubsub.rewind:rewind (line 2) calls Google's seek" in problems


def test_a_call_whose_rows_were_removed_is_reported(repo: Any) -> None:
    readme, count = re.subn(
        r"^\| `latam\.broker\.pubsub\.adapter:PubsubBroker\.ping`.*\n", "", repo.readme, flags=re.M
    )
    assert count == 2  # one row per identity that calls it
    problems = _problems(contract.check_google_calls(dataclasses.replace(repo, readme=readme)))
    assert "latam.broker.pubsub.adapter:PubsubBroker.ping (line" in problems
    assert "calls Google's get_topic, but no row" in problems


def test_a_row_for_a_call_the_code_no_longer_makes_is_stale(repo: Any) -> None:
    row = "| `latam.gone:f` | `pull` | worker | — | — | — | planted |\n"
    readme = _sub(repo.readme, r"^(\| `latam\.storage\.cloudsql)", row + r"\1")
    problems = _problems(contract.check_google_calls(dataclasses.replace(repo, readme=readme)))
    assert "row latam.gone:f | pull: the code makes no such call" in problems


def test_a_prometheus_api_query_is_a_call_of_its_module(repo: Any) -> None:
    """The Prometheus HTTP API has no client method: its query path names the call,
    wherever the module builds the URL."""
    planted = 'PATH = "/api/v1/query_range"\n\n\ndef url(base):\n    return base + PATH\n'
    sources = dict(repo.sources, **{"latam.planted_prom": planted})
    found = contract.google_calls(sources)
    assert found[("latam.planted_prom", "prometheus_query")] == 1
    problems = _problems(contract.check_google_calls(dataclasses.replace(repo, sources=sources)))
    assert "latam.planted_prom (line 1) calls Google's prometheus_query, but no row" in problems


# --------------------------------------------------------------------------- bindings


def test_the_api_without_the_dead_letter_binding_is_reported(repo: Any) -> None:
    """The issue's defect: /v1/dead-letters could not pull the dead-letter subscription."""
    broken = _without_resource(
        repo, "pubsub.tf", "google_pubsub_subscription_iam_member", "api_dead_letter_subscriber"
    )
    problems = _problems(contract.check_bindings(broken))
    assert "DeadLetterStore._scan | pull | api: google_pubsub_subscription_iam_member" in problems
    assert "api_dead_letter_subscriber does not exist" in problems


def test_the_worker_without_get_topic_is_reported(repo: Any) -> None:
    """The issue's defect: the worker's health check called GetTopic with no viewer role."""
    broken = _without_resource(repo, "pubsub.tf", "google_pubsub_topic_iam_member", "worker_viewer")
    problems = _problems(contract.check_bindings(broken))
    assert "PubsubBroker.ping | get_topic | worker" in problems


def test_a_role_that_lacks_the_permission_is_reported(repo: Any) -> None:
    """Pointing get_topic at the worker's publisher binding: publisher has no topics.get."""
    readme = _sub(
        repo.readme,
        r"(PubsubBroker\.ping` \| `get_topic` \| worker \| )`roles/pubsub\.viewer`(.*?)"
        r"`google_pubsub_topic_iam_member\.worker_viewer`",
        r"\1`roles/pubsub.publisher`\2`google_pubsub_topic_iam_member.worker_replay_publisher`",
    )
    problems = _problems(contract.check_bindings(dataclasses.replace(repo, readme=readme)))
    assert "get_topic as worker on google_pubsub_topic.ingest: roles/pubsub.publisher" in problems
    assert "do not grant pubsub.topics.get" in problems


def test_a_binding_for_the_wrong_account_is_reported(repo: Any) -> None:
    broken = _with_tf(
        repo,
        "pubsub.tf",
        r'("api_dead_letter_subscriber" \{.*?member\s*=\s*)google_service_account\.api\.member',
        r"\1google_service_account.worker.member",
        re.S,
    )
    problems = _problems(contract.check_bindings(broken))
    assert (
        "api_dead_letter_subscriber grants it to google_service_account.worker.member, but api"
        " runs as google_service_account.api"
    ) in problems


def test_a_binding_on_the_wrong_resource_or_role_is_reported(repo: Any) -> None:
    broken = _with_tf(
        repo,
        "pubsub.tf",
        r'("api_dead_letter_subscriber" \{.*?subscription\s*=\s*)google_pubsub_subscription'
        r'\.dead_letter\.name(.*?role\s*=\s*)"roles/pubsub\.subscriber"',
        r'\1google_pubsub_subscription.worker.name\2"roles/pubsub.viewer"',
        re.S,
    )
    problems = _problems(contract.check_bindings(broken))
    assert (
        "is on google_pubsub_subscription.worker, not google_pubsub_subscription.dead_letter"
        in (problems)
    )
    assert "api_dead_letter_subscriber grants 'roles/pubsub.viewer'" in problems


def test_a_pubsub_binding_no_code_needs_is_reported(repo: Any) -> None:
    extra = (
        '\nresource "google_pubsub_subscription_iam_member" "api_worker_subscriber" {\n'
        "  subscription = google_pubsub_subscription.worker.name\n"
        '  role         = "roles/pubsub.subscriber"\n'
        "  member       = google_service_account.api.member\n}\n"
    )
    terraform = dict(repo.terraform, **{"extra.tf": extra})
    problems = _problems(contract.check_bindings(dataclasses.replace(repo, terraform=terraform)))
    assert "google_pubsub_subscription_iam_member.api_worker_subscriber grants" in problems
    assert "no row" in problems


def test_terraform_the_reader_cannot_follow_fails_the_checks(repo: Any) -> None:
    terraform = dict(repo.terraform, **{"broken.tf": 'locals {\n  x = "open\n}\n'})
    checks = contract.run_checks(dataclasses.replace(repo, terraform=terraform))
    assert "infra/modules/latam/broken.tf: line 2: unterminated string" in _problems(checks[0])
    assert "broken.tf" in _problems(checks[2])


def test_a_missing_for_each_instance_is_reported(repo: Any) -> None:
    broken = _with_tf(repo, "iam.tf", r'^(\s*)"roles/cloudsql\.instanceUser",.*\n')
    problems = _problems(contract.check_bindings(broken))
    assert 'has no instance ["api-roles/cloudsql.instanceUser"]' in problems


def test_the_migrate_job_running_as_another_account_is_reported(repo: Any) -> None:
    """migrate's rows are checked against the account the job really runs as."""
    broken = _with_tf(
        repo,
        "cloudrun.tf",
        r'(resource "google_cloud_run_v2_job" "migrate".*?service_account\s*=\s*)'
        r"google_service_account\.worker\.email",
        r"\1google_service_account.api.email",
        re.S,
    )
    problems = _problems(contract.check_bindings(broken))
    assert "identity migrate runs as google_service_account.api (cloudrun.tf)" in problems
    assert "but migrate runs as google_service_account.api" in problems


# --------------------------------------------------------------------------- synthetic module

SYNTHETIC_TF = """
locals {
  image = var.image
  env   = { LATAM_BROKER_URL = "pubsub://p/t?subscription=s" }
}

resource "google_service_account" "api" {
  account_id = "api"
}

resource "google_pubsub_topic" "ingest" {
  name = "ingest"
}

resource "google_pubsub_topic_iam_member" "api_publisher" {
  topic  = google_pubsub_topic.ingest.name
  role   = "roles/pubsub.publisher"
  member = google_service_account.api.member
}

resource "google_cloud_run_v2_service" "api" {
  template {
    service_account = google_service_account.api.email
    containers {
      image = local.image
      dynamic "env" {
        for_each = local.env
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name  = "LATAM_HOST"
        value = "0.0.0.0"
      }
    }
    containers {
      image = "sidecar"
      env {
        name  = "NOT_THE_APP"
        value = "x"
      }
    }
  }
}
"""

SYNTHETIC_README = """
## Settings left to their defaults in Cloud Run

| Variable | Workloads | Why |
| --- | --- | --- |
| `LATAM_PORT` | api | Cloud Run's PORT |

## Permissions the code needs

| Identity | Runs | Service account |
| --- | --- | --- |
| `api` | the API | `google_service_account.api` |

| Code path | Google API call | Identity | Role | On | Terraform resource |
| --- | --- | --- | --- | --- | --- |
""" + (
    "| `latam.send:send` | `publish` | api | `roles/pubsub.publisher` |"
    " `google_pubsub_topic.ingest` | `google_pubsub_topic_iam_member.api_publisher` |\n"
)


@pytest.fixture
def synthetic() -> Any:
    return contract.Repo(
        terraform={"main.tf": SYNTHETIC_TF},
        readme=SYNTHETIC_README,
        dockerfile="FROM python AS build\nENV LATAM_PORT=1\nFROM python\nENV A=1\n",
        entrypoint="#!/bin/sh\n# $PORT in a comment is not read\nexec latam\n",
        sources={
            "latam.send": "from google.cloud import pubsub_v1\n"
            "def send(publisher):\n    publisher.publish(topic='t', messages=[])\n"
        },
        settings={
            "LATAM_BROKER_URL": "broker_url",
            "LATAM_HOST": "host",
            "LATAM_PORT": "port",
        },
    )


def test_a_small_consistent_module_passes(synthetic: Any) -> None:
    checks = contract.run_checks(synthetic)
    assert [c.problems for c in checks] == [[], [], []], contract.report(checks)[0]


def test_only_the_runtime_stage_of_the_dockerfile_counts(synthetic: Any) -> None:
    readme = synthetic.readme.replace("| `LATAM_PORT` | api | Cloud Run's PORT |\n", "")
    check = contract.check_environment(dataclasses.replace(synthetic, readme=readme))
    assert check.problems == [
        "LATAM_PORT: not set for api in cloudrun.tf nor by the image, and not listed in"
        ' infra/README.md "Settings left to their defaults in Cloud Run"'
    ]


def test_the_report_has_one_line_per_check_and_one_per_problem(synthetic: Any) -> None:
    broken = dataclasses.replace(synthetic, readme=synthetic.readme.replace("api_publisher`", "x`"))
    text, failed = contract.report(contract.run_checks(broken))
    assert failed
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines if not line.startswith("    ")] == [
        "ok",
        "ok",
        "FAIL",
    ]
    assert (
        "    - row latam.send:send | publish | api: google_pubsub_topic_iam_member.x does" in text
    )


def test_main_exits_1_on_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for relative in ("infra/modules/latam", "scripts", "src/latam"):
        (tmp_path / relative).mkdir(parents=True)
    (tmp_path / "infra/modules/latam/main.tf").write_text(SYNTHETIC_TF)
    (tmp_path / "infra/README.md").write_text(SYNTHETIC_README.replace("publish`", "pull`"))
    (tmp_path / "Dockerfile").write_text("FROM python\n")
    (tmp_path / "scripts/docker-entrypoint.sh").write_text("exec latam\n")
    assert contract.main(["--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL: google calls" in out
    assert "row latam.send:send | pull: the code makes no such call" in out


# --------------------------------------------------------------------------- the HCL reader


def test_the_reader_evaluates_what_the_module_uses() -> None:
    body = tf_hcl.parse(
        """
        locals {
          roles = ["b", "a"]  # a comment
          /* a block
             comment */
          on    = var.mode == "push" ? { X = 1, "Y" = 2 } : {}
          all   = merge({ Z = "${upper("z")}-${length(local.roles)}" }, local.on)
          pairs = merge([
            for name, spec in { one = ["r1"], two = ["r2", "r3"] } : {
              for reader in spec : "${name}/${reader}" => { name = name }
            }
          ]...)
          set   = { for r in toset(local.roles) : "k-${r}" => r if r != "b" }
          ref   = google_service_account.api.member
          key   = google_secret_manager_secret.this["api-token"].secret_id
          text  = "quoted \\"${local.roles[0]}\\" and $${literal}"
          doc   = <<-EOT
            a heredoc is not evaluated
          EOT
        }
        """
    )
    evaluator = tf_hcl.Evaluator(body.blocks[0].body.attributes)
    assert isinstance(evaluator.local("on"), tf_hcl.Choice)
    assert set(evaluator.local("all")) == {"Z", "X", "Y"}  # either branch may be taken
    assert evaluator.local("all")["Z"] == "Z-2"
    assert set(evaluator.local("pairs")) == {"one/r1", "two/r2", "two/r3"}
    assert evaluator.local("set") == {"k-a": "a"}
    assert evaluator.local("ref").resource() == "google_service_account.api"
    assert evaluator.local("key").path == 'google_secret_manager_secret.this["api-token"].secret_id'
    assert evaluator.local("text") == 'quoted "b" and ${literal}'
    assert isinstance(evaluator.local("doc"), tf_hcl.Unknown)
    assert isinstance(evaluator.local("all")["X"], int)


def test_the_reader_says_where_the_text_is_wrong() -> None:
    with pytest.raises(tf_hcl.HclError, match="line 3"):
        tf_hcl.parse('a = 1\nb = 2\nc = "open\n')


def test_the_reader_reads_every_terraform_file_of_the_repository() -> None:
    """python-hcl2 parses every .tf file; blocks and attributes keep their line and source
    (what the checks report and match on, e.g. a container's ``image = local.image``)."""
    paths = sorted((ROOT / "infra").rglob("*.tf"))
    assert paths
    for path in paths:
        text = path.read_text()
        lines = text.splitlines()
        body = tf_hcl.parse(text)
        assert body.blocks, path
        for block in body.blocks:
            assert lines[block.line - 1].startswith(block.type), (path, block.line)
            for name, attribute in block.body.attributes.items():
                line = lines[attribute.line - 1]
                assert line.lstrip().startswith(name), (path, attribute.line)
                assert attribute.source.splitlines()[0] in line, (path, attribute.line)
    cloudrun = tf_hcl.parse((ROOT / "infra/modules/latam/cloudrun.tf").read_text())
    images = [
        container.body.attributes["image"].source
        for resource in cloudrun.blocks_of("resource")
        for template in resource.body.blocks_of("template")
        for container in template.body.blocks_of("containers")
    ]
    assert images.count("local.image") == 2  # the api and worker services (the job nests deeper)


def test_the_canary_without_its_invoker_binding_is_reported(repo: Any) -> None:
    """An IAM-only API refuses the canary's ID token unless its account may invoke it."""
    broken = _without_resource(
        repo, "cloudrun.tf", "google_cloud_run_v2_service_iam_member", "canary_invoker"
    )
    problems = _problems(contract.check_bindings(broken))
    assert "google_id_token | fetch_id_token | canary: google_cloud_run_v2_service_iam_member" in (
        problems
    )


def test_the_status_page_without_monitoring_viewer_is_reported(repo: Any) -> None:
    broken = _with_tf(
        repo,
        "iam.tf",
        r'("api_monitoring_viewer" \{.*?role\s*=\s*)"roles/monitoring\.viewer"',
        r'\1"roles/monitoring.metricWriter"',
        re.S,
    )
    problems = _problems(contract.check_bindings(broken))
    assert "api_monitoring_viewer grants 'roles/monitoring.metricWriter'" in problems
