"""deploy/ on paper: the Helm values use only keys the Dagster chart knows, and everything they
name (the code location module, its port, environment variables, secrets, the training pool and
the image's pins) exists in the project. No cluster runs here."""

from __future__ import annotations

import copy
import importlib
import json
import re
import tomllib

import dagster as dg
import jsonschema
import pytest
import yaml

from model_factory.core.settings import POSTGRES_ENV
from model_factory_tests.dagster_server import ROOT

DEPLOY = ROOT / "deploy"
SCHEMA = json.loads((DEPLOY / "dagster-chart-values.schema.json").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def values() -> dict:
    return yaml.safe_load((DEPLOY / "values.yaml").read_text())


def errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def code_location(doc: dict) -> dict:
    [deployment] = doc["dagster-user-deployments"]["deployments"]
    return deployment


def test_values_use_only_keys_the_chart_knows():
    assert errors(values()) == []


@pytest.mark.parametrize(
    "path, key",
    [
        (("runLauncher", "config", "k8sRunLauncher"), "envSecret"),  # misspelt
        (("concurrency", "pools"), "trainingLimit"),  # not a chart key
        (("dagster-user-deployments", "deployments", 0), "codeServerArg"),
        ((), "userDeployments"),  # the pre-1.0 name
        (("dagsterDaemon", "runMonitoring"), "free_slots_after_run_end_seconds"),  # dagster.yaml's
    ],
)
def test_the_schema_refuses_keys_the_chart_does_not_know(path, key):
    doc = copy.deepcopy(values())
    node = doc
    for part in path:
        node = node[part]
    node[key] = node.get(key, ["x"])
    assert any(key in e for e in errors(doc)), errors(doc)


def test_the_code_location_is_the_projects_definitions_module():
    deployment = code_location(values())
    args = deployment["codeServerArgs"]
    module = args[args.index("-m") + 1]
    # The same module the local workspace and `dg` load, and it really holds the definitions.
    assert module == PYPROJECT["tool"]["dagster"]["module_name"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == module
    defs = importlib.import_module(module).defs
    if not isinstance(defs, dg.Definitions):  # @dg.definitions: built lazily, as the server does
        defs = defs()
    assert defs.resolve_job_def("weekly_training") is not None
    # The image serves that module on the port the chart's Service targets.
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"EXPOSE {deployment['port']}" in dockerfile
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd[cmd.index("-m") + 1] == module and cmd[cmd.index("-p") + 1] == str(
        deployment["port"]
    )


def test_environment_variables_and_secrets_exist_in_the_project():
    doc = values()
    env = code_location(doc)["env"]
    source = "\n".join(p.read_text() for p in (ROOT / "model_factory").rglob("*.py"))
    ours = [name for name in env if name.startswith("MODEL_FACTORY_")]
    assert {"MODEL_FACTORY_CATALOG", "MODEL_FACTORY_STORE", "MODEL_FACTORY_REGISTRY"} <= set(ours)
    for name in ours:
        assert f'"{name}"' in source, f"{name} is not read anywhere in model_factory/"
    for name in ("MODEL_FACTORY_CATALOG", "MODEL_FACTORY_STORE", "MODEL_FACTORY_REGISTRY"):
        assert env[name].startswith("s3://"), name
    # Credentials only through Secrets; the Secrets named are the ones the example defines.
    assert not any(re.search(r"SECRET|PASSWORD|ACCESS_KEY", name) for name in env)
    assert doc["postgresql"]["postgresqlPassword"] == ""
    assert doc["generatePostgresqlPasswordSecret"] is False
    secrets = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((DEPLOY / "secrets.example.yaml").read_text())
    }
    assert "postgresql-password" in secrets[doc["global"]["postgresqlSecretName"]]["stringData"]
    named = {s["name"] for s in code_location(doc)["envSecrets"]}
    named |= {s["name"] for s in doc["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]}
    assert named <= set(secrets)
    s3 = secrets["model-factory-s3"]["stringData"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(s3)


def test_k8s_run_launcher_postgres_and_the_training_pool_limit():
    doc = values()
    assert doc["runLauncher"]["type"] == "K8sRunLauncher"
    assert doc["postgresql"]["enabled"] is False and doc["postgresql"]["postgresqlHost"]
    # The same driver choice as dagster.postgres.yaml (SQLAlchemy 2.1 defaults to psycopg 3).
    local = yaml.safe_load((ROOT / "dagster.postgres.yaml").read_text())
    assert (
        doc["postgresql"]["postgresqlScheme"]
        == local["storage"]["postgres"]["postgres_db"]["scheme"]
    )
    assert {
        v["env"]
        for v in local["storage"]["postgres"]["postgres_db"].values()
        if isinstance(v, dict)
    } == set(POSTGRES_ENV)
    # The run limit in one place only (the chart fails when both are set).
    assert (
        doc["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"][
            "maxConcurrentRuns"
        ]
        is None
    )
    assert doc["concurrency"]["enabled"] is True
    assert doc["concurrency"]["runs"]["maxConcurrentRuns"] >= 1
    assert doc["concurrency"]["pools"]["defaultLimit"] >= 1
    # A dead run pod gives its pool slot back as the local instance does (the chart renders
    # this key into run_monitoring.free_slots_after_run_end_seconds; its default 0 never frees).
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert (
        doc["dagsterDaemon"]["runMonitoring"]["freeSlotsAfterRunEndSeconds"]
        == local["run_monitoring"]["free_slots_after_run_end_seconds"]
        > 0
    )
    # ... and the pool it limits is the one the model asset uses.
    from model_factory.defs.assets import model

    assert model.op.pool == "training"


def test_the_image_pins_dagster_k8s_to_the_projects_dagster_patch():
    deps = PYPROJECT["project"]["dependencies"]
    dagster_pin = next(d for d in deps if d.startswith("dagster=="))
    patch = dagster_pin.split("==")[1].split(".")[2]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert f"dagster-k8s==0.29.{patch}" in extras["k8s"]
    assert f"dagster-postgres==0.29.{patch}" in deps
    assert "'.[s3,k8s]'" in (DEPLOY / "Dockerfile").read_text()
    readme = (DEPLOY / "README.md").read_text()
    assert "PipesK8sClient" in readme and "open_dagster_pipes" in readme
