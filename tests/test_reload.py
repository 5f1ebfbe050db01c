"""Reloading the mappings without downtime (issue 13, item 6): the mapping files are read once
into a snapshot whose digest names them; a reload loads and checks new files first and keeps
the old mappings when they are broken; `gateway serve` does that on SIGHUP."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT

import mapping
from errors import MappingError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped mappings that a test may edit."""
    return Path(shutil.copytree(ROOT / "mappings", tmp_path / "mappings"))


def test_the_digest_names_the_bytes_the_mappings_were_parsed_from(folder):
    files = mapping.read_files(folder)
    assert sorted(files.content) == ["codes.yaml", "fieldmaps/demo_rest.yaml", "fieldmaps/demo_soap.yaml", "units.yaml"]
    maps = mapping.load_files(files)
    assert maps.digest == files.digest == mapping.load(folder).digest and len(maps.digest) == 64
    (folder / "units.yaml").write_text((folder / "units.yaml").read_text() + "\n# a comment\n")
    assert mapping.load(folder).digest != maps.digest  # any byte counts: what is in force is exactly these files
    (folder / "samples" / "complaint.xml").write_text("<not a mapping/>")
    assert mapping.read_files(folder).digest == mapping.load(folder).digest  # samples are not mappings


def test_a_mapping_file_that_is_not_utf8_is_a_mapping_error(folder):
    (folder / "fieldmaps" / "demo_rest.yaml").write_bytes(b"deliver_case:\n  body: {text: case.text}  # \xff\n")
    with pytest.raises(MappingError, match=r"fieldmaps/demo_rest.yaml is not UTF-8 text"):
        mapping.load(folder)
