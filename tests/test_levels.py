"""Query levels: level files (CSV / JSON), validation messages and resolution order."""

from __future__ import annotations

import json

import pytest

from socioseg.data.levels import FUNCTION_NAMES, LevelFileError, LevelMap, resolve_level
from socioseg.types import LEVELS


def test_function_names_are_the_ten_of_the_spec():
    assert len(FUNCTION_NAMES) == 10 == len(set(FUNCTION_NAMES))
    assert {"Park and greenspace", "Transportation stations", "Residential"} <= set(FUNCTION_NAMES)


def test_csv_with_and_without_class(tmp_path):
    path = tmp_path / "levels.csv"
    path.write_text("id,level,class\na,socio-name,School\nb,socio-class,\nc, Socio-Function ,\n")
    levels = LevelMap.from_file(path)
    assert len(levels) == 3
    assert levels.get("a") == ("socio-name", "School")
    assert levels.get("b") == ("socio-class", None)
    assert levels.get("c") == ("socio-function", None)
    assert "z" not in levels and levels.get("z") is None

    two = tmp_path / "two.csv"
    two.write_text("level,id\nunknown,x\n")
    assert LevelMap.from_file(two).get("x") == ("unknown", None)


def test_json_both_shapes(tmp_path):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"a": "socio-name", "b": "socio-function"}))
    assert LevelMap.from_file(flat).get("b") == ("socio-function", None)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"a": {"level": "socio-class", "class": "Hospital"}}))
    assert LevelMap.from_file(nested).get("a") == ("socio-class", "Hospital")
    assert LevelMap.from_dict({"q": {"level": "socio-name", "class": None}}).get("q") == (
        "socio-name",
        None,
    )


def test_bad_level_names_the_file_row_and_valid_names(tmp_path):
    path = tmp_path / "levels.csv"
    path.write_text("id,level\na,socio-name\nb,name\n")
    with pytest.raises(LevelFileError) as info:
        LevelMap.from_file(path)
    message = str(info.value)
    assert str(path) in message and "row 3" in message and "'name'" in message
    assert all(level in message for level in LEVELS)
    assert isinstance(info.value, ValueError)

    bad_json = tmp_path / "levels.json"
    bad_json.write_text(json.dumps({"a": {"level": "socio-thing"}}))
    with pytest.raises(LevelFileError, match=r"entry 'a'.*socio-thing.*valid levels"):
        LevelMap.from_file(bad_json)


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        ("no_header.csv", "a,socio-name\n", r"missing column\(s\).*id,level"),
        ("list.json", "[1, 2]", r"expected a JSON object"),
        ("broken.json", "{", r"not valid JSON"),
        ("nolevel.json", '{"a": {"class": "School"}}', r"no 'level' key"),
        ("levels.txt", "a socio-name", r"unsupported level file type"),
        ("dup.csv", "id,level\na,socio-name\na,socio-class\n", r"row 3: id 'a' listed twice"),
        ("empty_id.csv", "id,level\n,socio-name\n", r"row 2: empty sample id"),
    ],
)
def test_malformed_level_files(tmp_path, name, text, pattern):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LevelFileError, match=pattern):
        LevelMap.from_file(path)


def test_missing_level_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="level file not found"):
        LevelMap.from_file(tmp_path / "nope.csv")


def test_resolve_level_order():
    levels = LevelMap.from_dict({"s1": {"level": "socio-class", "class": "Park"}})
    # The mapping wins, even over a function-name query.
    assert resolve_level("s1", "Educational", levels) == ("socio-class", "Park")
    # Function names match exactly after stripping, case-insensitively.
    assert resolve_level("s2", "  park AND greenspace ", levels) == ("socio-function", None)
    assert resolve_level("s2", "Educational", None) == ("socio-function", None)
    # Anything else is unknown: a name and a class cannot be told apart from text alone.
    assert resolve_level("s2", "Educational buildings", levels) == ("unknown", None)
    assert resolve_level("s2", "School", None) == ("unknown", None)
