"""The viewer's sky background (``indexer.hips``, ``app.views.hips``): a HiPS built from the sample
archive, checked against the archive's truth (pointings, injected sources) and the camera MOCs
with HEALPix arithmetic of its own (tile pixel <-> NESTED index), not with the builder's code."""

import re
import shutil
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import ICRS, SkyCoord
from astropy.io import fits
from astropy_healpix import HEALPix
from mocpy import MOC
from PIL import Image

from app import create_app
from app import service as service_mod
from indexer import hips
from indexer.cli import main
from indexer.hips import EventReader, HipsError, build_hips
from indexer.index import Index
from indexer.instruments.xmm_epic import STANDARD_FILTERS

MAX_ORDER = hips.default_max_order()
TILE_BITS = 9  # 512 = 2**9 pixels a side
TILE_NAME = re.compile(r"Norder(\d+)/Dir(\d+)/Npix(\d+)\.png")


# --- helpers: HiPS layout from the HiPS standard, independently of indexer.hips --------------


def tile_files(folder: Path) -> dict[int, set[int]]:
    """{order: {npix}} of the PNG tiles in a HiPS folder (checking the Dir naming)."""
    found: dict[int, set[int]] = {}
    for path in folder.rglob("Npix*.png"):
        match = TILE_NAME.fullmatch(path.relative_to(folder).as_posix())
        assert match, path
        order, directory, npix = map(int, match.groups())
        assert directory == npix // 10000 * 10000
        found.setdefault(order, set()).add(npix)
    return found


def _spread(bits: np.ndarray) -> np.ndarray:
    """Put bit b of ``bits`` at position 2b."""
    out = np.zeros_like(bits)
    for b in range(TILE_BITS):
        out |= ((bits >> b) & 1) << (2 * b)
    return out


def _compact(spread: np.ndarray) -> np.ndarray:
    out = np.zeros_like(spread)
    for b in range(TILE_BITS):
        out |= ((spread >> (2 * b)) & 1) << b
    return out


def healpix_of_pixels(order: int, npix: int) -> np.ndarray:
    """NESTED index at order + 9 of each pixel of a PNG tile (row 0 at the top): the row number
    holds the even bits of the index within the tile, the column the odd bits (HiPS 1.0)."""
    row, col = np.mgrid[0 : 2**TILE_BITS, 0 : 2**TILE_BITS].astype(np.int64)
    return (np.int64(npix) << (2 * TILE_BITS)) | _spread(row) | (_spread(col) << 1)


def hips_pixels(folder: Path, order: int, ra, dec) -> np.ndarray:
    """RGBA of the HiPS pixels holding sky positions [deg] (zeros where there is no tile)."""
    hp = HEALPix(nside=2 ** (order + TILE_BITS), order="nested", frame=ICRS())
    fine = hp.lonlat_to_healpix(np.atleast_1d(ra) * u.deg, np.atleast_1d(dec) * u.deg)
    fine = fine.astype(np.int64)
    tile, inner = fine >> (2 * TILE_BITS), fine & ((1 << (2 * TILE_BITS)) - 1)
    row, col = _compact(inner), _compact(inner >> 1)
    out = np.zeros(fine.shape + (4,), dtype=np.uint8)
    for npix in np.unique(tile):
        path = folder / f"Norder{order}" / f"Dir{npix // 10000 * 10000}" / f"Npix{npix}.png"
        if path.exists():
            image = np.asarray(Image.open(path).convert("RGBA"))
            here = tile == npix
            out[here] = image[row[here], col[here]]
    return out


def brightness(rgba: np.ndarray) -> np.ndarray:
    """R + G + B (the colour map is monotonic in each channel)."""
    return rgba[..., :3].astype(int).sum(axis=-1)


def read_properties(folder: Path) -> dict[str, str]:
    pairs = {}
    for line in (folder / "properties").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            pairs[key.strip()] = value.strip()
    return pairs


def event_coverage(index_dir: Path) -> tuple[MOC, list[dict]]:
    """Union of the camera MOC files of the indexed event lists, and those rows."""
    rows = [r for r in Index.load(index_dir).observations() if r["source"] == "events"]
    mocs = [MOC.load(str(index_dir / r["moc_file"]), format="fits") for r in rows]
    coverage = mocs[0]
    for moc in mocs[1:]:
        coverage = coverage.union(moc)
    return coverage, rows


def offset(ra: float, dec: float, distance_arcmin: float, pa_deg: float) -> tuple[float, float]:
    moved = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(
        pa_deg * u.deg, distance_arcmin * u.arcmin
    )
    return float(moved.ra.deg), float(moved.dec.deg)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hips_index(sample_index, tmp_path_factory) -> Path:
    """A private copy of the sample index with its HiPS built at the default place and order."""
    index = tmp_path_factory.mktemp("hips") / "index"
    shutil.copytree(sample_index, index)
    report = build_hips(index)
    assert report["rebuilt"] and not report["problems"], report
    return index


# --- the HiPS -----------------------------------------------------------------------------------


def test_properties_have_the_hips_keywords(hips_index):
    props = read_properties(hips_index / "hips")
    assert props["obs_title"] == "Regio archive (X-ray counts)"
    assert props["creator_did"].startswith("ivo://")
    assert props["dataproduct_type"] == "image"
    assert props["hips_version"] == "1.4"
    assert props["hips_frame"] == "equatorial"
    assert props["hips_tile_format"] == "png"
    assert props["hips_tile_width"] == "512"
    assert props["hips_order"] == str(MAX_ORDER)
    assert props["hips_order_min"] == "0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", props["hips_release_date"])
    assert 0 <= float(props["hips_initial_ra"]) < 360
    assert -90 <= float(props["hips_initial_dec"]) <= 90
    assert 0 < float(props["hips_initial_fov"]) <= 180
    # order 7 tiles of 512 pixels: 58.6 deg / 2**16 = 3.2" pixels, no larger than the 4" images
    assert float(props["hips_pixel_scale"]) * 3600 == pytest.approx(3.22, abs=0.01)


def test_tiles_exist_where_the_archive_has_data_and_nowhere_else(hips_index):
    folder = hips_index / "hips"
    tiles = tile_files(folder)
    assert sorted(tiles) == list(range(MAX_ORDER + 1))
    coverage, rows = event_coverage(hips_index)
    cells = {int(n) for n in coverage.degrade_to_order(MAX_ORDER).flatten()}
    deepest = tiles[MAX_ORDER]
    assert deepest <= cells  # no tile off the camera footprints
    assert len(deepest) >= 0.8 * len(cells)  # (edge cells may hold no pixel centre)
    hp = HEALPix(nside=2**MAX_ORDER, order="nested", frame=ICRS())
    pointings = hp.lonlat_to_healpix(
        [r["ra_pnt"] for r in rows] * u.deg, [r["dec_pnt"] for r in rows] * u.deg
    )
    assert {int(n) for n in pointings} <= deepest
    for order in range(MAX_ORDER):  # each lower order: exactly the parents of the order below
        assert tiles[order] == {n >> 2 * (MAX_ORDER - order) for n in deepest}
    assert len(tiles[0]) <= 12


def test_tile_pixels_show_data_only_on_the_footprints(hips_index):
    """Every opaque pixel of the deepest tiles lies on (or within a 26" cell of) a camera
    footprint; inside the footprints, pixels are opaque."""
    folder = hips_index / "hips"
    coverage, _ = event_coverage(hips_index)
    near = event_coverage(hips_index)[0].add_neighbours()  # (mocpy dilates in place)
    hp = HEALPix(nside=2 ** (MAX_ORDER + TILE_BITS), order="nested", frame=ICRS())
    opaque_total = inside_total = 0
    for npix in sorted(tile_files(folder)[MAX_ORDER]):
        path = folder / f"Norder{MAX_ORDER}" / f"Dir{npix // 10000 * 10000}" / f"Npix{npix}.png"
        image = np.asarray(Image.open(path))
        assert image.shape == (512, 512, 4) and image.dtype == np.uint8
        lon, lat = hp.healpix_to_lonlat(healpix_of_pixels(MAX_ORDER, npix).ravel())
        opaque = image[..., 3].ravel() > 0
        assert near.contains_lonlat(lon[opaque], lat[opaque]).all()
        inside = coverage.contains_lonlat(lon, lat)
        opaque_total += int((opaque & inside).sum())
        inside_total += int(inside.sum())
    assert opaque_total >= 0.97 * inside_total


def test_a_bright_source_is_brighter_than_empty_sky(hips_index, truth):
    folder = hips_index / "hips"
    sources = truth["sources"]
    checked = 0
    for field in truth["fields"]:
        bright = [
            s for s in sources if s["field"] == field["name"] and s["kind"] in ("point", "variable")
        ]
        observed = [o for o in truth["observations"] if o["field"] == field["name"]]
        if not bright or not observed:
            continue
        source = max(bright, key=lambda s: s["flux_0.5_10keV"])
        if source["flux_0.5_10keV"] < 5e-13:
            continue
        pointing = observed[0]["ra_pnt"], observed[0]["dec_pnt"]
        # empty sky: 7' from the pointing, in the direction farthest from every source
        candidates = [offset(*pointing, 7.0, pa) for pa in range(0, 360, 15)]

        def clearance(position, field=field):
            here = SkyCoord(*position, unit="deg")
            others = [s for s in sources if s["field"] == field["name"]]
            where = SkyCoord([s["ra"] for s in others], [s["dec"] for s in others], unit="deg")
            return here.separation(where).arcmin.min()

        sky = max(candidates, key=clearance)
        assert clearance(sky) > 1.5
        ring = [offset(*sky, 0.5, pa) for pa in range(0, 360, 45)]
        sky_level = np.median(brightness(hips_pixels(folder, MAX_ORDER, *np.array(ring).T)))
        peak = brightness(hips_pixels(folder, MAX_ORDER, source["ra"], source["dec"]))[0]
        assert hips_pixels(folder, MAX_ORDER, source["ra"], source["dec"])[0, 3] == 255
        assert peak > 2 * sky_level + 60, (source["id"], peak, sky_level)
        checked += 1
    assert checked >= 3


def test_moc_fits_opens_with_mocpy_and_holds_the_pointings(hips_index):
    folder = hips_index / "hips"
    moc = MOC.load(str(folder / "Moc.fits"), format="fits")
    assert moc.max_order == MAX_ORDER
    assert {int(n) for n in moc.flatten()} == tile_files(folder)[MAX_ORDER]
    _, rows = event_coverage(hips_index)
    ra = np.array([r["ra_pnt"] for r in rows]) * u.deg
    dec = np.array([r["dec_pnt"] for r in rows]) * u.deg
    assert moc.contains_lonlat(ra, dec).all()
    assert not moc.contains_lonlat([180.0] * u.deg, [-60.0] * u.deg).any()


def test_allsky_mosaic_has_the_order_3_tiles(hips_index):
    folder = hips_index / "hips"
    allsky = np.asarray(Image.open(folder / "Norder3" / "Allsky.png").convert("RGBA"))
    assert allsky.shape == (29 * 64, 27 * 64, 4)  # 768 tiles of 64 pixels, 27 a row
    present = tile_files(folder)[3]
    for npix in range(768):
        block = allsky[npix // 27 * 64 : npix // 27 * 64 + 64, npix % 27 * 64 : npix % 27 * 64 + 64]
        assert (block[..., 3] > 0).any() == (npix in present), npix


def test_build_leaves_one_folder_behind_a_link(hips_index):
    link = hips_index / "hips"
    assert link.is_symlink() and link.resolve().parent == hips_index.resolve()
    assert [p.name for p in hips_index.glob(".hips.build-*")] == [link.resolve().name]
    assert not list(link.rglob("*.npy")) and not list(link.rglob("scratch-*"))


# --- incremental builds and the CLI -------------------------------------------------------------


def test_unchanged_inputs_skip_the_build_and_force_rebuilds(sample_index, tmp_path, capsys):
    out = tmp_path / "sky"
    first = build_hips(sample_index, out, max_order=3)
    assert first["rebuilt"]
    target = out.resolve()
    properties_mtime = (out / "properties").stat().st_mtime_ns

    again = build_hips(sample_index, out, max_order=3)
    assert not again["rebuilt"]
    assert out.resolve() == target
    assert (out / "properties").stat().st_mtime_ns == properties_mtime
    assert again["tiles"] == {str(k): v for k, v in first["tiles"].items()}

    assert main(["hips", "--index", str(sample_index), "--out", str(out), "--max-order", "3"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert out.resolve() == target

    code = main(
        ["hips", "--index", str(sample_index), "--out", str(out), "--max-order", "3", "--force"]
    )
    assert code == 0
    assert "HiPS built" in capsys.readouterr().out
    assert out.resolve() != target and not target.exists()  # switched, old build removed
    assert sorted(p.name for p in tmp_path.glob(".sky.build-*")) == [out.resolve().name]
    assert read_properties(out)["hips_order"] == "3"


def test_a_foreign_folder_is_not_replaced(sample_index, tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(HipsError, match="not replacing"):
        build_hips(sample_index, out, max_order=3)
    assert main(["hips", "--index", str(sample_index), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not replacing" in err and "\n" not in err
    assert (out / "cat.jpg").read_bytes() == b"meow"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--index", "{tmp}/nothing"], "no index"),
        (["--index", "{index}", "--max-order", "99"], "max order"),
        (["--index", "{index}", "--max-order", "-1"], "max order"),
        (["--index", "{index}", "--out", "{tmp}/no/such/folder"], "does not exist"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(sample_index, tmp_path, capsys, args, message):
    argv = [a.format(tmp=tmp_path, index=sample_index) for a in args]
    assert main(["hips", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (sample_index / "hips").exists()


def test_cli_rejects_a_non_numeric_order(sample_index, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["hips", "--index", str(sample_index), "--max-order", "seven"])
    assert exc.value.code == 2
    assert "--max-order" in capsys.readouterr().err


# --- reading event lists -------------------------------------------------------------------------


def _astropy_events(path: Path) -> fits.FITS_rec:
    with fits.open(path) as hdul:
        return hdul["EVENTS"].data.copy()


@pytest.mark.parametrize("which", ["sample", "real"])
def test_event_reader_matches_astropy(which, sample_archive, real_data):
    if which == "sample":
        path = next(sample_archive.rglob("*PIEVLI*.FTZ"))  # gzip, pn
    else:
        path = next(real_data.rglob("mos1_*evts.fits"))  # plain FITS from SAS
    expected = _astropy_events(path)
    with EventReader(path, ("PI", "FLAG", "PATTERN")) as reader:
        assert reader.rows == len(expected)
        chunks = list(reader.chunks(chunk_rows=5000))
    assert len(chunks) == -(-len(expected) // 5000)
    for name in ("X", "Y", "PI", "FLAG", "PATTERN"):
        got = np.concatenate([c[name] for c in chunks])
        np.testing.assert_array_equal(got, np.asarray(expected[name], dtype=got.dtype))


def test_binned_counts_match_a_plain_count(hips_index, sample_archive, truth):
    """The events put in an image are those passing the standard filters in 500-2000 eV."""
    rows = [r for r in Index.load(hips_index).observations() if r["kind"] == "events"]
    for camera in ("EMOS1", "EPN"):
        row = next(r for r in rows if r["camera"] == camera)
        data = _astropy_events(Path(row["path"]))
        flag, pattern, pi = (np.asarray(data[c], dtype=np.int64) for c in ("FLAG", "PATTERN", "PI"))
        if camera == "EPN":
            assert STANDARD_FILTERS[camera] == "FLAG==0 && PATTERN<=4"
            good = (flag == 0) & (pattern <= 4)
        else:
            assert STANDARD_FILTERS[camera] == "(FLAG & 0x766ba000)==0 && PATTERN<=12"
            good = ((flag & 0x766BA000) == 0) & (pattern <= 12)
        expected = int((good & (pi >= 500) & (pi <= 2000)).sum())
        (group,) = hips.group_exposures([row])
        counts = np.zeros(group.shape, dtype=np.int64)
        assert hips.bin_events(row, group, counts) == expected
        assert counts.sum() == expected


# --- the web app ---------------------------------------------------------------------------------


@pytest.fixture
def client(hips_index, redis_url, tmp_path):
    app = create_app({"INDEX": hips_index, "REDIS_URL": redis_url, "INSTANCE": tmp_path})
    return app.test_client()


def fetch(client, url: str, **kwargs):
    """GET ``url``, read the body and close the response (files are sent streamed)."""
    response = client.get(url, follow_redirects=True, **kwargs)
    response.get_data()
    response.close()
    return response


def test_app_serves_properties_tiles_moc_and_allsky(client, hips_index):
    response = fetch(client, "/hips/properties")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "hips_order" in response.get_data(as_text=True)
    assert response.cache_control.no_cache

    npix = min(tile_files(hips_index / "hips")[MAX_ORDER])
    url = f"/hips/Norder{MAX_ORDER}/Dir{npix // 10000 * 10000}/Npix{npix}.png"
    response = fetch(client, url)
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert response.cache_control.max_age == 3600
    again = fetch(client, url, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304

    response = fetch(client, "/hips/Moc.fits")
    assert response.status_code == 200 and response.mimetype == "application/fits"
    assert response.data.startswith(b"SIMPLE  =")
    response = fetch(client, "/hips/Norder3/Allsky.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    # Aladin's requests when the survey URL ends with a slash: served, not redirected
    response = client.get("/hips//Norder3/Allsky.png")
    response.close()
    assert response.status_code == 200 and response.mimetype == "image/png"


@pytest.mark.parametrize(
    "url",
    [
        "/hips/Norder7/Dir0/Npix1.png",  # a tile off the archive: Aladin asks such things
        "/hips/Norder99/Dir0/Npix0.png",
        "/hips/Norder3/Dir0/Npix0.jpg",
        "/hips/index.html",
        "/hips/regio-hips.json",
        "/hips/../index.db",
        "/hips/%2e%2e/index.db",
        "/hips/..%2findex.db",
        "/hips/%2e%2e%2findex.db",
        "/hips/Norder3/../../index.db",
        "/hips//../index.db",
        "/hips//%2e%2e/index.db",
        "/hips//etc/passwd",  # merged to /hips/etc/passwd by a redirect, then 404
        "/hips/%2fetc%2fpasswd",
        "/hips/Norder3/Dir0/Npix0.png%00.png",
        "/hips/" + "Norder3/" * 500 + "Allsky.png",
    ],
)
def test_app_answers_a_plain_404_for_anything_else(client, url):
    response = fetch(client, url)
    assert response.status_code == 404
    assert response.mimetype == "text/plain"
    assert response.data == b"not found\n"


def test_app_without_a_hips_answers_404(sample_index, redis_url, tmp_path):
    app = create_app({"INDEX": sample_index, "REDIS_URL": redis_url, "INSTANCE": tmp_path})
    response = fetch(app.test_client(), "/hips/properties")
    assert response.status_code == 404 and response.data == b"not found\n"


def test_service_logs_a_failed_build_and_goes_on(tmp_path, capsys):
    service_mod.build_hips({"INDEX": tmp_path / "no-index"})
    err = capsys.readouterr().err
    assert "WARNING" in err and "could not be built" in err and "no index" in err
