"""Errors the factory raises on bad input: each names the file and the field at fault."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """A library's error in one line: Arrow's and Polars' run over several, and XGBoost's carry a
    native stack trace after the first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class ModelFactoryError(Exception):
    """Base of every error the factory raises on purpose.

    ``source`` is the file, URI or object the problem was found in and ``field`` the field within
    it, so a user can go straight to the fix.
    """

    code = "model_factory_error"

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message
        where = ", ".join(
            part
            for part in (f"file {source}" if source else "", f"field '{field}'" if field else "")
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class ManifestError(ModelFactoryError):
    """A manifest is malformed or disagrees with the files it lists."""

    code = "manifest_invalid"


class DigestMismatchError(ManifestError):
    """A file's sha256 differs from the digest pinned for it."""

    code = "digest_mismatch"


class MissingInputError(ModelFactoryError):
    """A referenced file, manifest or artifact is not where it should be."""

    code = "missing_input"


class SchemaMismatchError(ModelFactoryError):
    """Columns or types differ from what a manifest or feature schema declares."""

    code = "schema_mismatch"


class WindowError(ModelFactoryError):
    """Training windows overlap, are out of order, or cross the cut or the policy window."""

    code = "window_invalid"


class PolicyViolationError(ModelFactoryError):
    """The governance policy forbids what was asked (PII, data window, gate floor, trigger)."""

    code = "policy_violation"


class LeakageError(ModelFactoryError):
    """A frame would carry information from after its cut."""

    code = "leakage"


class ConfigError(ModelFactoryError):
    """A training config or setting is invalid."""

    code = "config_invalid"


class ImmutabilityError(ModelFactoryError):
    """An artifact or record that exists would be overwritten with different content."""

    code = "not_reproducible"


class RegistryError(ModelFactoryError):
    """The registry refused a bundle (FAIL verdict, tampered content, unknown bundle)."""

    code = "registry_refused"


class StorageError(ModelFactoryError):
    """A file could not be written (a full disk, no permission): nothing is left under its name."""

    code = "storage_failed"
