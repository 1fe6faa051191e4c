"""The `model-factory` command: demo data, manifests, runs, frames, contracts, registry."""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import click

from model_factory.contracts import TimeWindow, TrainingConfig
from model_factory.core.documents import parse_document
from model_factory.core.manifests import (
    Catalog,
    create_manifest,
    read_manifest,
    verify_manifest_files,
)
from model_factory.core.settings import Settings
from model_factory.errors import (
    ConfigError,
    MissingInputError,
    ModelFactoryError,
    PolicyViolationError,
    first_line,
)

CONTRACTS_FILE = Path("contracts") / "mf_public_contracts_v0.schema.json"


def _say(msg: str) -> None:
    click.echo(msg, err=True)


class _Group(click.Group):
    """Turns a ModelFactoryError into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ModelFactoryError as exc:
            click.echo(f"error [{exc.code}]: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
def main() -> None:
    """Model Factory: leakage-safe frames, XGBoost models, gated immutable bundles."""
    # Dagster's preview/beta notices are for library authors, not for people running weeks.
    warnings.filterwarnings("ignore", module="dagster")
    warnings.filterwarnings("ignore", message=".*(preview|beta).*")


# ---------------------------------------------------------------------- option parsing


def _option(param: click.Parameter) -> str:
    return param.opts[0] if param.opts else str(param.name)


def _writable_out(out: str) -> None:
    """Refuse an ``--out`` that is a folder before any work is done for it."""
    if "://" not in out and Path(out).is_dir():
        raise ConfigError("is a folder; give a file name", source=out, field="--out")


def _written(out: str, write) -> None:
    """``write()``, with an error naming ``--out`` if the file cannot be written."""
    _writable_out(out)
    try:
        write()
    except OSError as exc:
        raise ModelFactoryError(
            f"cannot be written ({type(exc).__name__}: {exc.strerror or exc})",
            source=out,
            field="--out",
        ) from exc


def _day(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    """A YYYY-MM-DD date option, refused naming the option."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(
            f"'{value}' is not a date as YYYY-MM-DD ({exc})", field=_option(param)
        ) from exc


def _monday(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    """A YYYY-MM-DD Monday (the first day of a week), refused naming the option."""
    d = _day(ctx, param, value)
    if d is not None and d.weekday() != 0:
        raise ConfigError(f"{d} is a {d:%A}: give a Monday", field=_option(param))
    return d


def _utc(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An ISO date or date-time option; naive times on the command line are UTC."""
    if value is None:
        return None
    try:
        d = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(
            f"'{value}' is not an ISO date or date-time such as 2026-01-05 or "
            f"2026-01-05T00:00:00Z ({exc})",
            field=_option(param),
        ) from exc
    # an offset is honoured, then expressed in UTC (the contracts hold UTC times only)
    return d.astimezone(UTC) if d.tzinfo else d.replace(tzinfo=UTC)


def _week(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A week key (a Monday as YYYY-MM-DD), refused naming the option rather than the key."""
    from model_factory.core.windows import week_start

    if value is None:
        return None
    try:
        week_start(value)
    except ModelFactoryError as exc:
        raise type(exc)(exc.detail, source=exc.source, field=_option(param)) from exc
    return value


# ------------------------------------------------------------------------------------- data


@main.command("demo-data")
@click.option("--catalog", default=None, help="Catalog URL (default: MODEL_FACTORY_CATALOG).")
@click.option(
    "--start",
    default="2026-01-05",
    show_default=True,
    callback=_monday,
    help="First Monday of the data.",
)
@click.option("--weeks", default=26, show_default=True, type=int)
@click.option("--customers", default=5000, show_default=True, type=int)
@click.option("--terminals", default=10000, show_default=True, type=int)
@click.option("--seed", default=7, show_default=True, type=int)
def demo_data(catalog, start, weeks, customers, terminals, seed) -> None:
    """Generate the deterministic card-payment simulation into the catalog."""
    from model_factory.core.demo_data import DemoDataSpec, generate_demo_data

    url = catalog or Settings.from_env().catalog_url
    spec = DemoDataSpec(
        start=start,
        weeks=weeks,
        customers=customers,
        terminals=terminals,
        seed=seed,
    )
    started = time.perf_counter()
    summary = generate_demo_data(url, spec, progress=_say)
    _say(f"demo data written to {url} in {time.perf_counter() - started:.1f}s")
    click.echo(json.dumps(summary, indent=2, default=str))


# -------------------------------------------------------------------------------- manifests


@main.group()
def manifest() -> None:
    """Create and validate dataset manifests."""


@manifest.command("create")
@click.argument("files", nargs=-1, required=True)
@click.option("--kind", type=click.Choice(["events", "feature_group", "labels"]), required=True)
@click.option("--name", required=True)
@click.option("--version", "version", required=True)
@click.option("--keys", required=True, help="Comma-separated join keys.")
@click.option(
    "--time-column", default=None, help="Default: event_time / available_at / observed_time."
)
@click.option(
    "--start", default=None, callback=_utc, help="Window start (UTC ISO); default: from the data."
)
@click.option("--end", default=None, callback=_utc, help="Window end, exclusive (UTC ISO).")
@click.option("--valid-from-column", default=None)
@click.option("--ttl-seconds", default=None, type=int)
@click.option("--label-family", default=None)
@click.option("--description", default="")
@click.option("--catalog", default=None, help="Add the manifest to this catalog URL.")
@click.option("--out", default=None, help="Write the manifest JSON here instead.")
def manifest_create(
    files,
    kind,
    name,
    version,
    keys,
    time_column,
    start,
    end,
    valid_from_column,
    ttl_seconds,
    label_family,
    description,
    catalog,
    out,
) -> None:
    """Build a manifest from parquet FILES (schema, sha256 and rows read from the files)."""
    if out:
        _writable_out(out)  # before the files are read and hashed
    window = None
    if start or end:
        if not (start and end):
            raise ConfigError("give both --start and --end, or neither", field="--start/--end")
        if end <= start:
            raise ConfigError(f"--end {end} is not after --start {start}", field="--end")
        window = TimeWindow(start=start, end=end)  # both UTC (_utc), in order
    uris = [str(Path(f).resolve()) if "://" not in f else f for f in files]
    target = None if out else Catalog(catalog or Settings.from_env().catalog_url)
    # Files under the dataset's own folder of the catalog are stored relative to the manifest
    # (as demo-data does), so the catalog can be moved or copied; any other file by its path.
    relative_to = None
    if target is not None:
        folder = target.manifest_dir(kind, name, version)
        relative_to = folder if "://" in folder else str(Path(folder).resolve())
    m = create_manifest(
        uris,
        kind=kind,
        name=name,
        version=version,
        keys=keys.split(","),
        time_column=time_column,
        window=window,
        valid_from_column=valid_from_column,
        ttl_seconds=ttl_seconds,
        label_family=label_family,
        description=description,
        relative_to=relative_to,
    )
    if out:
        from model_factory.core.storage import open_uri, write_exclusive

        data = m.model_dump_json(indent=2).encode()
        fs, path = open_uri(out)
        created: list[bool] = []
        # written whole under a temporary name first, and never over another file: a manifest
        # of the catalog (or anything else) under that name would be lost
        _written(out, lambda: created.append(write_exclusive(fs, path, data)))
        if not created[0] and fs.cat_file(path) != data:
            raise ConfigError(
                "exists with other content; remove it or give another file name",
                source=out,
                field="--out",
            )
        _say(f"manifest written to {out}" if created[0] else f"manifest already at {out}")
    else:
        existed = target.location.fs.exists(target.manifest_path(m))
        entry = target.write(m)  # the same manifest again is a no-op, another one an error
        said = "already in the catalog" if existed else "added to the catalog"
        _say(f"manifest {said}: {entry.uri} (sha256 {entry.digest})")
        _warn_if_intake_would_refuse(target, m, entry.uri)


def _warn_if_intake_would_refuse(target: Catalog, m, uri: str) -> None:
    """Say now, not at the first run, when intake will refuse where the files are."""
    from model_factory.core.intake import check_manifest_location

    try:
        check_manifest_location(target, m, uri, Settings.from_env().policy())
    except ModelFactoryError as exc:
        _say(
            f"warning: intake will refuse this manifest until its files are under the catalog "
            f"or a data_roots folder of the policy ({exc.detail}). The manifest names the files "
            f"where they are now: add that folder to the policy's data_roots, or remove {uri}, "
            "move the files and create it again"
        )


@manifest.command("validate")
@click.argument("uris", nargs=-1, required=True)
@click.option(
    "--catalog",
    default=None,
    help="Catalog URL the data files must lie under (default: MODEL_FACTORY_CATALOG).",
)
def manifest_validate(uris, catalog) -> None:
    """Check manifests as intake will: contract, where the data files are (under the catalog or
    the policy's data_roots), every file's sha256, rows, schema and time window."""
    from model_factory.core.intake import check_manifest_location

    settings = Settings.from_env()
    target, policy = Catalog(catalog or settings.catalog_url), settings.policy()
    bad = 0
    for uri in uris:  # every manifest, so one bad file does not hide the state of the rest
        try:
            m = read_manifest(uri)
            check_manifest_location(target, m, uri, policy)
            verify_manifest_files(m, uri, decode=True)  # every page, as intake reads them
        except ModelFactoryError as exc:
            bad += 1
            click.echo(f"error [{exc.code}]: {exc}", err=True)
            continue
        click.echo(
            f"ok  {uri}  {m.kind}:{m.name}/{m.version}  {m.row_count} rows in {len(m.files)} file(s)"
        )
    if bad:
        _say(f"{bad} of {len(uris)} manifest(s) refused")
        sys.exit(2)


# ------------------------------------------------------------------------------------ runs


def _load_config(path: str | None) -> TrainingConfig:
    if not path:
        return TrainingConfig()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise MissingInputError(
            "the config file does not exist", source=path, field="--config"
        ) from exc
    except OSError as exc:  # a folder, no permission
        raise MissingInputError(
            f"the config file cannot be read ({exc.strerror or exc})", source=path, field="--config"
        ) from exc
    return parse_document(data, TrainingConfig, source=path, error=ConfigError)


def _instance(settings: Settings):
    import fcntl

    import dagster as dg

    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    # The first open of a SQLite instance creates its tables, and two processes doing that at
    # once fail ("table secondary_indexes already exists"): set up and open under a lock, and
    # touch every storage so it is created before the lock is let go.
    with open(settings.dagster_home / ".model_factory.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        os.environ["DAGSTER_HOME"] = str(settings.ensure_dagster_home())
        instance = dg.DagsterInstance.get()
        instance.get_runs_count()
        instance.fetch_materializations(dg.AssetKey("model_bundle"), limit=1)
        instance.all_instigator_state()
    return instance


def _check_before_running(config: TrainingConfig, config_path: str | None, settings) -> None:
    """What would fail every week's intake, refused before any run starts: a config the
    governance policy forbids, a dataset it names that the catalog does not have, and a
    feature the policy has not vetted."""
    from model_factory.core.governance import (
        check_gate_policy,
        check_leakage_checks,
        check_model_family,
        check_vetted_features,
    )
    from model_factory.core.intake import feature_columns, group_feature

    source = config_path or "the default TrainingConfig"
    policy_source = settings.policy_path or "built-in default policy"
    policy = settings.policy()  # a policy file's own errors name that file, not the config
    try:
        check_gate_policy(config.gates, policy, source=source)
        check_model_family(policy, config.model_family, source=source)
        check_leakage_checks(config, policy, source=source)
    except PolicyViolationError as exc:
        raise PolicyViolationError(
            f"{exc.detail} (policy: {policy_source})", source=source, field=exc.field
        ) from None
    catalog = Catalog(settings.catalog_url)
    named = [
        ("events", "events", config.events),
        ("labels", "labels", config.labels),
        *(
            ("feature_group", f"feature_group_versions[{i}]", sel)
            for i, sel in enumerate(config.feature_group_versions)
        ),
    ]
    for kind, field, sel in named:
        if not catalog.has(kind, sel.name, sel.version):
            raise MissingInputError(
                f"the catalog {settings.catalog_url} has no {kind} dataset '{sel.name}' "
                f"version '{sel.version}'",
                source=source,
                field=field,
            )
    # The features every week's frame would have: a group's columns are the same in all its
    # manifests (intake refuses a version whose schema changes), so its first one tells them.
    features = [
        *config.event_features,
        *(
            group_feature(sel.name, c)
            for sel in config.feature_group_versions
            for c in feature_columns(catalog.entries("feature_group", sel.name, sel.version)[0])
        ),
    ]
    try:
        check_vetted_features(policy, features, source=policy_source)
    except PolicyViolationError as exc:
        raise PolicyViolationError(
            f"{exc.detail} (config: {source})", source=policy_source, field=exc.field
        ) from None


def _run(weeks: list[str], config_path: str | None, as_json: bool) -> list:
    from model_factory.core.registry import FileRegistry
    from model_factory.definitions import defs
    from model_factory.runner import run_weeks

    settings = Settings.from_env()
    config = _load_config(config_path)
    _check_before_running(config, config_path, settings)
    run_config = None
    if config_path:
        run_config = {
            "ops": {
                "dataset_manifests": {
                    "config": config.model_dump(mode="json", exclude={"schema_version"})
                }
            }
        }
    with _instance(settings) as instance:
        _say(f"Dagster instance: {settings.dagster_home}")
        started = time.perf_counter()
        results = run_weeks(
            instance,
            defs(),
            weeks,
            FileRegistry(settings.registry_url, settings.store_url),
            run_config,
            progress=_say,
        )
        _say(f"{len(weeks)} week(s) in {time.perf_counter() - started:.0f}s")
    if as_json:
        for r in results:
            # status and error too: a failed week must not read as one with no results
            click.echo(json.dumps(r.as_json()))
    else:
        _print_table(results)
    return results


def _print_table(results: list) -> None:
    header = (
        f"{'week':<10}  {'train run id':<24}  {'train':>7}  {'test':>6}  {'ROC-AUC':>7}  "
        f"{'PR-AUC':>6}  {'gate':<4}  {'bundle id':<24}  published"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for r in results:
        if r.status == "failed":
            click.echo(f"{r.week:<10}  FAILED: {r.error}")
            continue
        click.echo(
            f"{r.week:<10}  {r.train_run_id:<24}  {r.train_rows:>7}  {r.test_rows:>6}  "
            f"{_metric(r.roc_auc):>7}  {_metric(r.pr_auc):>6}  {r.gate:<4}  {r.bundle_id:<24}  "
            f"{'yes' if r.published else 'no'}"
        )


def _metric(value: float | None) -> str:
    """A test metric as the week table shows it: '-' when the week could not measure it."""
    return "-" if value is None else f"{value:.4f}"


@main.command("run")
@click.option(
    "--from", "first", required=True, callback=_week, help="First week (a Monday, YYYY-MM-DD)."
)
@click.option(
    "--to", "last", required=True, callback=_week, help="Last week (a Monday, inclusive)."
)
@click.option("--config", "config_path", default=None, help="TrainingConfig as JSON.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per week on stdout.")
def run(first, last, config_path, as_json) -> None:
    """Run the asset graph for weeks FROM..TO, publish PASS bundles, print a summary."""
    from model_factory.definitions import defs
    from model_factory.runner import check_partitions, weeks_between

    weeks = weeks_between(first, last)
    # Every week before any runs: a week Dagster does not know would fail after the others ran.
    check_partitions(defs(), weeks)
    results = _run(weeks, config_path, as_json)
    if any(r.status == "failed" for r in results):
        sys.exit(1)


@main.command("demo")
def demo() -> None:
    """Generate the demo data if absent, train every trainable week, publish, print the table."""
    from model_factory.core.demo_data import DemoDataSpec, demo_data_present, generate_demo_data
    from model_factory.runner import trainable_weeks

    settings = Settings.from_env()
    started = time.perf_counter()
    if not demo_data_present(settings.catalog_url):
        _say(f"generating demo data into {settings.catalog_url} ...")
        generate_demo_data(settings.catalog_url, DemoDataSpec(), progress=_say)
    weeks = trainable_weeks(Catalog(settings.catalog_url), TrainingConfig())
    _say(f"{len(weeks)} trainable weeks: {weeks[0]} .. {weeks[-1]}")
    results = _run(weeks, None, False)
    passed = sum(1 for r in results if r.published)
    _say(
        f"demo finished in {time.perf_counter() - started:.0f}s: {passed} bundle(s) in the registry "
        f"at {settings.registry_url}"
    )
    _say(f"open the UI on this instance: DAGSTER_HOME={settings.dagster_home} make ui")
    if any(r.status == "failed" for r in results):
        sys.exit(1)


# ---------------------------------------------------------------------------------- ledger


@main.group("ledger", invoke_without_command=True)
@click.option("--week", default=None, callback=_week, help="Only this week (a Monday, YYYY-MM-DD).")
@click.option("--train-run-id", default=None, help="Only this train run.")
@click.option("--json", "as_json", is_flag=True, help="One TrainingRunRecord (JSON) per line.")
@click.pass_context
def ledger(ctx, week, train_run_id, as_json) -> None:
    """Train runs rebuilt from the Dagster instance: status, attempts, trigger, inputs, outputs.

    `ledger verify` checks the ledger's hash chain against the instance and the store."""
    if ctx.invoked_subcommand is not None:
        return
    from model_factory.ledger import read_ledger

    settings = Settings.from_env()
    with _instance(settings) as instance:
        records = read_ledger(instance, week=week, train_run_id=train_run_id)
    if as_json:
        for r in records:
            click.echo(r.model_dump_json())
        return
    pinned = sum(1 for r in records if r.train_run_id)
    # attempts without a train run: failed before intake pinned one, or not there yet
    early = Counter(r.status for r in records if not r.train_run_id)
    failed, going = early.pop("failed", 0), sum(early.values())
    _say(
        f"Dagster instance: {settings.dagster_home}: {pinned} train run(s)"
        + (f", {failed} attempt(s) that failed before intake" if failed else "")
        + (f", {going} attempt(s) not yet past intake" if going else "")
    )
    if not records and week is None and train_run_id is None:
        from model_factory.core.runs import ledger_journal

        journaled = len(ledger_journal(settings.store_url).sequences())
        if journaled:
            _say(
                f"warning: the store's ledger journal has {journaled} entries, but this instance "
                "has no train runs: is DAGSTER_HOME the instance that ran them?"
            )
    header = (
        f"{'week':<10}  {'train run id':<24}  {'status':<11}  {'tries':>5}  "
        f"{'triggered by (latest)':<34}  {'config':<12}  {'bundle id':<24}  error"
    )
    click.echo(header)
    click.echo("-" * len(header))
    for r in records:
        latest = r.attempts[-1] if r.attempts else None
        error = (r.error or "")[:160]
        if r.gate_judged_status is not None and r.gate_judged_status != r.gate_status:
            error = f"gate judged {r.gate_judged_status}, {r.gate_status} by an audited override"
        click.echo(
            f"{r.partition_key:<10}  {r.train_run_id or '-':<24}  {r.status:<11}  "
            f"{len(r.attempts):>5}  {(latest.triggered_by if latest else '-'):<34}  "
            f"{(r.config_hash or '-')[:12]:<12}  {r.bundle_id or '-':<24}  {error}"
        )


def _anchor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise ConfigError(
            f"'{value}' is not SEQUENCE:SHA256 (as a verify printed it)", field="--anchor"
        )
    return int(seq), digest


_ANCHOR_HELP = (
    "SEQUENCE:SHA256 of a head an earlier verify printed: that entry must still be "
    "there unchanged (catches a truncated or rewritten tail)."
)


def _report_integrity(report, as_json: bool) -> None:
    """Every problem (named file and field) and note, a summary line; exit 1 on any problem."""
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        for p in report.problems:
            click.echo(f"PROBLEM  {p.kind:<28}  {p.source}" + (f"  [{p.field}]" if p.field else ""))
            click.echo(f"         {p.detail}")
        for n in report.notes:
            click.echo(f"note     {n}")
        checked = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.checked.items())
        verdict = "OK" if report.ok else f"{len(report.problems)} PROBLEM(S)"
        click.echo(
            f"{report.target} journal {report.journal}: {report.entries} entries, head "
            f"{report.head_sequence}:{report.head_digest}; checked {checked}: {verdict}"
        )
    if not report.ok:
        sys.exit(1)


@ledger.command("verify")
@click.option("--anchor", default=None, help=_ANCHOR_HELP)
@click.option("--json", "as_json", is_flag=True, help="The IntegrityReport as JSON.")
def ledger_verify(anchor, as_json) -> None:
    """Check the ledger's hash chain, every document it pins, and that each stage
    materialization in the Dagster instance has its journal entry (and each entry its
    materialization). Exits 1 on any problem."""
    from model_factory.core.runs import ledger_journal
    from model_factory.ledger import verify_ledger

    settings = Settings.from_env()
    pinned = _anchor(anchor)
    with _instance(settings) as instance:
        report = verify_ledger(instance, ledger_journal(settings.store_url), pinned)
    _report_integrity(report, as_json)


# ---------------------------------------------------------------------------------- frames


@main.group()
def frame() -> None:
    """Training frames for notebooks and audits."""


@frame.command("build")
@click.option("--partition", required=True, callback=_week, help="Week (a Monday, YYYY-MM-DD).")
@click.option("--config", "config_path", default=None, help="TrainingConfig as JSON.")
@click.option("--out", required=True, help="Parquet file to write.")
def frame_build(partition, config_path, out) -> None:
    """Write the exact training frame of a week (same code path as the training_frame asset)."""
    import tempfile

    from fsspec.implementations.local import LocalFileSystem

    from model_factory.core.intake import intake
    from model_factory.core.runs import FactoryEnv, frame_file
    from model_factory.core.storage import file_sha256, open_uri, replace_from_file

    _writable_out(out)
    env = FactoryEnv.from_settings(Settings.from_env())
    receipt, inputs = intake(
        env.catalog,
        _load_config(config_path),
        partition,
        env.policy,
        policy_source=env.policy_source,
    )
    with tempfile.TemporaryDirectory(prefix="mf-frame-") as tmp:
        written = frame_file(env, receipt, inputs, f"{tmp}/frame.parquet")
        digest, _ = file_sha256(LocalFileSystem(), written.path)
        _written(out, lambda: replace_from_file(*open_uri(out), written.path))
    counts = ", ".join(f"{s} {written.rows.get(s, 0)}" for s in ("train", "val", "test"))
    _say(
        f"frame of week {partition}: {sum(written.rows.values())} rows ({counts}), "
        f"leakage audit {'passed' if written.audit.passed else 'FAILED'} -> {out} "
        f"(sha256 {digest})"
    )


# -------------------------------------------------------------------------- contracts etc.


@main.group()
def contracts() -> None:
    """The public contracts' JSON Schema."""


@contracts.command("export")
@click.option("--out", default=str(CONTRACTS_FILE), show_default=True)
def contracts_export(out) -> None:
    """Write the JSON Schema generated from the pydantic contracts."""
    from model_factory.core.schema import export_schema

    def write() -> None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(export_schema())

    _written(out, write)
    _say(f"wrote {out}")


@main.group()
def registry() -> None:
    """The model registry: records, champions and their history, publishing."""


def _registry():
    from model_factory.core.registry import FileRegistry

    settings = Settings.from_env()
    return FileRegistry(settings.registry_url, settings.store_url)


@registry.command("list")
@click.option("--family", default=None, help="Only this model family.")
@click.option("--json", "as_json", is_flag=True)
def registry_list(family, as_json) -> None:
    """Published bundles, by week."""
    records = _registry().records(family)
    if not records:
        _say("no published bundles" + (f" of model family '{family}'" if family else ""))
    for r in records:
        if as_json:
            click.echo(r.model_dump_json())
        else:
            forced = f"  FORCED PASS by {r.gate_override.approver}" if r.gate_override else ""
            click.echo(
                f"{r.partition_key}  {r.bundle_id}  {r.train_run_id}  {r.model_family}  "
                f"{r.bundle_uri}{forced}"
            )


@registry.command("show")
@click.argument("bundle_id")
@click.option(
    "--readiness",
    is_flag=True,
    help="Print the bundle's promotion readiness document instead of the record.",
)
def registry_show(bundle_id, readiness) -> None:
    """One registry record as JSON (its `readiness_ref` names the promotion readiness document);
    a summary of the readiness on stderr."""
    from model_factory.contracts import PromotionReadiness
    from model_factory.core.storage import ArtifactStore

    record = _registry().get(bundle_id)
    doc = None
    if record.readiness_ref is not None:
        doc = ArtifactStore.get_document(
            record.readiness_ref.uri, PromotionReadiness, record.readiness_ref.sha256
        )
    if readiness:
        if doc is None:
            raise click.ClickException(f"{bundle_id} was published without a readiness document")
        click.echo(doc.model_dump_json(indent=2))
        return
    click.echo(record.model_dump_json(indent=2))
    if doc is not None:
        rec = doc.recommendation
        share = "" if rec.traffic_share is None else f" at {rec.traffic_share:.2%} of traffic"
        _say(f"readiness: {rec.stage}{share}: {'; '.join(rec.reasons)}")


@registry.command("history")
@click.option("--family", default="fraud_xgb", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def registry_history(family, as_json) -> None:
    """Every champion change of a family: which bundle was live from when, and why."""
    for c in _registry().history(family):
        if as_json:
            click.echo(c.model_dump_json())
        else:
            click.echo(
                f"#{c.sequence}  {c.changed_at_utc:%Y-%m-%d %H:%M:%S}Z  {c.bundle_id}  "
                f"week {c.partition_key}  {c.reason}"
            )


@registry.command("verify")
@click.option("--anchor", default=None, help=_ANCHOR_HELP)
@click.option("--json", "as_json", is_flag=True, help="The IntegrityReport as JSON.")
def registry_verify(anchor, as_json) -> None:
    """Check the registry's hash chain and every record and champion change against its entry
    (edited, deleted, unjournaled). Exits 1 on any problem."""
    _report_integrity(_registry().verify(_anchor(anchor)), as_json)


@registry.command("publish")
@click.argument("bundle")
@click.option("--by", "requested_by", default="cli", show_default=True)
def registry_publish(bundle, requested_by) -> None:
    """Publish a bundle (id or URI); prints the PublishBundleResponse as JSON."""
    from model_factory.contracts import PublishBundleRequest
    from model_factory.core.bundles import load_bundle

    uri = _bundle_uri(bundle)
    found = load_bundle(uri)
    sequence, entry_sha256 = _ledger_pin(found) or (None, None)
    response = _registry().publish(
        PublishBundleRequest(
            bundle_uri=uri,
            bundle_id=found.bundle_id,
            requested_by=requested_by,
            ledger_sequence=sequence,
            ledger_entry_sha256=entry_sha256,
        )
    )
    click.echo(response.model_dump_json(indent=2))
    if response.status == "refused":
        sys.exit(1)


def _ledger_pin(bundle) -> tuple[int, str] | None:
    """The bundle's run-ledger entry as the Dagster instance recorded it (outside the store),
    if the configured instance exists and has one; otherwise the store's ledger is searched.

    The instance is only read: opened as it is, never set up or upgraded, and one that cannot
    be opened (a PostgreSQL server away) is said and passed over."""
    settings = Settings.from_env()
    if not (settings.dagster_home / "dagster.yaml").exists():
        return None
    import dagster as dg

    from model_factory.defs.ledger import bundle_ledger_pin

    try:
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            return bundle_ledger_pin(instance, bundle.partition_key, bundle.train_run_id)
    except Exception as exc:  # any storage's own errors: the check falls back to the store's
        _say(
            f"warning: the Dagster instance at {settings.dagster_home} could not be read "
            f"({first_line(exc)}): the store's ledger is searched instead"
        )
        return None


def _bundle_uri(bundle: str, check_record: bool = True) -> str:
    """A bundle id (looked up in the registry, then the store) or a URI (made absolute: a
    published relative path would resolve elsewhere from another working directory).

    The bundle an id leads to must still be that bundle: the id a registry record names, with
    the content it recorded (an edited bundle is re-digested to a new id of its own). Not with
    ``check_record`` False: `bundle reproduce` reports such an edit as DIFFERENT itself."""
    from model_factory.core.bundles import find_bundle, load_bundle, stored_bundle_digest
    from model_factory.core.storage import absolute_uri
    from model_factory.errors import DigestMismatchError, RegistryError

    if not bundle.startswith("mfb-"):
        return absolute_uri(bundle)
    try:
        record = _registry().get(bundle)
    except RegistryError:
        return find_bundle(Settings.from_env().store_url, bundle)
    if not check_record:
        return record.bundle_uri
    found = load_bundle(record.bundle_uri).bundle_id
    if found != bundle or stored_bundle_digest(record.bundle_uri) != record.bundle_sha256:
        raise DigestMismatchError(
            f"the registry's record of {bundle} points at a bundle that is now "
            f"{found if found != bundle else 'other content under the same id'}: it was "
            "changed after it was published",
            source=record.bundle_uri,
            field="bundle_id" if found != bundle else "bundle_sha256",
        )
    return record.bundle_uri


@main.group()
def bundle() -> None:
    """Verify and reproduce model bundles."""


@bundle.command("verify")
@click.argument("bundle_ref", metavar="ID|URI")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--inputs",
    is_flag=True,
    help="Also re-verify the input manifests the bundle pins and every data file's sha256, "
    "size and schema (reads all the training data).",
)
def bundle_verify(bundle_ref, as_json, inputs) -> None:
    """Recompute every digest a bundle pins and report each artifact's status."""
    from model_factory.core.bundles import load_bundle, verification

    uri = _bundle_uri(bundle_ref)
    result = verification(
        uri,
        inputs=inputs,
        store_url=Settings.from_env().store_url,
        pin=_ledger_pin(load_bundle(uri)),
    )
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        for c in result.checks:
            click.echo(
                f"{c.status:<8}  {c.name:<34}  {c.expected}"
                + ("" if c.status == "ok" else f"  found {c.actual or 'nothing'}")
            )
        click.echo(f"{result.bundle_id}: {'VALID' if result.valid else 'INVALID'}")
    if not result.valid:
        sys.exit(1)


@bundle.command("reproduce")
@click.argument("bundle_ref", metavar="ID|URI")
@click.option("--json", "as_json", is_flag=True)
def bundle_reproduce(bundle_ref, as_json) -> None:
    """Rebuild a bundle from its pinned inputs without Dagster; compare digest by digest."""
    from model_factory.core.reproduce import reproduce_bundle
    from model_factory.core.runs import FactoryEnv

    settings = Settings.from_env()
    uri = _bundle_uri(bundle_ref, check_record=False)
    report = reproduce_bundle(uri, FactoryEnv.from_settings(settings))
    _record_reproduction(settings, report, uri)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        for c in report.comparisons:
            click.echo(
                f"{c.status:<8}  {c.name:<24}  {c.expected}"
                + ("" if c.status == "ok" else f"  rebuilt {c.actual}")
            )
        click.echo(f"{report.bundle_id}: {report.verdict}")
    if report.verdict != "IDENTICAL":
        sys.exit(1)


def _record_reproduction(settings: Settings, report, uri: str) -> None:
    """The result joins the ledger as an observation of the bundle's week: of the file that was
    reproduced (a copy claiming another bundle's id is named as itself)."""
    import dagster as dg

    from model_factory.core.bundles import load_bundle

    week = load_bundle(uri).partition_key
    with _instance(settings) as instance:
        instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key="model_bundle",
                partition=week,
                metadata={
                    "bundle_id": report.bundle_id,
                    "bundle_uri": uri,
                    "reproduce_verdict": report.verdict,
                    "code_version_now": report.code_version_now,
                    "comparisons": dg.MetadataValue.json(
                        [c.model_dump() for c in report.comparisons]
                    ),
                },
            )
        )


@main.group()
def store() -> None:
    """Housekeeping of the artifact store, the registry and the catalog."""


def _roots(settings: Settings) -> list[str]:
    """The configured roots, without one that is or lies inside another (it would be walked
    twice), however each was written (a path, a file:// URL, through a symlink)."""
    from model_factory.core.manifests import is_under

    kept: list[str] = []
    for url in (settings.store_url, settings.registry_url, settings.catalog_url):
        if not any(is_under(url, other) for other in kept):
            kept = [k for k in kept if not is_under(k, url)] + [url]
    return kept


@store.command("sweep")
@click.option(
    "--older-than",
    "hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Hours since a temporary file was last written. A write in flight renames its file "
    "within seconds, so keep this well above the longest write.",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def store_sweep(hours, dry_run, as_json) -> None:
    """Remove the temporary files (.tmp-*.partial) that killed writers left behind.

    A writer puts its bytes under a hidden temporary name and renames it when complete, so a
    process killed mid-write leaves that file and never a partial final one. Nothing else is
    touched: final names are never removed, whatever their age.
    """
    from datetime import timedelta

    from model_factory.core.storage import remove_partial, stale_partials

    settings = Settings.from_env()
    count = size = 0
    for root in _roots(settings):
        for partial in stale_partials(root, timedelta(hours=hours)):
            removed = False if dry_run else remove_partial(partial)
            if dry_run or removed:
                count, size = count + 1, size + partial.bytes
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "uri": partial.uri,
                            "bytes": partial.bytes,
                            "modified_utc": partial.modified_utc.isoformat(),
                            "removed": removed,
                        }
                    )
                )
            else:
                verb = "would remove" if dry_run else "removed" if removed else "already gone"
                click.echo(f"{verb}  {partial.uri}")
    _say(f"{'would remove' if dry_run else 'removed'} {count} temporary file(s), {size} bytes")


if __name__ == "__main__":
    main()
