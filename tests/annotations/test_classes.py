"""The project class list: stable ids, unique names and keys, colours, COCO categories."""

import pytest

from annotator.annotations.classes import ClassList, ObjectClass, default_color


def test_add_gives_next_id_first_free_key_and_a_colour():
    cl = ClassList().add("person").add("car", color="#FF0000").add("dog", shortcut=None)
    assert [(c.id, c.name, c.shortcut) for c in cl] == [(1, "person", 1), (2, "car", 2), (3, "dog", None)]
    assert cl.by_name("car").color == "#ff0000"
    assert cl.by_name("person").color == default_color(1)
    assert cl.by_shortcut(2).name == "car"


def test_ids_stay_stable_after_removal_rename_and_recolour():
    cl = ClassList().add("a").add("b").add("c")
    cl = cl.remove(2).rename(3, "cat").recolor(1, "#00ff00")
    assert [(c.id, c.name) for c in cl] == [(1, "a"), (3, "cat")]
    assert cl.add("new").by_name("new").id == 4  # never reuses a live id
    assert cl.coco_categories() == [
        {"id": 1, "name": "a", "supercategory": ""},
        {"id": 3, "name": "cat", "supercategory": ""},
    ]


def test_ensure_adds_free_text_labels_once():
    cl = ClassList().ensure(" tree ")
    assert cl.ensure("tree") is cl
    assert [c.name for c in cl] == ["tree"]


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_names_are_refused(bad):
    with pytest.raises(ValueError, match="needs a name"):
        ClassList().add(bad)


def test_duplicates_are_refused():
    cl = ClassList().add("a").add("b")
    with pytest.raises(ValueError, match="already a class"):
        cl.add("a")
    with pytest.raises(ValueError, match="already a class"):
        cl.rename(2, "a")
    with pytest.raises(ValueError, match="taken"):
        cl.add("c", shortcut=1)
    with pytest.raises(ValueError, match="appears twice"):
        ClassList([ObjectClass(1, "x", "#000000"), ObjectClass(1, "y", "#000000")])


@pytest.mark.parametrize("bad", ["red", "#12345", "#gggggg", 5])
def test_bad_colours_are_refused(bad):
    with pytest.raises(ValueError, match="rrggbb"):
        ClassList().add("a", color=bad)


@pytest.mark.parametrize("bad", [0, 10, "x", 1.5])
def test_bad_shortcuts_are_refused(bad):
    with pytest.raises(ValueError, match="1-9"):
        ClassList().add("a", shortcut=bad)


def test_moving_a_shortcut_takes_it_from_the_other_class():
    cl = ClassList().add("a").add("b")
    cl = cl.set_shortcut(2, 1)
    assert cl.by_name("b").shortcut == 1 and cl.by_name("a").shortcut is None


def test_nine_shortcuts_then_none():
    cl = ClassList()
    for i in range(10):
        cl = cl.add(f"c{i}")
    assert [c.shortcut for c in cl] == [1, 2, 3, 4, 5, 6, 7, 8, 9, None]


def test_records_round_trip():
    cl = ClassList().add("a", color="#123456").add("b", shortcut=None)
    assert ClassList.from_records(cl.to_records()) == cl
    assert ClassList.from_records([{"id": 7, "name": "x"}]).by_id(7).color == default_color(7)


def test_colours_of_neighbouring_ids_differ():
    colors = [default_color(i) for i in range(1, 10)]
    assert len(set(colors)) == 9
