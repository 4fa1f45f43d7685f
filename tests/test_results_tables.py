"""The results tables of README.md and docs/ are what their JSON reports render (tools/render_results.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "render_results.py"


@pytest.fixture(scope="module")
def render_results():
    spec = importlib.util.spec_from_file_location("render_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_is_what_its_reports_render(render_results):
    stale = [f"{path.name}: {spec}" for path in render_results.documents()
             for spec in render_results.stale_tables(path.read_text())]  # fmt: skip
    assert not stale, "run python tools/render_results.py"


def test_the_documents_hold_tables(render_results):
    assert sum(len(render_results.BLOCK.findall(p.read_text())) for p in render_results.documents()) >= 4


def test_a_number_typed_into_a_table_is_caught(render_results):
    spec = "small_faces docs/results/small_faces.json"
    good = f"text\n<!-- table: {spec} -->\n{render_results.render(spec)}<!-- /table -->\n"
    assert render_results.stale_tables(good) == []
    edited = good.replace("%", "1%", 1)
    assert render_results.stale_tables(edited) == [spec]
    assert render_results.rendered(edited) == good


def test_the_result_pages_hold_no_table_typed_by_hand(render_results):
    typed = {page: render_results.hand_tables((render_results.ROOT / page).read_text()) for page in render_results.RESULT_PAGES}
    assert not any(typed.values()), typed


def test_a_table_typed_beside_a_rendered_one_is_caught(render_results):
    spec = "small_faces docs/results/small_faces.json"
    page = f"<!-- table: {spec} -->\n{render_results.render(spec)}<!-- /table -->\n\n| run | gender |\n|---|---|\n| a | 95.1% |\n"
    assert render_results.hand_tables(page) == ["| run | gender |"]
    assert render_results.hand_tables(page.replace("\n| run", "\n<!-- reference table -->\n| run")) == []
