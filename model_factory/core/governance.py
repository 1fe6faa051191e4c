"""Governance checks: allowed data window, excluded ranges, PII, gate floors, who may trigger."""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatch, fnmatchcase

import polars as pl

from model_factory.contracts import (
    LOWER_IS_BETTER,
    GateCriterionSpec,
    GateSettings,
    GovernancePolicy,
    LeakagePolicy,
    TimeWindow,
    TrainingConfig,
    visible_text,
)
from model_factory.core.canonical import canonical_json, sha256_hex
from model_factory.core.windows import data_span
from model_factory.errors import PolicyViolationError

# Fields added to the policy after bundles were pinned to its digest: left out of the digest
# while they hold their default, so a policy that does not use one keeps the digest it had (and
# its bundles still reproduce). The default is what those bundles were judged under.
_ADDED_LATER = (
    "criterion_meanings",
    "min_confidence_level",
    "override_approvers",
    "model_families",
    "leakage_limits",
    "require_shuffled_label_canary",
    "vetted_features",
)


def policy_document(policy: GovernancePolicy) -> bytes:
    """The policy's canonical JSON, as digested: fields added since the first policies are left
    out while at their default, so older policies keep their digest. It parses back to the
    same policy."""
    doc = policy.model_dump(mode="json")
    default = GovernancePolicy().model_dump(mode="json")
    for field in _ADDED_LATER:
        if doc[field] == default[field]:
            del doc[field]
    return canonical_json(doc)


def policy_digest(policy: GovernancePolicy) -> str:
    """sha256 of the canonical policy: pinned in every intake receipt (so in the train run id)
    and every bundle, so a run can be checked against the exact rules it obeyed (the intake
    stage keeps the document itself in the store under this digest)."""
    return sha256_hex(policy_document(policy))


def allowed_times(policy: GovernancePolicy, column: str) -> pl.Expr:
    """True for rows whose ``column`` lies where the policy allows data: inside the allowed
    window and in no excluded range. Intake checks the windows a run reads events and labels
    in; feature snapshots reach back before them (a group without a TTL, to its first one), so
    the frame builder keeps only the snapshots this allows."""
    t, ok = pl.col(column), pl.lit(True)
    allowed = policy.allowed_data_window
    if allowed is not None:
        ok = ok & (t >= allowed.start) & (t < allowed.end)
    for excluded in policy.excluded_ranges:
        ok = ok & ~((t >= excluded.start) & (t < excluded.end))
    return ok


def check_data_window(policy: GovernancePolicy, windows: LeakagePolicy, source: str | None) -> None:
    """Every window lies in the allowed data window and touches no excluded range."""
    # Labels are looked up until the cut, so the span that must be allowed runs to the cut.
    span = TimeWindow(start=data_span(windows).start, end=windows.cut)
    allowed = policy.allowed_data_window
    if allowed is not None and not (allowed.start <= span.start and span.end <= allowed.end):
        raise PolicyViolationError(
            f"training data [{span.start:%Y-%m-%d}, {span.end:%Y-%m-%d}) is outside the allowed "
            f"window [{allowed.start:%Y-%m-%d}, {allowed.end:%Y-%m-%d})",
            source=source,
            field="allowed_data_window",
        )
    for i, excluded in enumerate(policy.excluded_ranges):
        if excluded.overlaps(span):
            raise PolicyViolationError(
                f"training data [{span.start:%Y-%m-%d}, {span.end:%Y-%m-%d}) touches the excluded "
                f"range [{excluded.start:%Y-%m-%d}, {excluded.end:%Y-%m-%d})",
                source=source,
                field=f"excluded_ranges[{i}]",
            )


# Letters of other scripts drawn like Latin ones (Cyrillic, Greek, Armenian, small capitals): a
# name spelt with them reads as the Latin one
_LOOKALIKES = str.maketrans(
    "аеорсухіјѕһԁԛԝӏАВЕКМНОРСТХІЈЅοαρνικχυτΑΒΕΖΗΙΚΜΝΟΡΤΥΧօսհոᴏᴄᴇᴍᴘᴛᴜ",
    "aeopcyxijshdqwlABEKMHOPCTXIJSoapvikxutABEZHIKMNOPTYXounhocemptu",
)


def pii_columns(policy: GovernancePolicy, columns: Iterable[str]) -> list[str]:
    """Column names the policy calls PII (by exact name or by pattern), each read as written,
    as a reader sees it (NFKC: fullwidth letters, no-break and zero-width spaces, surrounding
    blanks) and with Cyrillic or Greek look-alike letters read as the Latin ones, so
    ``ｐｈｏｎｅ``, ``phone\u200b`` and ``рhone`` (a Cyrillic р) are all ``phone``."""
    named = {visible_text(c).casefold() for c in policy.pii_columns}
    patterns = [re.compile(p) for p in policy.pii_patterns]

    def pii(column: str) -> bool:
        shown = visible_text(column)
        latin = shown.translate(_LOOKALIKES)
        # and with whatever separates words (blanks, any dash, dots, slashes, repeated
        # underscores) read as the names' one underscore
        forms = {column, shown, latin, re.sub(r"[\W_]+", "_", latin)}
        return any(f.casefold() in named or any(p.search(f) for p in patterns) for f in forms)

    return [c for c in columns if pii(c)]


def check_no_pii(
    policy: GovernancePolicy, columns: Iterable[str], source: str | None, field: str
) -> None:
    found = pii_columns(policy, columns)
    if found:
        raise PolicyViolationError(
            f"PII columns {found} may never enter a frame or bundle", source=source, field=field
        )


def check_triggerer(policy: GovernancePolicy, triggered_by: str, source: str | None) -> None:
    if policy.allowed_triggerers is None:
        return
    if not any(fnmatch(triggered_by, pattern) for pattern in policy.allowed_triggerers):
        raise PolicyViolationError(
            f"'{triggered_by}' may not trigger training (allowed: {policy.allowed_triggerers})",
            source=source,
            field="allowed_triggerers",
        )


def check_leakage_checks(
    config: TrainingConfig, policy: GovernancePolicy, source: str | None
) -> None:
    """A config keeps the suspected-leakage checks the policy asks for: ceilings no looser,
    canary tolerances no wider, and the canary itself when the policy requires it."""
    limits, guard = policy.leakage_limits, config.gates.leakage
    for metric, limit in sorted(limits.ceilings.items()):
        ceiling = guard.ceilings.get(metric)
        lower = metric in LOWER_IS_BETTER  # "too good" is too low for an error
        if ceiling is None or (ceiling < limit if lower else ceiling > limit):
            bound = "at least" if lower else "at most"
            raise PolicyViolationError(
                f"the {metric} leakage ceiling is {ceiling}: the policy wants one, {bound} "
                f"{limit:g}",
                source=source,
                field=f"gates.leakage.ceilings.{metric}",
            )
    for name in ("canary_max_deviation", "canary_max_z"):
        if getattr(guard, name) > getattr(limits, name):
            raise PolicyViolationError(
                f"{name} {getattr(guard, name):g} is wider than the policy's "
                f"{getattr(limits, name):g}",
                source=source,
                field=f"gates.leakage.{name}",
            )
    if policy.require_shuffled_label_canary and not config.evaluation.shuffled_label_canary.enabled:
        raise PolicyViolationError(
            "the policy requires the shuffled-label canary",
            source=source,
            field="evaluation.shuffled_label_canary.enabled",
        )


def _named(value: str, patterns: list[str] | None) -> bool:
    """``value`` matches one of the policy's fnmatch patterns (case-sensitive); no list: any."""
    return patterns is None or any(fnmatchcase(value, p) for p in patterns)


def check_vetted_features(
    policy: GovernancePolicy, features: list[str], source: str | None
) -> None:
    """Every feature of the frame matches one of the policy's vetted patterns (when it has any)."""
    vetted = policy.vetted_features
    unvetted = [f for f in features if not _named(f, vetted)]
    if unvetted:
        raise PolicyViolationError(
            f"features {unvetted} are not among the policy's vetted features {vetted}",
            source=source,
            field="vetted_features",
        )


def check_model_family(policy: GovernancePolicy, family: str, source: str | None) -> None:
    families = policy.model_families
    if not _named(family, families):
        raise PolicyViolationError(
            f"model family '{family}' is not one the policy lets configs train ({families}): a "
            "new family is judged against no champion and no history",
            source=source,
            field="model_family",
        )


def floor_is_relaxed(spec: GateCriterionSpec, floor: float) -> bool:
    """True when the configured threshold is weaker than the policy floor."""
    if spec.kind == "non_inferiority" or spec.comparator == "<=":
        return spec.threshold > floor  # a wider margin, spread or error allowance is weaker
    return spec.threshold < floor


def check_gate_policy(settings: GateSettings, policy: GovernancePolicy, source: str | None) -> None:
    """A run may not relax a floor, drop a mandatory criterion, or override where forbidden."""
    names = {c.name for c in settings.criteria}
    missing = [m for m in policy.mandatory_criteria if m not in names]
    if missing:
        raise PolicyViolationError(
            f"mandatory gate criteria {missing} are missing from the config",
            source=source,
            field="gates.criteria",
        )
    for i, spec in enumerate(settings.criteria):
        meaning = policy.criterion_meanings.get(spec.name)
        for part in ("metric", "kind"):
            if meaning is not None and getattr(spec, part) != getattr(meaning, part):
                raise PolicyViolationError(
                    f"criterion '{spec.name}' has {part} '{getattr(spec, part)}'; under the "
                    f"policy that name means {meaning.kind} of {meaning.metric} (rename it to "
                    "add another criterion)",
                    source=source,
                    field=f"gates.criteria[{i}].{part}",
                )
        floor = policy.gate_floors.get(spec.name)
        if floor is not None and floor_is_relaxed(spec, floor):
            raise PolicyViolationError(
                f"criterion '{spec.name}' sets {spec.threshold:g}, weaker than the policy floor {floor:g}",
                source=source,
                field=f"gates.criteria[{i}].threshold",
            )
    if settings.confidence_level < policy.min_confidence_level:
        raise PolicyViolationError(
            f"gates.confidence_level {settings.confidence_level:g} is below the policy's "
            f"{policy.min_confidence_level:g}: a narrower interval raises every lower bound the "
            "gate judges",
            source=source,
            field="gates.confidence_level",
        )
    if settings.override is not None and not policy.allow_override:
        raise PolicyViolationError(
            "the policy does not allow gate overrides", source=source, field="gates.override"
        )
    approvers = policy.override_approvers
    if settings.override is not None and not _named(settings.override.approver, approvers):
        raise PolicyViolationError(
            f"'{settings.override.approver}' may not approve a gate override under the policy "
            f"(approvers: {approvers})",
            source=source,
            field="gates.override.approver",
        )
