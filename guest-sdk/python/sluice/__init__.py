"""Sluice jobs in Python.

A job is a module ``job.py`` with a function ``run(job: Job) -> Report``. It never sees a row: it
asks differentially private questions (``job.query(sql).epsilon(0.5).run()``), each charged to the
operator's budget before it runs, and returns a report built from the noisy answers. ``sluice
build <dir>`` turns the folder into a WebAssembly component (componentize-py) that the broker runs
in its sandbox::

    from sluice import Job, Report

    def run(job: Job) -> Report:
        eps = job.param_float("epsilon", 0.5)
        visits = job.query(
            "SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district"
        ).epsilon(eps).run()
        return Report("Visits by district").table("visits", visits)

What the sandbox gives a Python job beside the queries: ``print`` and ``sys.stderr`` go to the
job's log (capped, like :meth:`Job.log`); the clock reads 2000-01-01 and ``time.monotonic()``
moves only when the job sleeps (a sleep returns at once); ``random`` and ``os.urandom`` are the same
stream in every run; there are no files, environment variables, arguments or network (opening a
socket fails with ``PermissionError``). None of that can reveal anything about the data: only
:meth:`Query.run` answers come from it, with noise.

Errors: a refused query raises a :class:`QueryError` subclass naming why (its message depends only
on the query and the policy); a job that raises :class:`InvalidParams` or lets any exception escape
fails with that message in its log and nothing released.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple, Union

# The generated bindings (componentize-py writes them at build time). Imported here, not inside
# functions: the component is a snapshot of the interpreter after this module was imported, and
# a module first imported at run time is not in it.
from componentize_py_types import Err
from wit_world.imports import data, log as _log
from wit_world.imports import sluice_job_types as t

__all__ = [
    "Job",
    "Query",
    "Table",
    "Estimate",
    "Cost",
    "Report",
    "QueryError",
    "InvalidSql",
    "Unsupported",
    "NotGranted",
    "ColumnDenied",
    "AggregationDenied",
    "InvalidOptions",
    "BudgetExhausted",
    "TooManyQueries",
    "ExecutionFailed",
    "InvalidParams",
    "JobFailed",
]

Cell = Union[None, int, float, str]


# ---- errors ----------------------------------------------------------------------------------


class QueryError(Exception):
    """A query was refused or failed. Nothing was charged unless the subclass says so."""


class InvalidSql(QueryError):
    """The SQL could not be parsed or planned."""


class Unsupported(QueryError):
    """The SQL uses something outside the supported subset (the message says what is)."""


class NotGranted(QueryError):
    """The query names a dataset the operator holds no grant for (or the grant is suspended)."""


class ColumnDenied(QueryError):
    """The query uses a column that does not exist or is hidden."""


class AggregationDenied(QueryError):
    """The grant does not allow this aggregation, or the column cannot be aggregated."""


class InvalidOptions(QueryError):
    """The options are invalid (for example ε not positive)."""


class BudgetExhausted(QueryError):
    """The query would exceed a budget cap; nothing was charged."""


class TooManyQueries(QueryError):
    """The job reached its query limit."""

    def __init__(self, limit: int):
        super().__init__(f"the job reached its limit of {limit} queries")
        self.limit = limit


class ExecutionFailed(QueryError):
    """The query was charged but could not be executed."""


class InvalidParams(Exception):
    """Raise it when the operator's parameters are unusable: the job fails with this message."""


def _percent_decode(s: str) -> str:
    """``%XX`` sequences decoded as UTF-8; anything else kept as it is."""
    out = bytearray()
    i = 0
    raw = s.encode("utf-8")
    hexdigits = b"0123456789abcdefABCDEF"
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) and raw[i + 1] in hexdigits and raw[i + 2] in hexdigits:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", errors="replace")


class JobFailed(Exception):
    """Raise it to fail the job with a message of your own."""


def _query_error(e) -> QueryError:

    kinds = {
        t.QueryError_InvalidSql: InvalidSql,
        t.QueryError_Unsupported: Unsupported,
        t.QueryError_NotGranted: NotGranted,
        t.QueryError_ColumnDenied: ColumnDenied,
        t.QueryError_AggregationDenied: AggregationDenied,
        t.QueryError_InvalidOptions: InvalidOptions,
        t.QueryError_BudgetExhausted: BudgetExhausted,
        t.QueryError_ExecutionFailed: ExecutionFailed,
    }
    if isinstance(e, t.QueryError_TooManyQueries):
        err: QueryError = TooManyQueries(e.value)
    else:
        err = kinds.get(type(e), QueryError)(e.value)
    err._wit = e
    return err


# ---- answers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """A privacy cost in the dataset's measure: ε (pure DP) or ρ (zCDP), and δ."""

    epsilon: float
    delta: float
    rho: float


@dataclass(frozen=True)
class Estimate:
    """What a query would cost and how accurate it would be; nothing was run or charged."""

    dataset: str
    cost: Cost
    #: For each aggregate column, the 95% half-width of every cell, or ``None`` where it
    #: depends on the data (AVG, VARIANCE, STDDEV, quantiles).
    accuracy: Dict[str, Optional[float]]
    #: How many releases the budget is split over.
    releases: int


def _cell(v) -> Cell:
    return None if not hasattr(v, "value") else v.value


class Table:
    """A table of differentially private answers.

    The first :attr:`key_columns` columns are group keys (public values); the rest are noisy
    aggregates, each cell with the half-width of its 95% interval (:meth:`accuracy`).
    """

    def __init__(self, raw):
        self._raw = raw
        self.columns: List[str] = list(raw.columns)
        self.key_columns: int = raw.key_columns
        self.rows: List[List[Cell]] = [[_cell(v) for v in row] for row in raw.rows]
        self.cost = Cost(raw.cost.epsilon, raw.cost.delta, raw.cost.rho)
        #: How the answer was produced: mechanisms, sensitivities, the budget split.
        self.mechanism: str = raw.mechanism

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Dict[str, Cell]]:
        return iter(self.records())

    def column(self, name: str) -> int:
        """The index of column ``name`` (``KeyError`` if absent)."""
        try:
            return self.columns.index(name)
        except ValueError:
            raise KeyError(f"no column `{name}`; the columns are {self.columns}") from None

    def records(self) -> List[Dict[str, Cell]]:
        """The rows as dictionaries, column name to value."""
        return [dict(zip(self.columns, row)) for row in self.rows]

    def value(self, row: int, column: str) -> Cell:
        """The cell at ``row`` in ``column``."""
        return self.rows[row][self.column(column)]

    def accuracy(self, row: int, column: str) -> Optional[float]:
        """The 95% half-width of the cell at ``row`` in ``column``; ``None`` for key cells."""
        return self._raw.accuracy[row][self.column(column)]

    def total(self, column: str) -> Tuple[float, float]:
        """The sum of a numeric column over all rows, with a conservative 95% half-width (the sum
        of the cells' half-widths). Post-processing: costs nothing."""
        i = self.column(column)
        total = sum(float(r[i]) for r in self.rows if isinstance(r[i], (int, float)))
        width = sum(a[i] or 0.0 for a in self._raw.accuracy)
        return total, width


# ---- asking ----------------------------------------------------------------------------------


class Query:
    """One query being set up: choose what it spends, then :meth:`run` or :meth:`estimate`."""

    def __init__(self, sql: str):
        self._sql = sql
        self._target = None

    def epsilon(self, epsilon: float) -> "Query":
        """Spend exactly this ε (pure-DP datasets), split evenly among the query's releases."""
        self._target = t.Target_Epsilon(float(epsilon))
        return self

    def rho(self, rho: float) -> "Query":
        """Spend exactly this ρ (zCDP datasets)."""
        self._target = t.Target_Rho(float(rho))
        return self

    def accuracy(self, half_width: float) -> "Query":
        """Spend the least budget for which every aggregate cell's 95% interval has at most this
        half-width (COUNT, COUNT(DISTINCT) and SUM)."""
        self._target = t.Target_Accuracy(float(half_width))
        return self

    def _options(self):

        if self._target is None:
            raise InvalidOptions("say what the query spends: .epsilon(e), .rho(r) or .accuracy(w)")
        return t.QueryOptions(self._target)

    def run(self) -> Table:
        """Runs the query: charged first, never refunded. Raises a :class:`QueryError`."""
        try:
            return Table(data.query(self._sql, self._options()))
        except Err as e:
            raise _query_error(e.value) from None

    def estimate(self) -> Estimate:
        """What :meth:`run` would cost and how accurate it would be; nothing is charged (it
        counts towards the job's query limit)."""
        try:
            e = data.estimate(self._sql, self._options())
        except Err as err:
            raise _query_error(err.value) from None
        return Estimate(
            dataset=e.dataset,
            cost=Cost(e.cost.epsilon, e.cost.delta, e.cost.rho),
            accuracy=dict(e.accuracy),
            releases=e.releases,
        )


class Job:
    """What a running job can do: read its parameters, look at public metadata, ask queries,
    log progress."""

    def __init__(self, params: str):
        #: The operator's parameter string, as submitted.
        self.params: str = params

    def param(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of ``name`` in parameters written as ``key=value`` pairs separated by ``&``,
        ``;`` or newlines (``min_age=18&epsilon=0.5``), percent-decoded (a separator inside a
        value is written ``%26``, ``%3B``, ``%3D`` or ``%25``, as in a URL query; ``+`` stays a
        plus), or ``default``. The first pair named ``name`` wins."""
        for pair in self.params.replace(";", "&").replace("\n", "&").split("&"):
            key, sep, value = pair.partition("=")
            if sep and _percent_decode(key.strip()) == name:
                return _percent_decode(value.strip())
        return default

    def param_float(self, name: str, default: float) -> float:
        """A parameter as a number, or ``default``; :class:`InvalidParams` if it is not one."""
        v = self.param(name)
        if v is None:
            return default
        try:
            return float(v)
        except ValueError:
            raise InvalidParams(f"`{name}` must be a number, got `{v}`") from None

    def param_int(self, name: str, default: int) -> int:
        """A parameter as an integer, or ``default``; :class:`InvalidParams` if it is not one."""
        v = self.param(name)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise InvalidParams(f"`{name}` must be an integer, got `{v}`") from None

    def query(self, sql: str) -> Query:
        """A query: ``job.query(sql).epsilon(0.5).run()``."""
        return Query(sql)

    def datasets(self):
        """The datasets this job may query: public metadata only (never row counts)."""
        return data.datasets()

    def describe(self, dataset: str):
        """Public metadata of one granted dataset, or ``None``."""
        return data.describe(dataset)

    def budget(self, dataset: str):
        """What the grant still allows on ``dataset`` (per job and per period), or ``None``."""
        return data.budget(dataset)

    def log(self, message: str, level: str = "info") -> None:
        """A line in the job's log (``debug``, ``info``, ``warn`` or ``error``), capped in size."""
        levels = {
            "debug": t.LogLevel.DEBUG,
            "info": t.LogLevel.INFO,
            "warn": t.LogLevel.WARN,
            "error": t.LogLevel.ERROR,
        }
        _log.log(levels.get(level, t.LogLevel.INFO), str(message))

    def warn(self, message: str) -> None:
        """A warning line in the job's log."""
        self.log(message, "warn")


# ---- reporting -------------------------------------------------------------------------------


class Report:
    """What the job releases: a title, text, tables of DP answers and scalars derived from them."""

    def __init__(self, title: str):
        self.title = title
        self._text: List[str] = []
        self._tables: List[Tuple[str, Table]] = []
        self._scalars: List[Tuple[str, float, Optional[float]]] = []

    def text(self, text: str) -> "Report":
        """Appends a paragraph."""
        self._text.append(str(text))
        return self

    def table(self, name: str, table: Table) -> "Report":
        """Adds a table of answers."""
        self._tables.append((str(name), table))
        return self

    def scalar(self, name: str, value: float, accuracy: Optional[float] = None) -> "Report":
        """Adds a named number (post-processing of answers), with its 95% half-width if known."""
        self._scalars.append((str(name), float(value), None if accuracy is None else float(accuracy)))
        return self

    def _wit(self):

        return t.Report(
            title=self.title,
            text="\n".join(self._text),
            tables=[t.NamedTable(name=n, table=tb._raw) for n, tb in self._tables],
            scalars=[t.Scalar(name=n, value=v, accuracy=a) for n, v, a in self._scalars],
        )


def _run(run, params: str):
    """Calls the job's ``run`` and turns what it raises into the job error the host expects."""

    try:
        report = run(Job(params))
    except InvalidParams as e:
        raise Err(t.JobError_InvalidParams(str(e))) from None
    except QueryError as e:
        wit = getattr(e, "_wit", None)
        if wit is None:
            raise Err(t.JobError_Failed(f"{type(e).__name__}: {e}")) from None
        raise Err(t.JobError_Query(wit)) from None
    except SystemExit as e:
        raise Err(t.JobError_Failed(f"the job called sys.exit({e.code})")) from None
    except Exception as e:  # noqa: BLE001 - every failure becomes the job's own error
        raise Err(t.JobError_Failed(f"{type(e).__name__}: {e}")) from None
    if not isinstance(report, Report):
        raise Err(t.JobError_Failed(f"run() must return a sluice.Report, not {type(report).__name__}"))
    return report._wit()
