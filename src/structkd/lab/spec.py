"""The typed experiment spec: an experiment file (``configs/experiments/*.yaml``), its runs.

:func:`load_experiment` reads and checks the file once, into an :class:`ExperimentSpec`; its
:meth:`ExperimentSpec.plan` names every run of the grid (:class:`PlannedRun`: group, method label,
KD method, seed, teachers and run id ``GROUP-METHOD-sSEED``). The grid runner
(:mod:`structkd.lab.experiment`) turns planned runs into commands; the report
(:mod:`structkd.lab.report`) reads the spec that ``experiment.json`` records and looks runs up
in its plan, so that no run id is ever parsed back into its parts. The file's format is in
:mod:`structkd.lab.experiment`'s docstring.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from structkd.config import ConfigError, read_yaml

__all__ = [
    "SPLITS",
    "DataSlice",
    "ExperimentSpec",
    "MethodSpec",
    "PlannedRun",
    "StudentSpec",
    "TeacherSpec",
    "load_experiment",
]

SPLITS = ("train", "unlabeled", "dev", "test")
"""The data splits an experiment file names (other keys of ``data`` are ignored)."""


@dataclass(frozen=True)
class DataSlice:
    """Sentences ``skip .. skip+first`` of the corpus ``path`` (``first`` None: to the end)."""

    path: str
    skip: int = 0
    first: int | None = None


DataItem = str | DataSlice
"""A data file as given (a path under ``data_root`` or ``resource:NAME``), or a slice of one."""


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher: trained by the grid from ``config``, or trained elsewhere (``model``).

    Attributes:
        name: its key under ``teachers``.
        config: its run config (None for a ``model`` teacher).
        model: its model directory under ``runs_dir`` (None when the grid trains it).
        seed: ``train.seed`` of its run.
        data: split -> data items.
        sets: ``KEY=VALUE`` overrides of its run.
    """

    name: str
    config: str | None = None
    model: str | None = None
    seed: int = 1
    data: dict[str, tuple[DataItem, ...]] = field(default_factory=dict)
    sets: tuple[str, ...] = ()

    @property
    def run_id(self) -> str:
        return f"teacher-{self.name}"


@dataclass(frozen=True)
class MethodSpec:
    """One method of a student case: a row of its results table.

    Attributes:
        label: its key under ``methods`` (the row's name, part of the run id).
        kind: the KD method (``--method``); ``none``: a plain ``train`` run.
        sets: its own ``KEY=VALUE`` overrides, after the case's.
        teachers: the teachers it distils from (its own or the case's; none for ``none``).
        unlabeled: the unlabeled corpora it distils on: None for the case's, ``()`` for none
            (``unlabeled: false`` in the file: the labeled sentences only, e.g. to measure what
            the unlabeled text adds), or its own (``unlabeled: [path or slice, ...]``, e.g. to
            compare kinds of text).
    """

    label: str
    kind: str
    sets: tuple[str, ...] = ()
    teachers: tuple[str, ...] = ()
    unlabeled: tuple[DataItem, ...] | None = None


@dataclass(frozen=True)
class StudentSpec:
    """A student case: one run per method and seed.

    Attributes:
        name: its key under ``students``.
        config: its run config.
        teachers: the case's teacher names (a method may name its own).
        seeds: the seeds of every method.
        data: split -> data items.
        sets: ``KEY=VALUE`` overrides of every run.
        methods: label -> method, in the file's order.
        cache: the name its teacher caches go by (``work_dir/cache/CACHE-METHOD``): cases that
            give one name share the teacher pass of a method, e.g. students of several sizes on
            the same data and teacher (their cache key, which names the data, the student's
            structure and the teachers, refuses what differs); default its own name.
    """

    name: str
    config: str | None
    teachers: tuple[str, ...]
    seeds: tuple[int, ...]
    data: dict[str, tuple[DataItem, ...]]
    sets: tuple[str, ...]
    methods: dict[str, MethodSpec]
    cache: str = ""


@dataclass(frozen=True)
class PlannedRun:
    """One run of the grid, as the experiment file plans it.

    Attributes:
        run_id: directory name under ``results/NAME/`` and ``work_dir/NAME/``.
        role: ``teacher`` or ``student``.
        group: the teacher's or the student case's name in the experiment file.
        method: the method label (``teacher`` for teachers).
        kind: the KD method (``none`` for plain students, ``teacher`` for teachers).
        seed: ``train.seed`` (None for a teacher trained elsewhere).
        teachers: the run ids of all its teachers (several: a student of averaged teachers).
    """

    run_id: str
    role: str
    group: str
    method: str
    kind: str
    seed: int | None
    teachers: list[str] = field(default_factory=list)

    @property
    def teacher(self) -> str | None:
        """The run id of its (first) teacher, None for runs that do not distil."""
        return self.teachers[0] if self.teachers else None


@dataclass(frozen=True)
class ExperimentSpec:
    """An experiment file, checked.

    Attributes:
        teachers: name -> teacher, in the file's order.
        students: name -> student case, in the file's order.
        data_root: the directory data paths are relative to.
        work_dir: where runs write models, caches and data slices (``work_dir/NAME``).
        runs_dir: where ``model`` teachers are found.
        jobs: runs at once.
        threads: OMP/MKL/torch threads per run.
        also_evaluate: label -> data path every student is also scored on.
        report: ``cost`` (a timing grid), ``pareto`` (a size sweep) or None.
        raw: the file's mapping as read (what ``experiment.json`` records).
    """

    teachers: dict[str, TeacherSpec]
    students: dict[str, StudentSpec]
    data_root: str = "."
    work_dir: str = "runs/experiments"
    runs_dir: str = "."
    jobs: int = 1
    threads: int = 1
    also_evaluate: dict[str, str] = field(default_factory=dict)
    report: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str | Path = "experiment") -> ExperimentSpec:
        """The spec of an experiment file's mapping (as read, or as ``experiment.json``
        records it); errors name ``source``.

        Raises:
            ConfigError: on an unknown teacher, a malformed method, data entry or
                ``also_evaluate``.
        """
        teachers = {
            name: _teacher(name, t or {}, source) for name, t in (raw.get("teachers") or {}).items()
        }
        students = {
            name: _student(name, s or {}, teachers, source)
            for name, s in (raw.get("students") or {}).items()
        }
        extra = raw.get("also_evaluate", {})
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            raise ConfigError(f"{source}: also_evaluate: expected a map of label -> data path")
        return cls(
            teachers=teachers,
            students=students,
            data_root=str(raw.get("data_root", ".")),
            work_dir=str(raw.get("work_dir", "runs/experiments")),
            runs_dir=str(raw.get("runs_dir", ".")),
            jobs=int(raw.get("jobs", 1)),
            threads=int(raw.get("threads", 1)),
            also_evaluate=dict(extra),
            report=raw.get("report"),
            raw=dict(raw),
        )

    def plan(self) -> list[PlannedRun]:
        """Every run of the grid: teachers trained elsewhere, teachers the grid trains, then
        students by case, seed and method (seed-major: a cut-short grid has every method once)."""
        runs = [
            PlannedRun(t.run_id, "teacher", t.name, "teacher", "teacher", None)
            for t in self.teachers.values()
            if t.model is not None
        ]
        runs += [
            PlannedRun(t.run_id, "teacher", t.name, "teacher", "teacher", t.seed)
            for t in self.teachers.values()
            if t.model is None
        ]
        for s in self.students.values():
            for seed in s.seeds:
                for m in s.methods.values():
                    teachers = [f"teacher-{t}" for t in m.teachers]
                    run_id = f"{s.name}-{m.label}-s{seed}"
                    runs.append(
                        PlannedRun(run_id, "student", s.name, m.label, m.kind, seed, teachers)
                    )
        return runs

    def kind(self, group: str, label: str) -> str:
        """The KD method of student case ``group``'s method ``label`` (the label itself when the
        case has no such method)."""
        method = self.students[group].methods.get(label) if group in self.students else None
        return label if method is None else method.kind


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Reads and checks an experiment file (see :mod:`structkd.lab.experiment`).

    Raises:
        ConfigError: on a missing section, an unknown teacher or a malformed method.
    """
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict) or not raw.get("teachers") and not raw.get("students"):
        raise ConfigError(f"{path}: an experiment needs 'teachers' and/or 'students'")
    raw.setdefault("teachers", {})
    raw.setdefault("students", {})
    return ExperimentSpec.from_dict(raw, path)


def _names(teacher: Any) -> tuple[str, ...]:
    """A ``teacher`` entry (a name, a list of names, or None) as a tuple."""
    return () if teacher is None else (teacher,) if isinstance(teacher, str) else tuple(teacher)


def _data(data: Any, source: str | Path, owner: str) -> dict[str, tuple[DataItem, ...]]:
    """A ``data`` mapping: split -> items (a path, or a ``{path, skip, first}`` slice)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {owner}: data: expected a map of split -> data")
    out: dict[str, tuple[DataItem, ...]] = {}
    for split in SPLITS:
        items = data.get(split)
        listed = items if isinstance(items, list) else [] if items is None else [items]
        out[split] = tuple(_item(item, source, owner) for item in listed)
    return out


def _item(item: Any, source: str | Path, owner: str) -> DataItem:
    if isinstance(item, str):
        return item
    if not isinstance(item, dict) or "path" not in item:
        raise ConfigError(
            f"{source}: {owner}: data entry {item!r}: expected a path or {{path, skip, first}}"
        )
    first = item.get("first")
    return DataSlice(
        str(item["path"]), int(item.get("skip", 0)), None if first is None else int(first)
    )


def _teacher(name: str, t: dict[str, Any], source: str | Path) -> TeacherSpec:
    owner = f"teacher {name}"
    return TeacherSpec(
        name=name,
        config=t.get("config"),
        model=t.get("model"),
        seed=int(t.get("seed", 1)),
        data=_data(t.get("data"), source, owner),
        sets=tuple(t.get("set", [])),
    )


def _student(
    name: str, s: dict[str, Any], teachers: Mapping[str, TeacherSpec], source: str | Path
) -> StudentSpec:
    methods: dict[str, MethodSpec] = {}
    for label, method in s.get("methods", {"none": "none"}).items():
        if not isinstance(method, (str, dict)):
            raise ConfigError(f"{source}: student {name}: method {label}: expected str or map")
        given = method.get("teacher") if isinstance(method, dict) else None
        names = _names(given or s.get("teacher"))
        for teacher in names:
            if teacher not in teachers:
                raise ConfigError(f"{source}: student {name}: unknown teacher {teacher!r}")
        kind = method if isinstance(method, str) else method.get("method", "structural")
        sets = () if isinstance(method, str) else tuple(method.get("set", []))
        given_text = True if isinstance(method, str) else method.get("unlabeled", True)
        unlabeled: tuple[DataItem, ...] | None = None
        if given_text is False:
            unlabeled = ()
        elif isinstance(given_text, (list, str)):
            owner = f"student {name}: method {label}"
            unlabeled = _data({"unlabeled": given_text}, source, owner)["unlabeled"]
        elif given_text is not True:
            raise ConfigError(
                f"{source}: student {name}: method {label}: unlabeled: expected true, false "
                "or a list of corpora"
            )
        teachers_of = names if kind != "none" else ()
        methods[label] = MethodSpec(label, kind, sets, teachers_of, unlabeled)
    return StudentSpec(
        name=name,
        config=s.get("config"),
        teachers=_names(s.get("teacher")),
        seeds=tuple(int(seed) for seed in s.get("seeds", [1])),
        data=_data(s.get("data"), source, f"student {name}"),
        sets=tuple(s.get("set", [])),
        methods=methods,
        cache=str(s.get("cache", name)),
    )
