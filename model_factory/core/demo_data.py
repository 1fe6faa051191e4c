"""Deterministic demo data: a simulated card-payment stream written into a catalog.

In the spirit of the simulator of Le Borgne et al., *Reproducible Machine Learning for Credit
Card Fraud Detection — Practical Handbook*: customers and terminals on a 100 x 100 map, daily
Poisson transactions, three fraud scenarios. On top of it come what the factory needs to be
exercised honestly: chargebacks that arrive late (and are sometimes reversed), feature snapshots
stamped with ``available_at``, and a feature group corrected after the fact.

Everything is drawn from numpy ``Generator`` streams spawned from one seed and computed column-wise
(loops run over days, weeks or digit positions, never over rows), so one seed gives the same bytes.
Each dataset is written as one parquet file plus one ``DatasetManifest`` per week; the manifest is
the commit point.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from model_factory.contracts import DatasetKind, TimeWindow
from model_factory.core.manifests import Catalog, create_manifest
from model_factory.core.storage import join, open_uri, write_exclusive
from model_factory.errors import ConfigError, ImmutabilityError

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
# Snapshots of a day are written one hour after midnight: the nightly batch's latency.
SNAPSHOT_LAG_US = US_PER_HOUR
_NEVER = np.iinfo(np.int64).max // 4  # "no such time": far enough from overflow when added to
UTC_US = pl.Datetime("us", "UTC")
TERMINAL_WINDOW_DAYS = 28  # terminal_risk looks back over [T - 28 days, T)


@dataclass(frozen=True)
class DemoDataSpec:
    """Size, seed and fraud mechanics of the simulated stream; the defaults give ~1.5M rows."""

    start: date = date(2026, 1, 5)  # a Monday: weeks are the factory's partitions
    weeks: int = 26
    customers: int = 5000
    terminals: int = 10000
    seed: int = 7
    radius: float = 5.0  # a customer uses the terminals within this distance of home
    mean_tx_per_day: float = 1.6  # customers' daily rates are uniform on [0, 2 x this]
    fraud_amount_threshold: float = 220.0  # scenario 1: any larger amount is fraud
    # Scenario 2. None: 2 a day per 10,000 terminals, so small specs keep the default fraud rate.
    terminal_compromises_per_day: float | None = None
    terminal_compromise_days: int = 28
    # Scenario 3. None: 3 a day per 5,000 customers.
    customer_compromises_per_day: float | None = None
    customer_compromise_days: int = 14
    customer_fraud_share: float = 1 / 3
    customer_fraud_multiplier: float = 5.0
    reported_share: float = 0.9  # the rest of the frauds never get a chargeback
    report_delay_min_days: float = 1.0
    report_delay_mean_days: float = 7.0  # mean of the exponential part added to the minimum
    report_delay_max_days: float = 60.0
    false_chargeback_rate: float = 0.0005  # genuine transactions charged back, later reversed
    reversal_delay_mean_days: float = 5.0  # reversal: 1 day + exponential after the chargeback

    def __post_init__(self) -> None:
        if self.start.weekday() != 0:
            raise ConfigError(
                f"must be a Monday, found {self.start:%A} {self.start}", field="start"
            )
        for name in (
            "weeks",
            "customers",
            "terminals",
            "terminal_compromise_days",
            "customer_compromise_days",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, found {getattr(self, name)}", field=name)
        for name in ("customer_fraud_share", "reported_share", "false_chargeback_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"must lie in [0, 1], found {getattr(self, name)}", field=name)
        if not 0 < self.report_delay_min_days <= self.report_delay_max_days:
            raise ConfigError(
                "need 0 < report_delay_min_days <= report_delay_max_days",
                field="report_delay_min_days",
            )
        if self.radius <= 0 or self.mean_tx_per_day <= 0:
            raise ConfigError("radius and mean_tx_per_day must be positive", field="radius")

    @property
    def days(self) -> int:
        return 7 * self.weeks

    @property
    def start_us(self) -> int:
        """Start instant (midnight UTC) in microseconds since the epoch."""
        return (
            int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp())
            * US_PER_SECOND
        )

    @property
    def horizon_us(self) -> int:
        """End of the last week: nothing at or after it is written."""
        return self.start_us + self.days * US_PER_DAY

    def windows(self) -> list[TimeWindow]:
        """The weekly windows ``[start + 7k, start + 7k + 7 days)``, one manifest each."""
        t0 = datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)
        return [
            TimeWindow(start=t0 + timedelta(days=7 * k), end=t0 + timedelta(days=7 * k + 7))
            for k in range(self.weeks)
        ]


@dataclass(frozen=True)
class DemoDataset:
    """One dataset of the demo catalog and how its manifests are declared."""

    kind: DatasetKind
    name: str
    version: str
    keys: tuple[str, ...]
    time_column: str
    valid_from_column: str | None = None
    ttl_seconds: int | None = None
    label_family: str | None = None
    description: str = ""


TRANSACTIONS = DemoDataset(
    "events",
    "transactions",
    "v1",
    ("event_id",),
    "event_time",
    description="Simulated card payments (demo). card_number and customer_email are PII and must "
    "never reach a model.",
)
CHARGEBACKS = DemoDataset(
    "labels",
    "chargebacks",
    "v1",
    ("event_id",),
    "observed_time",
    label_family="fraud",
    description="Chargebacks (demo Label Store): 1 = fraud; a later 0 reverses a false chargeback.",
)
CUSTOMER_SPENDING = DemoDataset(
    "feature_group",
    "customer_spending",
    "v1",
    ("customer_id",),
    "available_at",
    valid_from_column="valid_from",
    ttl_seconds=2 * 86_400,
    description="Daily customer counts and mean amounts over 1/7/30 days (null mean: no "
    "transactions), up to midnight, available at 01:00.",
)
TERMINAL_RISK = DemoDataset(
    "feature_group",
    "terminal_risk",
    "v1",
    ("terminal_id",),
    "available_at",
    valid_from_column="valid_from",
    ttl_seconds=7 * 86_400,
    description="Daily at 01:00 (T): terminal transactions in [T-28d, T) and the share of them "
    "whose latest chargeback observed before T is a fraud.",
)
CARD_STATUS = DemoDataset(
    "feature_group",
    "card_status",
    "v1",
    ("customer_id",),
    "available_at",
    valid_from_column="valid_from",
    description="Card flagged after a compromise is discovered; the correction is back-dated "
    "(valid_from = compromise start), so only an available_at join is leak-free.",
)
DEMO_DATASETS: tuple[DemoDataset, ...] = (
    TRANSACTIONS,
    CHARGEBACKS,
    CUSTOMER_SPENDING,
    TERMINAL_RISK,
    CARD_STATUS,
)


# ---------------------------------------------------------------------------------------------
# Population


@dataclass(frozen=True)
class _Customers:
    x: np.ndarray
    y: np.ndarray
    mean_cents: np.ndarray
    std_cents: np.ndarray
    rate: np.ndarray


def _customers(rng: np.random.Generator, spec: DemoDataSpec) -> _Customers:
    """Home location, amount profile and daily transaction rate of every customer."""
    n = spec.customers
    x, y = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    mean = rng.uniform(5, 100, n)
    rate = rng.uniform(0, 2 * spec.mean_tx_per_day, n)
    return _Customers(x, y, mean * 100, mean * 50, rate)  # std = mean / 2, as in the handbook


def nearby_terminals(
    cx: np.ndarray, cy: np.ndarray, tx: np.ndarray, ty: np.ndarray, radius: float, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists (indptr, terminal indices) of the terminals within ``radius`` of each customer.

    A customer with none in range gets its nearest terminal, so every list is non-empty.
    """
    counts, cols = [], []
    for lo in range(0, len(cx), chunk):  # chunks bound the customer x terminal matrix in memory
        d2 = (cx[lo : lo + chunk, None] - tx[None, :]) ** 2 + (
            cy[lo : lo + chunk, None] - ty[None, :]
        ) ** 2
        near = d2 <= radius * radius
        lonely = np.flatnonzero(~near.any(axis=1))
        near[lonely, d2[lonely].argmin(axis=1)] = True
        counts.append(near.sum(axis=1))
        cols.append(np.nonzero(near)[1])
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))]).astype(np.int64)
    return indptr, np.concatenate(cols).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Transactions and fraud


@dataclass(frozen=True)
class _Transactions:
    """Transaction columns, sorted by event time; amounts in integer cents so sums are exact."""

    event_us: np.ndarray
    day: np.ndarray
    customer: np.ndarray
    terminal: np.ndarray
    cents: np.ndarray


def _transactions(
    rng: np.random.Generator,
    spec: DemoDataSpec,
    cust: _Customers,
    indptr: np.ndarray,
    indices: np.ndarray,
) -> _Transactions:
    """Poisson counts per customer and day, daytime-heavy clock times, normal amounts."""
    days, n_cust = spec.days, spec.customers
    per_cell = rng.poisson(np.broadcast_to(cust.rate, (days, n_cust))).ravel()
    customer = np.repeat(np.tile(np.arange(n_cust, dtype=np.int64), days), per_cell)
    day = np.repeat(np.repeat(np.arange(days, dtype=np.int64), n_cust), per_cell)
    n = len(customer)
    # Normal around noon; wrapping the tails (not clipping) keeps the night thin but non-empty.
    seconds = np.mod(rng.normal(43_200, 20_000, n), 86_400)
    clock_us = np.minimum((seconds * US_PER_SECOND).astype(np.int64), US_PER_DAY - 1)
    event_us = spec.start_us + day * US_PER_DAY + clock_us
    amount = rng.normal(cust.mean_cents[customer], cust.std_cents[customer])
    negative = np.flatnonzero(amount <= 0)  # the handbook redraws these uniformly below 2 x mean
    amount[negative] = rng.uniform(0, 2 * cust.mean_cents[customer[negative]])
    cents = np.maximum(np.rint(amount), 1).astype(np.int64)
    first, size = indptr[customer], indptr[customer + 1] - indptr[customer]
    terminal = indices[first + (rng.random(n) * size).astype(np.int64)]
    order = np.lexsort((terminal, customer, event_us))
    return _Transactions(
        event_us[order], day[order], customer[order], terminal[order], cents[order]
    )


def _daily_picks(
    rng: np.random.Generator, population: int, rate: float, days: int
) -> tuple[np.ndarray, np.ndarray]:
    """(day, id) of ids drawn without replacement each day; fractional rates are spread evenly."""
    cumulative = np.floor(rate * np.arange(days + 1))
    counts = np.minimum(np.diff(cumulative).astype(np.int64), population)
    picks = [rng.choice(population, size=k, replace=False) for k in counts]
    ids = np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, np.int64)
    return np.repeat(np.arange(days, dtype=np.int64), counts), ids


def _active_days(
    ids: np.ndarray, start_days: np.ndarray, duration: int, population: int, days: int
) -> np.ndarray:
    """Boolean (id x day) grid: inside some ``[start, start + duration)`` period of that id."""
    diff = np.zeros((population, days + 1), np.int32)
    np.add.at(diff, (ids, start_days), 1)
    np.add.at(diff, (ids, np.minimum(start_days + duration, days)), -1)
    return np.cumsum(diff[:, :days], axis=1) > 0


@dataclass(frozen=True)
class _Frauds:
    scenario: np.ndarray  # 0 genuine, else the last scenario that made it fraud (1, 2 or 3)
    cents: np.ndarray  # amounts after scenario 3 inflated some of them
    episode_customer: np.ndarray  # scenario 3 compromises: customer and first day
    episode_day: np.ndarray


def _frauds(rng: np.random.Generator, spec: DemoDataSpec, tx: _Transactions) -> _Frauds:
    """The handbook's three scenarios: large amounts, compromised terminals and customers."""
    days = spec.days
    scenario = np.zeros(len(tx.cents), np.int8)
    scenario[tx.cents > round(spec.fraud_amount_threshold * 100)] = 1
    t_rate = spec.terminal_compromises_per_day
    t_rate = 2 * spec.terminals / 10_000 if t_rate is None else t_rate
    t_day, t_id = _daily_picks(rng, spec.terminals, t_rate, days)
    hot = _active_days(t_id, t_day, spec.terminal_compromise_days, spec.terminals, days)
    scenario[hot[tx.terminal, tx.day]] = 2
    c_rate = spec.customer_compromises_per_day
    c_rate = 3 * spec.customers / 5_000 if c_rate is None else c_rate
    c_day, c_id = _daily_picks(rng, spec.customers, c_rate, days)
    stolen = _active_days(c_id, c_day, spec.customer_compromise_days, spec.customers, days)
    hit = stolen[tx.customer, tx.day] & (rng.random(len(tx.cents)) < spec.customer_fraud_share)
    cents = np.where(
        hit, np.rint(tx.cents * spec.customer_fraud_multiplier).astype(np.int64), tx.cents
    )
    scenario[hit] = 3
    return _Frauds(scenario, cents, c_id, c_day)


# ---------------------------------------------------------------------------------------------
# Labels


@dataclass(frozen=True)
class _Labels:
    """Label rows (transaction index, value, observed time) and, per transaction, when it
    started and stopped counting as a known fraud (``_NEVER`` if not)."""

    tx_index: np.ndarray
    value: np.ndarray
    observed_us: np.ndarray
    fraud_known_from_us: np.ndarray
    fraud_known_until_us: np.ndarray
    reported: np.ndarray  # indices of the true frauds that got a chargeback


def _delays_us(
    rng: np.random.Generator, n: int, minimum: float, mean: float, maximum: float
) -> np.ndarray:
    """Reporting delays: a minimum plus an exponential tail, capped, in microseconds."""
    days = np.minimum(minimum + rng.exponential(mean, n), maximum)
    return (days * US_PER_DAY).astype(np.int64)


def _labels(
    rng: np.random.Generator, spec: DemoDataSpec, tx: _Transactions, is_fraud: np.ndarray
) -> _Labels:
    """Chargebacks for most frauds, late; a few false ones on genuine payments, later reversed."""
    n = len(is_fraud)
    frauds = np.flatnonzero(is_fraud)
    reported = frauds[rng.random(len(frauds)) < spec.reported_share]
    fraud_obs = tx.event_us[reported] + _delays_us(
        rng,
        len(reported),
        spec.report_delay_min_days,
        spec.report_delay_mean_days,
        spec.report_delay_max_days,
    )
    false = np.flatnonzero(~is_fraud & (rng.random(n) < spec.false_chargeback_rate))
    false_obs = tx.event_us[false] + _delays_us(
        rng,
        len(false),
        spec.report_delay_min_days,
        spec.report_delay_mean_days,
        spec.report_delay_max_days,
    )
    reversal_obs = false_obs + _delays_us(
        rng, len(false), 1.0, spec.reversal_delay_mean_days, spec.report_delay_max_days
    )
    known_from = np.full(n, _NEVER, np.int64)
    known_until = np.full(n, _NEVER, np.int64)
    known_from[reported], known_from[false] = fraud_obs, false_obs
    known_until[false] = reversal_obs
    return _Labels(
        tx_index=np.concatenate([reported, false, false]),
        value=np.concatenate(
            [np.ones(len(reported) + len(false), np.int64), np.zeros(len(false), np.int64)]
        ),
        observed_us=np.concatenate([fraud_obs, false_obs, reversal_obs]),
        fraud_known_from_us=known_from,
        fraud_known_until_us=known_until,
        reported=reported,
    )


# ---------------------------------------------------------------------------------------------
# Frames


def _ts(values: np.ndarray) -> pl.Series:
    """Microseconds since the epoch as a UTC timestamp series."""
    return pl.Series(np.asarray(values, np.int64)).cast(UTC_US)


def card_numbers(customer_ids: np.ndarray) -> pl.Series:
    """Fake Luhn-valid 16-digit card numbers; distinct customer ids get distinct numbers."""
    ids = np.asarray(customer_ids, np.int64)
    # An affine map modulo 10**14 with a multiplier coprime to 10 is a bijection: no collisions
    # for ids below 10**14 (and int64 holds the product for ids below ~9e9).
    body = 4 * 10**14 + (ids * 982_451_653 + 271_828_182) % 10**14
    total = np.zeros(len(ids), np.int64)
    rest = body.copy()
    for position in range(15):  # Luhn: double every second digit from the right of the body
        digit = rest % 10
        rest //= 10
        if position % 2 == 0:
            digit = np.where(digit * 2 > 9, digit * 2 - 9, digit * 2)
        total += digit
    return pl.Series("card_number", body * 10 + (10 - total % 10) % 10).cast(pl.String)


def _events_frame(tx: _Transactions, cents: np.ndarray, customers: int) -> pl.DataFrame:
    """The events dataset: no ground truth in it, but PII (card number, e-mail) is kept on purpose."""
    n = len(cents)
    clock_us = tx.event_us % US_PER_DAY
    cards = card_numbers(np.arange(customers, dtype=np.int64))
    return pl.DataFrame(
        {
            "event_id": pl.Series(np.arange(n, dtype=np.int64)).cast(pl.String).str.zfill(9),
            "event_time": _ts(tx.event_us),
            "customer_id": tx.customer,
            "terminal_id": tx.terminal,
            "amount": cents / 100,
            "is_night": (clock_us < 6 * US_PER_HOUR).astype(np.int8),
            "is_weekend": (tx.day % 7 >= 5).astype(np.int8),  # start is a Monday
            "card_number": cards.gather(tx.customer),
            # A second PII column, matched by pattern rather than by name, for the privacy scan.
            "customer_email": pl.Series(tx.customer).cast(pl.String).str.zfill(6),
        }
    ).with_columns(
        event_id=pl.lit("tx-") + pl.col("event_id"),
        customer_email=pl.lit("holder-") + pl.col("customer_email") + "@mail.example",
    )


def _labels_frame(labels: _Labels, event_ids: pl.Series, family: str) -> pl.DataFrame:
    """The Label Store rows, sorted by observed time."""
    frame = pl.DataFrame(
        {
            "event_id": event_ids.gather(labels.tx_index),
            "label_family": pl.repeat(family, len(labels.value), dtype=pl.String, eager=True),
            "label_value": labels.value,
            "observed_time": _ts(labels.observed_us),
        }
    )
    return frame.sort("observed_time", "event_id", "label_value")


def _window_sums(grid: np.ndarray, width: int) -> np.ndarray:
    """Per row and day d, the sum of ``grid`` over days ``[d - width + 1, d]``."""
    cum = np.concatenate(
        [np.zeros((grid.shape[0], 1), grid.dtype), np.cumsum(grid, axis=1)], axis=1
    )
    hi = np.arange(1, grid.shape[1] + 1)
    return cum[:, hi] - cum[:, np.maximum(hi - width, 0)]


def _customer_spending(spec: DemoDataSpec, tx: _Transactions, cents: np.ndarray) -> pl.DataFrame:
    """One row per customer and day from a dense customer x day grid of counts and cents."""
    days, n_cust = spec.days, spec.customers
    cell = tx.customer * days + tx.day
    count = np.bincount(cell, minlength=n_cust * days).reshape(n_cust, days)
    total = np.bincount(cell, weights=cents, minlength=n_cust * days)
    total = np.rint(total).astype(np.int64).reshape(n_cust, days)  # exact: integer cents
    valid_from = spec.start_us + (np.arange(days, dtype=np.int64) + 1) * US_PER_DAY
    columns: dict[str, Any] = {
        "customer_id": np.tile(np.arange(n_cust, dtype=np.int64), days),
        "valid_from": _ts(np.repeat(valid_from, n_cust)),
        "available_at": _ts(np.repeat(valid_from + SNAPSHOT_LAG_US, n_cust)),
    }
    for width in (1, 7, 30):
        n, cents_sum = _window_sums(count, width).T.ravel(), _window_sums(total, width).T.ravel()
        columns[f"cust_tx_count_{width}d"] = n.astype(np.int64)
        # A mean over no transactions is unknown, not zero: null lets a model tell them apart.
        mean = np.where(n > 0, cents_sum / np.maximum(n, 1) / 100, np.nan)
        columns[f"cust_mean_amount_{width}d"] = pl.Series(mean).fill_nan(None)
    order = [
        "customer_id",
        "valid_from",
        "available_at",
        *(f"cust_tx_count_{w}d" for w in (1, 7, 30)),
        *(f"cust_mean_amount_{w}d" for w in (1, 7, 30)),
    ]
    return pl.DataFrame(columns).select(order)


def _interval_counts(
    ids: np.ndarray, lo: np.ndarray, hi: np.ndarray, population: int, days: int
) -> np.ndarray:
    """(id x day) grid counting the day intervals ``[lo, hi]`` that cover each day."""
    keep = lo <= hi
    width = days + 1
    starts = np.bincount(ids[keep] * width + lo[keep], minlength=population * width)
    stops = np.bincount(ids[keep] * width + hi[keep] + 1, minlength=population * width)
    return np.cumsum((starts - stops).reshape(population, width), axis=1)[:, :days]


def _terminal_risk(spec: DemoDataSpec, tx: _Transactions, labels: _Labels) -> pl.DataFrame:
    """Daily snapshots at T = midnight + 1 h of 28-day counts and label-known fraud shares.

    Each transaction counts for the snapshots d with ``T_d - 28d <= event_time < T_d``; as a
    fraud only while its latest label observed before ``T_d`` is a 1. Both are runs of days,
    so difference arrays over a terminal x day grid give every snapshot at once.
    """
    days, n_term = spec.days, spec.terminals
    snap = spec.start_us + (np.arange(days, dtype=np.int64) + 1) * US_PER_DAY + SNAPSHOT_LAG_US
    first = np.searchsorted(snap, tx.event_us, side="right")  # first T_d > event_time
    last = np.searchsorted(snap, tx.event_us + TERMINAL_WINDOW_DAYS * US_PER_DAY, side="right") - 1
    count = _interval_counts(tx.terminal, first, last, n_term, days)
    known_first = np.maximum(first, np.searchsorted(snap, labels.fraud_known_from_us, "right"))
    known_last = np.minimum(last, np.searchsorted(snap, labels.fraud_known_until_us, "right") - 1)
    frauds = _interval_counts(tx.terminal, known_first, known_last, n_term, days)
    day, terminal = np.nonzero(count.T > 0)  # day-major: sorted by snapshot time, then terminal
    n = count[terminal, day]
    return pl.DataFrame(
        {
            "terminal_id": terminal.astype(np.int64),
            "valid_from": _ts(snap[day]),
            "available_at": _ts(snap[day]),
            "term_tx_count_28d": n.astype(np.int64),
            "term_risk_28d": frauds[terminal, day] / np.maximum(n, 1),
        }
    )


def _card_status(
    spec: DemoDataSpec, tx: _Transactions, frauds: _Frauds, labels: _Labels
) -> pl.DataFrame:
    """Initial unflagged rows, then per discovered compromise a back-dated flag and a reissue.

    Discovery is the first chargeback observed on a true fraud of that customer made during
    the compromise period.
    """
    episodes = pl.DataFrame(
        {"customer_id": frauds.episode_customer, "start_day": frauds.episode_day}
    )
    chargebacks = pl.DataFrame(
        {
            "customer_id": tx.customer[labels.reported],
            "day": tx.day[labels.reported],
            "observed_us": labels.fraud_known_from_us[labels.reported],
        }
    )
    found = (
        episodes.with_row_index("episode")
        .join(chargebacks, on="customer_id")
        .filter(
            pl.col("day") >= pl.col("start_day"),
            pl.col("day") < pl.col("start_day") + spec.customer_compromise_days,
        )
        .group_by("episode", "customer_id", "start_day")
        .agg(pl.col("observed_us").min())
    )
    start_us, discovered = spec.start_us, found["observed_us"].to_numpy()
    flagged_from = start_us + found["start_day"].to_numpy() * US_PER_DAY
    reissued = discovered + US_PER_DAY
    n_cust, n_found = spec.customers, len(found)
    customer = found["customer_id"].to_numpy()
    frame = pl.DataFrame(
        {
            "customer_id": np.concatenate([np.arange(n_cust, dtype=np.int64), customer, customer]),
            "valid_from": _ts(np.concatenate([np.full(n_cust, start_us), flagged_from, reissued])),
            "available_at": _ts(np.concatenate([np.full(n_cust, start_us), discovered, reissued])),
            "card_flagged": np.concatenate(
                [
                    np.zeros(n_cust, np.int64),
                    np.ones(n_found, np.int64),
                    np.zeros(n_found, np.int64),
                ]
            ),
        }
    )
    # Overlapping compromises of one customer can share a discovery: keep one row per instant.
    return frame.sort("available_at", "customer_id", "card_flagged", "valid_from").unique(
        ["customer_id", "available_at", "card_flagged"], keep="first", maintain_order=True
    )


# ---------------------------------------------------------------------------------------------
# Writing


def _in_horizon(frame: pl.DataFrame, column: str, spec: DemoDataSpec) -> pl.DataFrame:
    """Rows whose time lies in ``[start, end of the last week)`` (frames come sorted by it)."""
    t = pl.col(column).dt.epoch("us")
    return frame.filter(t >= spec.start_us, t < spec.horizon_us)


def _write_parquet_once(uri: str, frame: pl.DataFrame) -> None:
    """Write a parquet file unless the same bytes are there; never overwrite different data."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    data = buffer.getvalue()
    fs, path = open_uri(uri)
    if not write_exclusive(fs, path, data) and fs.cat_file(path) != data:
        raise ImmutabilityError(
            "a different data file already exists here (demo data of another spec or seed?); "
            "use an empty catalog",
            source=uri,
            field="files",
        )


def _write_weeks(catalog: Catalog, ds: DemoDataset, frame: pl.DataFrame, spec: DemoDataSpec) -> int:
    """One parquet file and one manifest per week (empty weeks too); returns the manifest count."""
    times = frame.get_column(ds.time_column).dt.epoch("us").to_numpy()
    edges = spec.start_us + np.arange(spec.weeks + 1, dtype=np.int64) * 7 * US_PER_DAY
    bounds = np.searchsorted(times, edges, side="left")
    manifest_dir = catalog.manifest_dir(ds.kind, ds.name, ds.version)
    for k, window in enumerate(spec.windows()):
        uri = join(catalog.slice_dir(ds.kind, ds.name, ds.version, window), "part-0.parquet")
        _write_parquet_once(uri, frame.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k])))
        manifest = create_manifest(
            [uri],
            kind=ds.kind,
            name=ds.name,
            version=ds.version,
            keys=list(ds.keys),
            time_column=ds.time_column,
            window=window,
            valid_from_column=ds.valid_from_column,
            ttl_seconds=ds.ttl_seconds,
            label_family=ds.label_family,
            description=ds.description,
            relative_to=manifest_dir,
        )
        catalog.write(manifest)  # the commit point: the data file is complete before it
    return spec.weeks


def _streams(seed: int, names: tuple[str, ...]) -> dict[str, np.random.Generator]:
    """Independent generators per stage, so changing one stage's draws leaves the others alone."""
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {
        name: np.random.Generator(np.random.PCG64(s))
        for name, s in zip(names, children, strict=True)
    }


def generate_demo_data(
    catalog_url: str,
    spec: DemoDataSpec = DemoDataSpec(),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate the stream and write the five demo datasets into the catalog, week by week.

    Returns a summary: row counts per dataset, fraud counts and rate, number of manifests.
    Writing again with the same spec is a no-op; with another spec it fails before overwriting.
    """
    say = progress or (lambda _message: None)
    rng = _streams(spec.seed, ("customers", "terminals", "transactions", "frauds", "labels"))
    cust = _customers(rng["customers"], spec)
    term_x = rng["terminals"].uniform(0, 100, spec.terminals)
    term_y = rng["terminals"].uniform(0, 100, spec.terminals)
    indptr, indices = nearby_terminals(cust.x, cust.y, term_x, term_y, spec.radius)
    say(f"{spec.customers} customers use {len(indices) / spec.customers:.1f} terminals each")
    tx = _transactions(rng["transactions"], spec, cust, indptr, indices)
    frauds = _frauds(rng["frauds"], spec, tx)
    is_fraud = frauds.scenario > 0
    say(f"{len(tx.cents)} transactions, {int(is_fraud.sum())} frauds")
    labels = _labels(rng["labels"], spec, tx, is_fraud)
    events = _events_frame(tx, frauds.cents, spec.customers)
    frames = {
        TRANSACTIONS.name: events,
        CHARGEBACKS.name: _labels_frame(labels, events["event_id"], CHARGEBACKS.label_family or ""),
        CUSTOMER_SPENDING.name: _customer_spending(spec, tx, frauds.cents),
        TERMINAL_RISK.name: _terminal_risk(spec, tx, labels),
        CARD_STATUS.name: _card_status(spec, tx, frauds, labels),
    }
    catalog = Catalog(catalog_url)
    rows, manifests = {}, 0
    for ds in DEMO_DATASETS:
        frame = _in_horizon(frames[ds.name], ds.time_column, spec)
        say(f"writing {ds.kind}/{ds.name}/{ds.version}: {frame.height} rows")
        manifests += _write_weeks(catalog, ds, frame, spec)
        rows[ds.name] = frame.height
    n_tx = len(tx.cents)
    return {
        "catalog_url": catalog_url,
        "window": [spec.windows()[0].start.isoformat(), spec.windows()[-1].end.isoformat()],
        "seed": spec.seed,
        "customers": spec.customers,
        "terminals": spec.terminals,
        "rows": rows,
        "frauds": int(is_fraud.sum()),
        "fraud_rate": float(is_fraud.mean()) if n_tx else 0.0,
        "frauds_by_scenario": {
            "amount_over_threshold": int((frauds.scenario == 1).sum()),
            "compromised_terminal": int((frauds.scenario == 2).sum()),
            "compromised_customer": int((frauds.scenario == 3).sum()),
        },
        "frauds_reported": len(labels.reported),
        "false_chargebacks": int((labels.value == 0).sum()),
        "manifests": manifests,
    }


def demo_data_present(catalog_url: str, spec: DemoDataSpec = DemoDataSpec()) -> bool:
    """True when every demo dataset has a manifest for every week of ``spec``."""
    catalog = Catalog(catalog_url)
    wanted = {(w.start, w.end) for w in spec.windows()}
    for ds in DEMO_DATASETS:
        found = {
            (e.manifest.time_window.start, e.manifest.time_window.end)
            for e in catalog.entries(ds.kind, ds.name, ds.version)
        }
        if not wanted <= found:
            return False
    return True
