"""Every notebook runs top to bottom (nbclient, a real kernel), with smaller settings injected
after its cell tagged "parameters" (papermill's convention), so the suite stays minutes long."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SMALL = {
    "quickstart.ipynb": "n, keep, steps = 8, 6, 20",
    "mock_inference.ipynb": "n, keep, steps = 8, 6, 20",
    "sdss_galaxy.ipynb": "n, keep, steps = 8, 6, 20",
    "teaching.ipynb": "n_draws, steps = 20, 50",
    "calibration.ipynb": 'n_galaxies, draws, keep, steps, truths = 3, 6, 4, 20, "test"',
    "app.ipynb": None,
}


def test_every_notebook_is_listed():
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, request):
    if name == "sdss_galaxy.ipynb":
        request.getfixturevalue("shared_data")             # skips without ../shared/data
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    if SMALL[name] is not None:
        assert tagged, f"{name} has no cell tagged 'parameters'"
        notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(SMALL[name]))
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
