#!/usr/bin/env python3
"""Render docs/architecture.png: the latam deployment on Google Cloud.

Requires the ``diagrams`` package (requirements/docs.txt) and Graphviz's ``dot``.
Usage: python scripts/diagram.py [--output docs/architecture]   (".png" is appended)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diagrams import Cluster, Diagram, Edge
from diagrams.gcp.analytics import Bigquery, Pubsub
from diagrams.gcp.compute import Run
from diagrams.gcp.database import SQL
from diagrams.gcp.devtools import ContainerRegistry
from diagrams.gcp.operations import Monitoring
from diagrams.gcp.security import Iam, SecretManager
from diagrams.onprem.ci import GithubActions
from diagrams.onprem.client import Users

GRAPH_ATTR = {"fontsize": "20", "pad": "0.4", "dpi": "72", "splines": "spline"}


def render(output: Path) -> Path:
    """Draw the diagram to ``output`` + ".png" and return that path."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with Diagram(
        "latam on Google Cloud",
        filename=str(output),
        outformat="png",
        show=False,
        direction="LR",
        graph_attr=GRAPH_ATTR,
    ):
        producers = Users("producers")
        readers = Users("API readers")

        with Cluster("Cloud Run"):
            api = Run("latam api")
            worker = Run("latam worker")

        with Cluster("Pub/Sub"):
            ingest = Pubsub("ingest topic")
            dead_letter = Pubsub("dead-letter topic\n+ subscription")

        store = SQL("Cloud SQL\nPostgreSQL")
        analytics = Bigquery("BigQuery\n(BigQuery subscription)")
        secrets = SecretManager("Secret Manager")
        monitoring = Monitoring("Cloud Monitoring\nManaged Prometheus, SLOs")

        with Cluster("Delivery"):
            github = GithubActions("GitHub Actions")
            federation = Iam("Workload Identity\nFederation")
            registry = ContainerRegistry("Artifact Registry")

        producers >> Edge(label="POST /v1/topics/{id}/messages") >> api
        producers >> Edge(label="publish (client libs)", style="dashed") >> ingest
        api >> Edge(label="publish") >> ingest
        ingest >> Edge(label="worker subscription") >> worker
        ingest >> Edge(label="copy") >> analytics
        ingest >> Edge(label="max attempts", color="firebrick") >> dead_letter
        worker >> Edge(label="idempotent batch insert") >> store
        api >> Edge(label="read pages") >> store
        readers >> Edge(label="GET") >> api
        secrets >> Edge(label="secrets", style="dotted") >> [api, worker]
        [api, worker] >> Edge(label="/metrics", style="dotted") >> monitoring
        github >> Edge(label="OIDC") >> federation
        github >> Edge(label="image by digest") >> registry
        registry >> Edge(label="deploy canary", style="dashed") >> api
    return output.with_suffix(".png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/architecture", help="path without .png")
    args = parser.parse_args()
    path = render(Path(args.output))
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
