"""The class list persisted as the project's categories (schema version 3)."""

import sqlite3

import pytest

from annotator.annotations.classes import ClassList
from annotator.projects.schema import MIGRATIONS
from annotator.projects.store import Project


def test_class_list_round_trips_with_colours_and_keys(tmp_path):
    path = tmp_path / "p.annotator"
    cl = ClassList().add("person", color="#ff0000").add("car").add("sign", shortcut=None)
    with Project(path) as p:
        p.save_classes(cl)
    with Project(path) as p:
        assert p.classes() == cl
        assert [(k.id, k.name, k.shortcut) for k in p.categories()] == [
            (1, "person", 1),
            (2, "car", 2),
            (3, "sign", None),
        ]


def test_ids_stay_stable_across_renames_swaps_and_exports(tmp_path):
    with Project(tmp_path / "p.annotator") as p:
        p.save_classes(ClassList().add("cat").add("dog"))
        cl = p.classes().rename(1, "tmp").rename(2, "cat").rename(1, "dog")  # swap the names
        p.save_classes(cl)
        assert [(c.id, c.name) for c in p.classes()] == [(1, "dog"), (2, "cat")]
        p.add_category("bird")  # a label typed as free text elsewhere
        assert p.classes().by_name("bird").id == 3
        assert p.classes().add("fish").by_name("fish").id == 4


def test_a_shortcut_moves_without_a_constraint_error(tmp_path):
    with Project(tmp_path / "p.annotator") as p:
        p.save_classes(ClassList().add("a").add("b"))
        p.save_classes(p.classes().set_shortcut(2, 1))
        assert p.classes().by_shortcut(1).name == "b"
        with pytest.raises(sqlite3.IntegrityError), p._write() as c:  # the file refuses a key twice
            c.execute("UPDATE categories SET shortcut = 1")


def test_a_version_2_file_gets_the_shortcut_column(tmp_path):
    path = tmp_path / "v2.annotator"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA application_id = 1095650895")
    for migration in MIGRATIONS[:2]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO categories (name, color) VALUES ('tree', '#00ff00')")
    conn.close()
    with Project(path) as p:
        assert p.classes().by_name("tree").color == "#00ff00"
        assert p.classes().by_name("tree").shortcut is None
