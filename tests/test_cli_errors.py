"""User errors through the real command line: exit status 2, one ``error:`` line, no traceback,
nothing written.

Each case runs ``python -m structkd`` in its own process (all started at once, then awaited),
so whatever reaches the terminal is checked: import-time noise, tracebacks, extra lines.
tests/test_pipeline_train.py checks more cases through ``cli.main`` in-process; this file adds
broken config files, bad ``--set`` values, teachers whose entity types differ from the student's
and a bad line in the middle of a file being tagged. The outcome of every case is listed in
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from structkd.cli import main
from structkd.config import load_config
from structkd.models.checkpoint import load_model
from structkd.tasks import get_task
from structkd.tasks.ner import evaluate
from structkd.train.run import run

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "pipeline"
CONFIGS = ROOT / "configs" / "ner"
TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "train.batch_size=8",
    "train.progress=false",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def train_teacher(out: Path, train: Path) -> Path:
    values = {"data.train": [str(train)], "train.max_epochs": 1, "out": str(out)}
    run(load_config(CONFIGS / "teacher-crf.yaml", [*TINY, "data.dev=", "data.test="], values))
    return out / "model"


@pytest.fixture(scope="module")
def no_org_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher trained on the fixture corpus less its ORG sentences: it knows LOC and PER."""
    tmp = tmp_path_factory.mktemp("teacher")
    sentences = FIXTURES.joinpath("train.conll").read_text(encoding="utf-8").split("\n\n")
    no_org = tmp / "no_org.conll"
    no_org.write_text("\n\n".join(s for s in sentences if "ORG" not in s), encoding="utf-8")
    return train_teacher(tmp / "teacher", no_org)


Case = tuple[list[str], str, Path]  # CLI arguments, start of the error line, must not exist


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, no_org_teacher: Path) -> dict[str, Case]:
    tmp = tmp_path_factory.mktemp("cli")
    files = {
        "unknown.yaml": b"model:\n  encoder: {word_dim: 8, lstm_hiden: 3}\n",
        "wrong_type.yaml": b"train: {max_epochs: ten}\n",
        "not_yaml.yaml": b"train:\n  lr: 1\n   seed: 2\n",
        "latin1.yaml": "train: {seed: 1}\nout: runs/caf\u00e9\n".encode("latin-1"),
    }
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    bad_middle = tmp / "bad_middle.conll"
    lines = FIXTURES.joinpath("test.conll").read_text(encoding="utf-8").splitlines()
    lines[60] = "broken X-PER"
    bad_middle.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = [f"--train={FIXTURES / 'train.conll'}", f"--dev={FIXTURES / 'dev.conll'}"]
    sets = [a for s in TINY for a in ("--set", s)]

    def train(config: Path, out: str, *extra: str) -> list[str]:
        return ["train", str(config), *data, f"--out={tmp / out}", *sets, *extra]

    return {
        "unknown key": (
            train(tmp / "unknown.yaml", "o1"),
            "error: unknown key model.encoder.lstm_hiden (known: ",
            tmp / "o1",
        ),
        "wrong type": (
            train(tmp / "wrong_type.yaml", "o2"),
            "error: train.max_epochs: expected int, got 'ten'",
            tmp / "o2",
        ),
        "teacher knows other types": (
            [
                "distill",
                str(CONFIGS / "case1a.yaml"),
                *data,
                f"--teacher={no_org_teacher}",
                f"--out={tmp / 'o3'}",
                "--set",
                "data.unlabeled=[]",
                *sets,
            ],
            "error: teacher 1 knows entity types ['LOC', 'PER'], the student ['LOC', 'ORG', "
            "'PER']; distillation needs the same types",
            tmp / "o3",
        ),
        "invalid YAML": (
            train(tmp / "not_yaml.yaml", "o4"),
            f"error: {tmp / 'not_yaml.yaml'}:3: not valid YAML: mapping values are not allowed",
            tmp / "o4",
        ),
        "config not UTF-8": (
            train(tmp / "latin1.yaml", "o5"),
            f"error: {tmp / 'latin1.yaml'}:2: not UTF-8 text",
            tmp / "o5",
        ),
        "--set value not YAML": (
            train(CONFIGS / "teacher-crf.yaml", "o6", "--set", "train.lr=[0.1"),
            "error: --set train.lr: expected ',' or ']'",
            tmp / "o6",
        ),
        "bad line while tagging": (
            ["predict", str(no_org_teacher), str(bad_middle), f"--output={tmp / 'pred.conll'}"],
            f"error: {bad_middle}:61: malformed tag 'X-PER'",
            tmp / "pred.conll",
        ),
    }


# The issue's three cases run as real processes (all at once); the rest through cli.main.
IN_A_PROCESS = ("unknown key", "wrong type", "teacher knows other types")


def check(name: str, case: Case, status: int | None, err: str) -> None:
    _, expected, output = case
    assert status == 2, (name, err)
    assert err.count("\n") == 1 and err.startswith(expected), (name, err)
    assert "Traceback" not in err
    assert not output.exists(), name
    assert not list(output.parent.glob(f".{output.name}*")), name  # no temporary file


def test_the_issue_cases_through_python_m_structkd(cases: dict[str, Case]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    running = {
        name: subprocess.Popen(
            [sys.executable, "-m", "structkd", *cases[name][0]],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in IN_A_PROCESS
    }
    for name, process in running.items():
        _, err = process.communicate(timeout=120)
        check(name, cases[name], process.returncode, err)


@pytest.mark.parametrize(
    "name", ["invalid YAML", "config not UTF-8", "--set value not YAML", "bad line while tagging"]
)
def test_more_user_errors_through_cli_main(
    cases: dict[str, Case], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(cases[name][0])
    check(name, cases[name], status, capsys.readouterr().err)


def test_entity_types_the_model_never_saw_count_as_misses(no_org_teacher: Path) -> None:
    """Gold entities of a type unknown to the model are scored as conlleval scores them: each
    one is a miss (recall drops); the type is listed in per_type with nothing predicted."""
    model = load_model(no_org_teacher)
    assert "ORG" not in model.vocab.entity_types
    gold = get_task("ner").read_labeled(str(FIXTURES / "test.conll"), "auto")
    scores = evaluate(model, gold)
    org = scores["per_type"]["ORG"]
    assert org["gold"] > 0 and org["predicted"] == 0 and org["correct"] == 0 and org["f1"] == 0
    total_gold = sum(t["gold"] for t in scores["per_type"].values())
    total_correct = sum(t["correct"] for t in scores["per_type"].values())
    assert scores["recall"] == pytest.approx(100 * total_correct / total_gold)


def test_relations_the_parser_never_saw_count_as_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dependency analogue: gold relations unknown to the parser are LAS errors (its UAS is
    unchanged), listed under per_relation; exit status 0."""
    ewt = ROOT / "tests" / "fixtures" / "dep" / "en_ewt-dev-slice.conllu"
    train = tmp_path / "train.conllu"
    train.write_text("\n\n".join(ewt.read_text(encoding="utf-8").split("\n\n")[:6]) + "\n")
    sets = [
        *TINY,
        "model.encoder.lstm_layers=1",
        "model.parser.arc_dim=8",
        "model.parser.rel_dim=4",
        "data.dev=",
        "data.test=",
    ]
    out = tmp_path / "parser"
    args = ["train", str(ROOT / "configs" / "dep" / "teacher-biaffine.yaml"), f"--train={train}"]
    assert (
        main([*args, f"--out={out}", "--max-epochs=1", *(a for s in sets for a in ("--set", s))])
        == 0
    )
    renamed = tmp_path / "renamed.conllu"
    rows = []
    for line in train.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) == 10 and cols[0].isdigit():
            cols[7] = "never-seen"
        rows.append("\t".join(cols))
    renamed.write_text("\n".join(rows) + "\n", encoding="utf-8")
    capsys.readouterr()
    scores = []
    for gold in (train, renamed):
        assert main(["evaluate", str(out / "model"), str(gold)]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[1]["uas"] == scores[0]["uas"] and scores[1]["las"] == 0.0
    assert set(scores[1]["per_relation"]) == {"never-seen"}
