"""The 19 face-parsing classes of FaRL (pyfacer ``farl/celebm/448``), with the paper's names, and
leam's ``unparsed``.

Ids 0-18 and their order are FaRL's, so label maps from any leam parser line up with FaRL's. "Right"
and "left" are the subject's (anatomical) sides, as in the iBUG 68-point annotation: the subject's
right eye is on the image's left and is dlib landmarks 36-41. Id 19, ``unparsed``, is a pixel the
parser cannot classify (the landmark parser cannot tell hair from background from neck): never
counted as background, so no share of "background" is a guess.
"""

from __future__ import annotations

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "FARL_TAGS",
    "N_CLASSES",
    "UNPARSED",
    "class_column",
    "CLASS_COLUMNS",
    "PARSER_VISIBLE",
    "PARSER_CANNOT_SEE",
    "visible_classes",
]

#: (id, FaRL tag, paper name); the FaRL tags are pyfacer's ``label_names`` for celebm/448.
CLASSES: tuple[tuple[int, str, str], ...] = (
    (0, "background", "background"),
    (1, "neck", "neck"),
    (2, "face", "face"),
    (3, "cloth", "clothes"),
    (4, "rr", "right ear"),
    (5, "lr", "left ear"),
    (6, "rb", "right eyebrow"),
    (7, "lb", "left eyebrow"),
    (8, "re", "right eye"),
    (9, "le", "left eye"),
    (10, "nose", "nose"),
    (11, "imouth", "inner mouth"),
    (12, "llip", "lower lip"),
    (13, "ulip", "upper lip"),
    (14, "hair", "hair"),
    (15, "eyeg", "eyeglasses"),
    (16, "hat", "hat"),
    (17, "earr", "earrings"),
    (18, "neck_l", "necklace"),
    (19, "unparsed", "unparsed"),  # leam's: what the parser cannot classify
)

N_CLASSES = len(CLASSES)
#: FaRL's own 19 tags (pyfacer's ``label_names``), ids 0-18
FARL_TAGS: tuple[str, ...] = tuple(tag for i, tag, _ in CLASSES if i < 19)
#: the id of pixels a parser cannot classify
UNPARSED = 19
CLASS_NAMES: tuple[str, ...] = tuple(name for _, _, name in CLASSES)


def class_column(class_id: int) -> str:
    """Column name of a class in the wide counts table, e.g. ``c10_nose``."""
    return f"c{class_id:02d}_{CLASSES[class_id][1]}"


CLASS_COLUMNS: tuple[str, ...] = tuple(class_column(i) for i in range(N_CLASSES))


#: class ids each face parser can produce (the others are absent from its tables): the landmark
#: parser draws regions bounded by the 68 points; FaRL labels all 19 classes
PARSER_VISIBLE: dict[str, tuple[int, ...]] = {
    "landmarks": (2, 6, 7, 8, 9, 10, 11, 12, 13, UNPARSED),
    "farl": tuple(range(19)),
}
#: what each parser cannot see, in words (the report and the database's ``parsers`` table say it)
PARSER_CANNOT_SEE: dict[str, str] = {
    "landmarks": "background, hair, neck, ears, clothes and accessories (their pixels are 'unparsed')",
    "farl": "nothing of its 19 classes",
}


def visible_classes(parser: str) -> tuple[int, ...]:
    """Class ids ``parser`` (``landmarks`` or ``farl``) can produce."""
    return PARSER_VISIBLE[parser]
