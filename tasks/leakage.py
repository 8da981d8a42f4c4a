"""The leakage sentinel: find the columns a reviewer would question before a model is trusted.

Everything is measured on (a sample of) the training split only, out of fold (two halves, each
predicted by a model fitted on the other), so nothing can look predictive by memorising rows.
A feature is a suspect, with its evidence, when

- **alone**: on its own it predicts the target above ``spec.leakage.threshold`` (ROC AUC,
  balanced accuracy or R²): nearly always the answer in disguise;
- **dominant**: the other columns together (a gradient-boosted model of the rest) carry real
  signal, yet this one alone reaches far more, and removing it drops the whole table's score by
  far: a post-outcome duration. (One strong column among columns of noise is not suspected: it is
  simply the signal, and statistics cannot tell it from a leak);
- a test result that is one of the outcomes: for a multiclass target, a column that alone tells
  one class (of at least 5% of rows) from the rest above the threshold counts as **alone**;
- **re-expresses the target**: a category the target determines almost exactly (a coarser grade
  of an interest rate), or one that is an almost exact function of another suspect: every column that
  re-expresses the target is named at once, not one per attempt;
- **identifier**: whole numbers unique to every training row: an id cannot generalise, and when
  rows were numbered in an order that follows the outcome it leaks that order.

Not a stop but a note, for what statistics cannot settle: when the whole table's model leans on a
few columns (most of its gain) that together reach what the table does while all the others reach
far less, those columns are named for review. A rate re-expressed across several columns (the
instalment from the amount, the term and the rate; the interest paid so far) looks like this, and
so do genuine drivers that act together (a concrete's cement, water and age): only the user knows
which columns are known when a prediction is made.

The checks repeat on what is left after the suspects are set aside (a handful of rounds), so a
second copy of the answer behind the first is found in the same run. Scores are skill on a common
scale (0 = no better than chance, 1 = perfect: 2·AUC - 1, balanced accuracy above chance, R²).
Single columns are scored with a small decision tree (numbers, datetimes; for binary targets
also the raw value's own ROC AUC, for monotone leaks) or each level's target mean (categories).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from lepton.domains.spec import DomainSpec, Dtype
from lepton.errors import LeakageError
from lepton.tasks.labels import encode_labels

MAX_ROWS = 50_000
MAX_CELLS = 2_000_000  # rows x features scored: wide tables get a smaller row sample
MODEL_ROWS = 4_000  # rows for the models of many columns at once
LEAVES = 64
DOMINANT_SKILL = 0.5  # a dominant column alone reaches at least this skill,
DOMINANT_GAP = 0.15  # this much more than all the other columns together,
DOMINANT_DROP = 0.2  # and the table loses at least this much without it,
DOMINANT_REST = 0.5  # when the rest carries real signal (alone in a table of noise, a column is just the signal)
DETERMINED = 0.85  # skill with which the target (or another suspect) predicts a re-expressing column
ROUNDS = 4
CANDIDATES = 2  # strongest single columns examined with a model of the rest, per round
LEAN_STEP = 3  # the review note sets aside the columns the table's model gains most from, this many at a time,
LEAN_MAX = 9  # at most this many (and a third of the columns),
LEAN_WHOLE = 0.6  # and names them when the table reaches this skill
LEAN_GAP = 0.4  # and without them the rest this much less;
LEAN_CELLS = 2_000  # not for tables whose classes x columns exceed this (a bound on its cost)


@dataclass(frozen=True)
class Assessment:
    """The sentinel's verdict: every feature's own score, the suspects that stop a run, and notes
    for review that do not."""

    scores: dict[str, tuple[str, float]]
    suspects: list[Suspect]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suspect:
    """One column the sentinel stops on, with the rule it broke and the figures that show it."""

    column: str
    rule: str  # alone | dominant | re-expresses | identifier
    metric: str
    solo: float  # the column alone, in ``metric``
    evidence: str


def _numeric(values: pl.Series) -> np.ndarray:
    if isinstance(values.dtype, pl.Datetime | pl.Date):
        values = values.dt.epoch("s")
    x = values.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64)
    finite = x[np.isfinite(x)]
    low = float(finite.min()) - 1.0 if len(finite) else 0.0
    return np.where(np.isfinite(x), x, low)  # missing is a value of its own, below every other


def _out_of_fold(fit_predict, n: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2 :])
    out: np.ndarray | None = None
    for fit_on, predict_on in (halves, halves[::-1]):
        predicted = fit_predict(fit_on, predict_on)
        if out is None:
            out = np.zeros((n, *predicted.shape[1:]), dtype=np.float64)
        out[predict_on] = predicted
    assert out is not None
    return out


def _tree_scores(x: np.ndarray, y: np.ndarray, task: str, n_classes: int, seed: int) -> np.ndarray:
    def fit_predict(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        leaf = max(5, len(a) // 1000)
        if task == "regression":
            model = DecisionTreeRegressor(max_leaf_nodes=LEAVES, min_samples_leaf=leaf, random_state=seed)
            return model.fit(x[a, None], y[a]).predict(x[b, None])
        model = DecisionTreeClassifier(max_leaf_nodes=LEAVES, min_samples_leaf=leaf, random_state=seed)
        model.fit(x[a, None], y[a])
        proba = np.zeros((len(b), n_classes))
        proba[:, model.classes_] = model.predict_proba(x[b, None])
        return proba

    return _out_of_fold(fit_predict, len(y), seed)


def _level_scores(levels: np.ndarray, y: np.ndarray, task: str, n_classes: int, seed: int) -> np.ndarray:
    def fit_predict(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        codes_a, codes_b = levels[a], levels[b]
        size = int(levels.max()) + 1
        if task == "regression":
            sums = np.bincount(codes_a, weights=y[a], minlength=size)
            counts = np.bincount(codes_a, minlength=size)
            means = np.where(counts > 0, sums / np.maximum(counts, 1), y[a].mean())
            return means[codes_b]
        table = np.zeros((size, n_classes))
        np.add.at(table, (codes_a, y[a]), 1.0)
        seen = table.sum(axis=1, keepdims=True)
        prior = np.bincount(y[a], minlength=n_classes) / len(a)
        return np.where(seen > 0, table / np.maximum(seen, 1), prior)[codes_b]

    return _out_of_fold(fit_predict, len(y), seed)


def _quality(task: str, y: np.ndarray, predicted: np.ndarray) -> tuple[str, float]:
    if task == "regression":
        return "r2", float(skm.r2_score(y, predicted))
    if task == "binary":
        return "roc_auc", float(skm.roc_auc_score(y, predicted[:, 1]))
    return "balanced_accuracy", float(skm.balanced_accuracy_score(y, predicted.argmax(axis=1)))


def feature_scores(
    train: pl.DataFrame, spec: DomainSpec, classes: list[Any], max_rows: int = MAX_ROWS
) -> dict[str, tuple[str, float]]:
    """How well each feature alone predicts the target, out of fold on (a sample of) train."""
    return _solo(train, spec, classes, max_rows)[0]


def _class_auc(y: np.ndarray, predicted: np.ndarray) -> tuple[int, float] | None:
    """Multiclass: the class (of at least 5% of rows) one column separates best from the rest."""
    best = None
    for k in range(predicted.shape[1]):
        member = y == k
        if member.mean() < 0.05 or member.all() or np.unique(predicted[:, k]).size < 2:
            continue
        auc = float(skm.roc_auc_score(member, predicted[:, k]))
        if best is None or auc > best[1]:
            best = (k, auc)
    return best


def _solo(
    train: pl.DataFrame, spec: DomainSpec, classes: list[Any], max_rows: int = MAX_ROWS
) -> tuple[dict[str, tuple[str, float]], dict[str, tuple[int, float]]]:
    """Each feature's own score, and for multiclass targets the class it separates best (ROC AUC
    one against the rest: a test result that is one outcome)."""
    rows = max(2_000, min(max_rows, MAX_CELLS // max(len(spec.feature_columns), 1)))
    sample = train if train.height <= rows else train.sample(rows, seed=spec.split.seed)

    y = encode_labels(sample[spec.target], spec, classes)
    if len(y) < 20 or (spec.task != "regression" and len(np.unique(y)) < 2):
        return {}, {}
    n_classes, seed = max(len(classes), 2), spec.split.seed
    scores, by_class = {}, {}
    for column in spec.feature_columns:
        values = sample[column.name]
        if column.dtype is Dtype.CATEGORY:
            levels = values.cast(pl.String).fill_null("\x00missing").cast(pl.Categorical).to_physical()
            predicted = _level_scores(levels.to_numpy().astype(np.int64), y, spec.task, n_classes, seed)
            metric, value = _quality(spec.task, y, predicted)
        else:
            x = _numeric(values)
            predicted = _tree_scores(x, y, spec.task, n_classes, seed)
            metric, value = _quality(spec.task, y, predicted)
            if spec.task == "binary" and np.unique(x).size > 1:
                auc = float(skm.roc_auc_score(y, x))
                value = max(value, auc, 1.0 - auc)
            elif spec.task == "regression" and np.std(x) > 0 and np.std(y) > 0:
                value = max(value, float(np.corrcoef(x, y)[0, 1] ** 2))
        scores[column.name] = (metric, value)
        if spec.task == "multiclass":
            found = _class_auc(y, predicted)
            if found is not None:
                by_class[column.name] = found
    return scores, by_class


def _skill(metric: str, value: float, n_classes: int) -> float:
    """A score on the common scale: 0 no better than chance, 1 perfect."""
    if metric == "roc_auc":
        return 2 * value - 1
    if metric == "balanced_accuracy":
        chance = 1 / max(n_classes, 2)
        return (value - chance) / (1 - chance)
    return value


def _model_matrix(sample: pl.DataFrame, spec: DomainSpec, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Columns for a gradient-boosted model: numbers as they are (missing as NaN), categories as
    codes of their 254 most frequent levels (native categorical splits)."""
    kinds = {c.name: c.dtype for c in spec.feature_columns}
    columns, categorical = [], []
    for name in names:
        values = sample[name]
        if kinds[name] is Dtype.CATEGORY:
            text = values.cast(pl.String)
            top = text.drop_nulls().value_counts(sort=True)[name].head(254).to_list()
            codes = pl.DataFrame({"v": text}).join(
                pl.DataFrame({"v": top, "c": np.arange(len(top), dtype=np.float64)}),
                on="v",
                how="left",
                maintain_order="left",
            )["c"]
            codes = codes.fill_null(float(len(top)) if text.null_count() < len(text) else np.nan)
            columns.append(codes.to_numpy().astype(np.float64))
            categorical.append(True)
        else:
            if isinstance(values.dtype, pl.Datetime | pl.Date):
                values = values.dt.epoch("s")
            columns.append(values.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64))
            categorical.append(False)
    return np.column_stack(columns) if columns else np.zeros((sample.height, 0)), np.array(categorical, dtype=bool)


def _table_skill(
    X: np.ndarray, categorical: np.ndarray, keep: list[int], y: np.ndarray, task: str, n_classes: int, seed: int
) -> float:
    """Out-of-fold skill of a gradient-boosted model of the columns ``keep``."""
    if not keep:
        return 0.0

    def fit_predict(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        kind = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
        mask = categorical[keep] if categorical[keep].any() else None
        model = kind(max_iter=60, early_stopping=False, categorical_features=mask, random_state=seed)
        model.fit(X[np.ix_(a, keep)], y[a])
        if task == "regression":
            return model.predict(X[np.ix_(b, keep)])
        proba = np.zeros((len(b), n_classes))
        proba[:, model.classes_] = model.predict_proba(X[np.ix_(b, keep)])
        return proba

    metric, value = _quality(task, y, _out_of_fold(fit_predict, len(y), seed))
    return _skill(metric, value, n_classes)


def _determines(source: np.ndarray, target: pl.Series, dtype: Dtype, seed: int) -> float:
    """How exactly ``source`` (one column as numbers) determines the column ``target``: skill of a
    one-column tree, out of fold (balanced accuracy above chance for categories, R² otherwise)."""
    present = target.is_not_null().to_numpy()
    if present.sum() < 20:
        return 0.0
    x = np.where(np.isfinite(source), source, np.nanmin(source[np.isfinite(source)], initial=0.0) - 1)[present]
    if dtype is Dtype.CATEGORY or dtype is Dtype.BOOL:
        codes = target.cast(pl.String).filter(target.is_not_null()).cast(pl.Categorical).to_physical().to_numpy()
        levels = int(codes.max()) + 1
        if levels < 3:  # two levels cannot show that a finer value was coarsened
            return 0.0
        predicted = _tree_scores(x, codes.astype(np.int64), "multiclass", levels, seed)
        return _skill("balanced_accuracy", float(skm.balanced_accuracy_score(codes, predicted.argmax(1))), levels)
    values = _numeric(target)[present]
    if np.std(values) == 0:
        return 0.0
    return float(skm.r2_score(values, _tree_scores(x, values, "regression", 1, seed)))


def _identifier(values: pl.Series, dtype: Dtype) -> bool:
    return dtype is Dtype.INT and values.len() >= 50 and values.null_count() == 0 and values.n_unique() == values.len()


@dataclass
class _Table:
    """The training sample as the sentinel's models see it, and the suspects found so far."""

    spec: DomainSpec
    classes: list[Any]
    scores: dict[str, tuple[str, float]]
    by_class: dict[str, tuple[int, float]]
    sample: pl.DataFrame
    y: np.ndarray
    X: np.ndarray
    categorical: np.ndarray
    suspects: dict[str, Suspect]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.spec.feature_columns]

    @property
    def n_classes(self) -> int:
        return max(len(self.classes), 2)

    def skill(self, name: str) -> float:
        metric, value = self.scores[name]
        return _skill(metric, value, self.n_classes)

    def model_skill(self, keep: list[int]) -> float:
        return _table_skill(
            self.X, self.categorical, keep, self.y, self.spec.task, self.n_classes, self.spec.split.seed
        )

    def add(self, name: str, rule: str, evidence: str) -> None:
        metric, value = self.scores[name]
        self.suspects.setdefault(name, Suspect(name, rule, metric, value, evidence))


def _alone(table: _Table, open_: list[str]) -> None:
    threshold = table.spec.leakage.threshold
    for name in open_:
        metric, value = table.scores[name]
        if value > threshold:
            table.add(name, "alone", f"alone {metric} {value:.4f}, above the sentinel's {threshold}")
        elif table.spec.leakage.one_class and name in table.by_class and table.by_class[name][1] > threshold:
            label, auc = table.classes[table.by_class[name][0]], table.by_class[name][1]
            table.add(name, "alone", f"alone it tells class {label!r} from the rest with roc_auc {auc:.4f}")


def _dominant(table: _Table, open_: list[str], kept: list[int]) -> None:
    names, whole = table.names, None  # the model of every column left, fitted only when needed
    for name in open_[:CANDIDATES]:
        if name in table.suspects or table.skill(name) < DOMINANT_SKILL:
            continue
        rest = table.model_skill([i for i in kept if names[i] != name])
        if rest < DOMINANT_REST:
            continue
        whole = table.model_skill(kept) if whole is None else whole
        if table.skill(name) - rest >= DOMINANT_GAP and whole - rest >= DOMINANT_DROP:
            metric, value = table.scores[name]
            table.add(
                name,
                "dominant",
                f"alone skill {table.skill(name):.3f} ({metric} {value:.4f}); the other {len(kept) - 1} column(s) "
                f"together {rest:.3f}; the table loses {whole - rest:.3f} without it",
            )


def _re_expressions(table: _Table, open_: list[str]) -> None:
    """Categories the target, or a column already suspected, fixes almost exactly (a number that
    re-expresses the target is as strong alone, and judged so)."""
    kinds = {c.name: c.dtype for c in table.spec.feature_columns}
    seed = table.spec.split.seed
    for name in open_:
        if name in table.suspects or table.skill(name) < DOMINANT_SKILL or kinds[name] is not Dtype.CATEGORY:
            continue
        by_target = _determines(table.y.astype(np.float64), table.sample[name], kinds[name], seed)
        if by_target >= DETERMINED:
            table.add(
                name, "re-expresses", f"the target determines it (skill {by_target:.3f}); alone {table.skill(name):.3f}"
            )
            continue
        for other in list(table.suspects):
            tied = _determines(table.X[:, table.names.index(other)], table.sample[name], kinds[name], seed)
            if tied >= DETERMINED:
                table.add(name, "re-expresses", f"an almost exact function of {other!r} (skill {tied:.3f})")
                break


def _booster(table: _Table) -> Any:
    import xgboost as xgb

    kind = xgb.XGBRegressor if table.spec.task == "regression" else xgb.XGBClassifier
    return kind(n_estimators=40, max_depth=5, max_bin=64, random_state=table.spec.split.seed, n_jobs=2)


def _booster_skill(table: _Table, keep: list[int]) -> float:
    """Out-of-fold skill of a small XGBoost model of the columns ``keep`` (classes coded 0..k-1)."""

    def fit_predict(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if table.spec.task == "regression":
            return _booster(table).fit(table.X[np.ix_(a, keep)], table.y[a]).predict(table.X[np.ix_(b, keep)])
        seen = np.unique(table.y[a])  # XGBoost wants the classes it is shown numbered 0..k-1
        model = _booster(table).fit(table.X[np.ix_(a, keep)], np.searchsorted(seen, table.y[a]))
        proba = np.zeros((len(b), table.n_classes))
        proba[:, seen] = model.predict_proba(table.X[np.ix_(b, keep)])
        return proba

    if not keep:
        return 0.0
    metric, value = _quality(table.spec.task, table.y, _out_of_fold(fit_predict, len(table.y), table.spec.split.seed))
    return _skill(metric, value, table.n_classes)


def _leaned_on(table: _Table, kept: list[int]) -> list[int]:
    """The ``LEAN_STEP`` columns a small XGBoost model of ``kept`` gains most from."""
    seen = np.unique(table.y)
    y = table.y if table.spec.task == "regression" else np.searchsorted(seen, table.y)
    gain = _booster(table).fit(table.X[:, kept], y).get_booster().get_score(importance_type="total_gain")
    ranked = sorted(((value, kept[int(key[1:])]) for key, value in gain.items()), reverse=True)
    return [index for _, index in ranked[:LEAN_STEP]]


def _leaning(table: _Table, kept: list[int]) -> str | None:
    """A note naming the few columns the table's model leans on, when without them the others
    reach far less (see the module docstring). They are set aside a few at a time, most gain
    first: with one copy of the answer left in, the rest would still look strong."""
    if table.n_classes * len(kept) > LEAN_CELLS:
        return None
    whole, leaned, rest = None, [], list(kept)
    while len(leaned) + LEAN_STEP <= min(LEAN_MAX, len(kept) // 3):
        group = _leaned_on(table, rest)
        if not group:
            return None
        leaned += group
        rest = [i for i in rest if i not in group]
        whole = _booster_skill(table, kept) if whole is None else whole
        others = _booster_skill(table, rest)
        if whole >= LEAN_WHOLE and whole - others >= LEAN_GAP:
            listed = ", ".join(repr(table.names[i]) for i in leaned)
            return (
                f"review: the model leans on {listed}: with them the table reaches skill {whole:.3f}, the other "
                f"{len(rest)} column(s) {others:.3f}. Columns that together re-express the target look like this, "
                "and so do drivers that act together: keep only what is known when a prediction is made "
                "(--drop-cols to leave one out)"
            )
    return None


def assess(train: pl.DataFrame, spec: DomainSpec, classes: list[Any]) -> Assessment:
    """Every feature's own score, the suspects and the notes (see the module docstring), allowed
    columns exempt (they stay in the models of the rest: the user vouched for them)."""
    scores, by_class = _solo(train, spec, classes)
    if not scores:
        return Assessment(scores, [])

    sample = train if train.height <= MODEL_ROWS else train.sample(MODEL_ROWS, seed=spec.split.seed)
    names = [c.name for c in spec.feature_columns]
    X, categorical = _model_matrix(sample, spec, names)
    y = encode_labels(sample[spec.target], spec, classes)
    table = _Table(spec, classes, scores, by_class, sample, y, X, categorical, {})
    allowed = set(spec.leakage.allow)
    for column in spec.feature_columns:
        if column.name not in allowed and _identifier(train[column.name], column.dtype):
            table.add(column.name, "identifier", f"whole numbers unique to each of the {train.height:,} training rows")
    for _ in range(ROUNDS):  # again on what is left: a second copy of the answer behind the first
        found = len(table.suspects)
        kept = [i for i, n in enumerate(names) if n not in table.suspects]
        open_ = sorted(
            (n for n in names if n not in table.suspects and n not in allowed), key=lambda n: -table.skill(n)
        )
        _alone(table, open_)
        _dominant(table, open_, kept)
        _re_expressions(table, open_)
        if len(table.suspects) == found:
            break
    if table.suspects:
        return Assessment(scores, list(table.suspects.values()))
    note = _leaning(table, list(range(len(names))))
    return Assessment(scores, [], (note,) if note else ())


def check_leakage(train: pl.DataFrame, spec: DomainSpec, classes: list[Any]) -> Assessment:
    """Raise ``LeakageError`` naming every suspect with its evidence (columns the spec allows are
    exempt); return the assessment (scores, notes for review) otherwise."""
    found = assess(train, spec, classes)
    if found.suspects:
        raise LeakageError(found.suspects, spec.leakage.threshold)
    return found
