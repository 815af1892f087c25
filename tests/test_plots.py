"""Plot arrays read from open products: the background a header names is opened only inside the
run's output folder, never by a path the header chooses."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from app import plots, runs


def write_pha(path, counts, backfile="NONE", backscal=1.0):
    columns = [
        fits.Column(name="CHANNEL", format="J", array=np.arange(len(counts))),
        fits.Column(name="COUNTS", format="J", array=np.asarray(counts)),
    ]
    hdu = fits.BinTableHDU.from_columns(columns, name="SPECTRUM")
    hdu.header.update(
        {"EXPOSURE": 1000.0, "BACKSCAL": backscal, "SPECDELT": 5, "BACKFILE": backfile}
    )
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "run" / runs.OUTPUT).mkdir(parents=True)
    return tmp_path / "run"


def plot(run_dir, name):
    def sibling(other):
        return runs.open_product(run_dir, other)

    with runs.open_product(run_dir, name) as stream:
        return plots.from_fits(stream, sibling)


def test_the_background_beside_the_spectrum_is_scaled(run_dir):
    out = run_dir / runs.OUTPUT
    counts = np.full(2400, 10)
    write_pha(out / "src.pha", counts, backfile="bkg.pha", backscal=1.0)
    write_pha(out / "bkg.pha", counts * 4, backscal=4.0)
    data = plot(run_dir, "src.pha")
    assert data["kind"] == "spectrum"
    source, background = (
        np.array(data["series"][k], dtype=float) for k in ("source", "background")
    )
    np.testing.assert_allclose(background, source)  # 4x the counts over 4x the area


@pytest.mark.parametrize("backfile", ["../../secret.pha", "/etc/passwd", "link.pha"])
def test_a_background_outside_the_folder_or_through_a_link_is_not_read(run_dir, backfile):
    out = run_dir / runs.OUTPUT
    write_pha(run_dir.parent / "secret.pha", np.full(2400, 99))
    (out / "link.pha").symlink_to(run_dir.parent / "secret.pha")
    write_pha(out / "src.pha", np.full(2400, 10), backfile=backfile)
    data = plot(run_dir, "src.pha")
    assert "background" not in data["series"]


def test_not_plottable_files_say_so(run_dir):
    (run_dir / runs.OUTPUT / "notes.fits").write_bytes(b"not fits at all")
    with pytest.raises(plots.NotPlottable):
        plot(run_dir, "notes.fits")
