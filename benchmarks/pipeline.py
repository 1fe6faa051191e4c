"""Scale benchmark of the whole pipeline (issue 8): one partition end to end, and a backfill.

    .venv/bin/python benchmarks/pipeline.py [--events 1000000 --events 10000000]
        [--backfill-weeks 12] [--concurrency 1 --concurrency 2] [--skip-partition]
        [--skip-backfill] [--workdir /tmp/mf_pipeline_bench]

Not a test: it prints tables (and what it ran).

**One partition end to end.** Demo data sized so that the first trainable week's frame holds
about N events (train + val + test windows: 28 + 7 + 7 days of a simulated card stream, so
N / (1.6 tx/day x 42 days) customers and twice as many terminals), written once per size and
cached in the workdir. Each size then runs in its own subprocess: one run of the
`weekly_training` job for that week through Dagster (`execute_in_process` on a fresh local
instance and a fresh store, exactly what `model-factory run` does), and the table shows per stage
(intake, frame, train, evaluate, gate, bundle):

  core s    the stage's own work (the pure-Python core function, the `seconds` the stage records)
  step s    the Dagster step from STEP_START to STEP_SUCCESS in the event log (core work plus the
            asset body around it: upstream lookups in the instance, the ledger journal, metadata)
  run s     the whole run, wall clock, from the call to its return (run creation, step
            orchestration, event log writes, the resource, the asset checks)

and the Dagster share = (run s - sum of core s) / run s: everything that is not the stages' own
work. Peak RSS is the subprocess's `ru_maxrss`.

**A backfill.** The default demo data (5,000 customers, 26 weeks, ~224k training rows a week), a
real `dagster dev` (webserver + daemon, the test harness in model_factory_tests/dagster_server.py)
on a fresh SQLite instance per setting, `dagster.yaml` as shipped but with
`runs.max_concurrent_runs` set to 1 or 2 (the `training` pool keeps one fit at a time in both),
and a backfill of the six stages over the first N trainable weeks launched through GraphQL as
the UI does. Wall time runs from the launch until every run of the backfill has finished; the
publish sensor's runs share the same queue, as they do in operation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = {  # asset -> stage name in the table
    "dataset_manifests": "intake",
    "training_frame": "frame",
    "model": "train",
    "evaluation_report": "evaluate",
    "gate_receipt": "gate",
    "model_bundle": "bundle",
}
TX_PER_DAY = 1.6  # DemoDataSpec.mean_tx_per_day
FRAME_DAYS = 28 + 7 + 7  # the default split policy's train + val + test windows


def _spec_for(events: int):
    from model_factory.core.demo_data import DemoDataSpec

    customers = max(200, round(events / (TX_PER_DAY * FRAME_DAYS)))
    # 9 weeks: the 7 weeks of history before the first trainable week, its test week and the
    # maturity gap after it.
    return DemoDataSpec(customers=customers, terminals=2 * customers, weeks=9)


def _catalog(workdir: Path, events: int) -> Path:
    from model_factory.core.demo_data import generate_demo_data

    spec = _spec_for(events)
    path = workdir / f"catalog-{spec.customers}c-{spec.weeks}w"
    if not (path / ".complete").exists():
        shutil.rmtree(path, ignore_errors=True)
        started = time.perf_counter()
        generate_demo_data(str(path), spec)
        (path / ".complete").write_text("")
        print(
            f"  demo data for ~{events:,} events/partition ({spec.customers:,} customers): "
            f"{time.perf_counter() - started:.0f}s",
            flush=True,
        )
    return path


# ------------------------------------------------------------------- one partition (subprocess)


def partition_child(catalog: Path, scratch: Path) -> dict:
    """Runs in its own process: one week through the job on a fresh instance and store."""
    os.environ.update(
        {
            "MODEL_FACTORY_CATALOG": str(catalog),
            "MODEL_FACTORY_STORE": str(scratch / "store"),
            "MODEL_FACTORY_REGISTRY": str(scratch / "registry"),
            "MODEL_FACTORY_HOME": str(scratch / "home"),
        }
    )
    os.environ.pop("MODEL_FACTORY_POLICY", None)
    import dagster as dg

    from model_factory.contracts import TrainingConfig
    from model_factory.core.manifests import Catalog
    from model_factory.definitions import defs
    from model_factory.runner import run_week, trainable_weeks

    week = trainable_weeks(Catalog(str(catalog)), TrainingConfig())[0]
    definitions = defs()
    (scratch / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(scratch / "dagster")) as instance:
        started = time.perf_counter()
        summary = run_week(instance, definitions, week)
        run_seconds = time.perf_counter() - started
        if summary.status != "succeeded":
            raise SystemExit(f"week {week} failed: {summary.error}")
        [run] = instance.get_run_records(filters=dg.RunsFilter(job_name="weekly_training"))
        steps: dict[str, dict[str, float]] = {}
        for rec in instance.get_records_for_run(
            run.dagster_run.run_id,
            of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS},
        ).records:
            entry = rec.event_log_entry
            steps.setdefault(entry.step_key, {})[entry.dagster_event.event_type_value] = (
                entry.timestamp
            )
        stages, rows = {}, {}
        for asset, name in STAGES.items():
            [mat] = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
            meta = {
                k: getattr(v, "value", v) for k, v in mat.asset_materialization.metadata.items()
            }
            step = steps[asset]
            stages[name] = {
                "core": float(meta["seconds"]),
                "step": step["STEP_SUCCESS"] - step["STEP_START"],
            }
            if asset == "training_frame":
                rows = {
                    k: int(meta[k]) for k in ("train_rows", "val_rows", "test_rows") if k in meta
                }
    return {
        "week": week,
        "run": run_seconds,
        "stages": stages,
        "rows": rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_partition(workdir: Path, events: int) -> dict:
    catalog = _catalog(workdir, events)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--_partition-child", str(catalog), str(scratch)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
        if out.returncode != 0:
            raise SystemExit(f"partition run at {events:,} events failed:\n{out.stderr[-4000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def print_partition_table(results: dict[int, dict]) -> None:
    sizes = list(results)
    head = f"{'stage':<10}" + "".join(f"{f'{n:,} events: core s':>26}{'step s':>9}" for n in sizes)
    print(head)
    for name in STAGES.values():
        print(
            f"{name:<10}"
            + "".join(
                f"{results[n]['stages'][name]['core']:>26.2f}{results[n]['stages'][name]['step']:>9.2f}"
                for n in sizes
            )
        )
    print(f"{'run':<10}" + "".join(f"{results[n]['run']:>35.2f}" for n in sizes))
    shares = []
    for n in sizes:
        core = sum(s["core"] for s in results[n]["stages"].values())
        shares.append((results[n]["run"] - core, (results[n]["run"] - core) / results[n]["run"]))
    print(f"{'dagster':<10}" + "".join(f"{f'{s:.2f}s = {p:.0%}':>35}" for s, p in shares))
    print(
        f"{'frame rows':<10}" + "".join(f"{sum(results[n]['rows'].values()):>35,}" for n in sizes)
    )
    print(f"{'peak RSS':<10}" + "".join(f"{results[n]['peak_rss_mb']:>30,.0f} MB" for n in sizes))


# ------------------------------------------------------------------------------------- backfill


def run_backfill(workdir: Path, weeks: int, concurrency: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import dagster as dg
    import yaml
    from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

    from model_factory.contracts import TrainingConfig
    from model_factory.core.demo_data import DemoDataSpec, generate_demo_data
    from model_factory.core.manifests import Catalog
    from model_factory.runner import trainable_weeks
    from model_factory_tests.dagster_server import DagsterServer, free_port, wait_for

    catalog = workdir / "catalog-default"
    if not (catalog / ".complete").exists():
        shutil.rmtree(catalog, ignore_errors=True)
        generate_demo_data(str(catalog), DemoDataSpec())
        (catalog / ".complete").write_text("")
    keys = trainable_weeks(Catalog(str(catalog)), TrainingConfig())[:weeks]
    if len(keys) < weeks:
        raise SystemExit(f"the default demo data has only {len(keys)} trainable weeks")
    root = Path(tempfile.mkdtemp(prefix=f"backfill-{concurrency}-", dir=workdir))
    home = root / "dagster"
    home.mkdir()
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = concurrency
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MODEL_FACTORY_HOME": str(root / "home"),
        "MODEL_FACTORY_CATALOG": str(catalog),
        "MODEL_FACTORY_STORE": str(root / "store"),
        "MODEL_FACTORY_REGISTRY": str(root / "registry"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MODEL_FACTORY_POLICY", None)
    env.pop("MODEL_FACTORY_INSTANCE", None)
    server = DagsterServer(root=root, env=env, port=free_port(), log=root / "dagster-dev.log")
    try:
        server.start()
        started = time.time()
        launched = server.graphql(
            LAUNCH_PARTITION_BACKFILL_MUTATION,
            {
                "backfillParams": {
                    "partitionNames": keys,
                    "assetSelection": [{"path": [a]} for a in STAGES],
                    "title": f"benchmark, {concurrency} concurrent run(s)",
                }
            },
        )["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        instance = server.instance()

        def finished():
            runs = instance.get_run_records(
                filters=dg.RunsFilter(tags={"dagster/backfill": launched["backfillId"]})
            )
            return (
                runs
                if len(runs) == len(keys) and all(r.dagster_run.is_finished for r in runs)
                else None
            )

        runs = wait_for("the backfill's runs", finished, timeout=3600, every=2, log=server.log)
        wall = max(r.end_time for r in runs) - started
        failed = [r for r in runs if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
        busy = sum(r.end_time - r.start_time for r in runs)
        return {
            "weeks": len(keys),
            "concurrency": concurrency,
            "wall": wall,
            "run_seconds": busy,
            "failed": len(failed),
            "first": keys[0],
            "last": keys[-1],
        }
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        action="append",
        help="events per partition frame (repeatable; default 1,000,000)",
    )
    parser.add_argument("--backfill-weeks", type=int, default=12)
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        help="max concurrent runs for the backfill (repeatable; default 1 and 2)",
    )
    parser.add_argument("--skip-partition", action="store_true")
    parser.add_argument("--skip-backfill", action="store_true")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "mf_pipeline_bench"))
    parser.add_argument("--_partition-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._partition_child:
        print(
            json.dumps(
                partition_child(Path(args._partition_child[0]), Path(args._partition_child[1]))
            )
        )
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # Other work on the machine inflates every number here: say how busy it was.
    print(
        f"benchmarks/pipeline.py on {os.cpu_count()} cores, workdir {workdir}, load average "
        f"{os.getloadavg()[0]:.1f} at the start",
        flush=True,
    )
    if not args.skip_partition:
        sizes = args.events or [1_000_000]
        print(
            f"\none partition end to end, sizes run: {', '.join(f'{n:,}' for n in sizes)} events",
            flush=True,
        )
        results = {n: run_partition(workdir, n) for n in sizes}
        print(
            f"(week {next(iter(results.values()))['week']}, one run of weekly_training "
            "in-process on a fresh instance and store)\n"
        )
        print_partition_table(results)
    if not args.skip_backfill:
        levels = args.concurrency or [1, 2]
        print(
            f"\n{args.backfill_weeks}-week backfill through dagster dev, max concurrent runs "
            f"{', '.join(map(str, levels))} (default demo data)",
            flush=True,
        )
        rows = [run_backfill(workdir, args.backfill_weeks, c) for c in levels]
        print(
            f"\n{'max runs':>9}{'weeks':>7}{'wall s':>9}{'sum of run s':>14}{'s/week':>8}"
            f"{'failed':>8}"
        )
        for r in rows:
            print(
                f"{r['concurrency']:>9}{r['weeks']:>7}{r['wall']:>9.0f}{r['run_seconds']:>14.0f}"
                f"{r['wall'] / r['weeks']:>8.1f}{r['failed']:>8}"
            )
        print(f"(weeks {rows[0]['first']} .. {rows[0]['last']})")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
