"""``pair_of``: the KD pair (``structkd.kd.methods.KDPair``) of a teacher and a student, by the
student's model family."""

from __future__ import annotations

from structkd.config import ConfigError
from structkd.models.base import Model
from structkd.models.pair import Pair
from structkd.models.parser_pair import ParserPair
from structkd.models.tagger_pair import TaggerPair

FAMILIES: dict[str, type[Pair]] = {"ner": TaggerPair, "dep": ParserPair}
"""The pair class of each model family (``Model.task``); a new family adds its own."""


def pair_of(teacher: Model, student: Model) -> Pair:
    """The pair binding ``teacher`` (already ``as_teacher_of(student)``) to ``student``.

    Raises:
        ConfigError: for a student of a family without distillation, or of the wrong class.
    """
    family = FAMILIES.get(student.task)
    if family is None:
        raise ConfigError(f"a {student.task} model cannot be distilled into")
    return family(teacher, student)
