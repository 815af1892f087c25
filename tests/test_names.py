"""Object names (issue 15, item 5): ``GET /api/resolve`` finds the archive's ``OBJECT`` names,
offline, without regard to case and spaces; CDS Sesame is asked only when the site set
``REGIO_SESAME_URL`` and the archive has no match. Sesame is faked by a local HTTP server
answering its ``-oxp`` XML: these tests never reach the internet."""

from __future__ import annotations

import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import astropy.units as u
import pytest
from astropy.coordinates import SkyCoord

from app import create_app
from app import names as app_names
from indexer.names import NameTable, normalise
from tests.conftest import ROOT, app_settings

SCRIPTS = ROOT / "tests" / "scripts"

M31_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Sesame xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xsi:noNamespaceSchemaLocation="http://vizier.u-strasbg.fr/xml/sesame_4x.xsd">
<Target option="SNV">
  <name>{name}</name>
  <Resolver name="S=Simbad (via url):    1">
    <INFO>from cache</INFO>
    <oid>1575544</oid>
    <otype>AGN</otype>
    <jpos>00:42:44.33 +41:16:07.5</jpos>
    <jradeg>10.684708333333333</jradeg>
    <jdedeg>41.268750000000004</jdedeg>
    <oname>M  31</oname>
  </Resolver>
</Target>
</Sesame>
"""
NOTHING_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Sesame><Target option="SNV"><name>{name}</name>
<Resolver name="S=Simbad (via url):    0"><INFO>*** Nothing found ***</INFO></Resolver>
</Target></Sesame>
"""


class FakeSesame:
    """A local Sesame: answers ``/-oxp/SNV?NAME`` with M31 for "m31", nothing otherwise, or
    sleeps ``delay`` seconds first; records the names asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.delay = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                name = unquote(urlsplit(self.path).query)
                fake.asked.append(name)
                time.sleep(fake.delay)
                body = (M31_XML if name.lower() == "m31" else NOTHING_XML).format(name=name)
                data = body.encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/cgi-bin/nph-sesame/-oxp/SNV"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sesame():
    fake = FakeSesame()
    yield fake
    fake.close()


@pytest.fixture
def archived(sample_index):
    """The sample index's object names with the pointings of their exposures, read here with
    sqlite3 directly."""
    db = sqlite3.connect(sample_index / "index.db")
    rows = db.execute(
        "SELECT object, mission, obsid, camera, ra_pnt, dec_pnt FROM exposures "
        "WHERE object IS NOT NULL AND object != ''"
    ).fetchall()
    db.close()
    out: dict[str, list] = {}
    for name, mission, obsid, camera, ra, dec in rows:
        out.setdefault(name, []).append((f"{mission}:{obsid}:{camera}", ra, dec))
    assert out, "the sample archive has object names"
    return out


def mean_pointing(pointings) -> SkyCoord:
    c = SkyCoord([p[1] for p in pointings] * u.deg, [p[2] for p in pointings] * u.deg)
    xyz = c.cartesian.xyz.value.mean(axis=1)
    return SkyCoord(x=xyz[0], y=xyz[1], z=xyz[2], representation_type="cartesian").spherical


def test_an_archived_name_resolves_to_its_pointings(client, archived):
    for name, pointings in archived.items():
        for typed in (name, name.lower(), name.replace(" ", ""), f"  {name.upper()}  "):
            response = client.get("/api/resolve", query_string={"name": typed})
            assert response.status_code == 200, (typed, response.get_json())
            body = response.get_json()
            assert body["source"] == "archive" and body["name"] == name
            want = mean_pointing(pointings)
            got = SkyCoord(body["ra"] * u.deg, body["dec"] * u.deg)
            assert got.separation(SkyCoord(want.lon, want.lat)).arcsec < 0.01
            first = body["matches"][0]
            assert first["object"] == name
            assert sorted(e["exposure_id"] for e in first["exposures"]) == sorted(
                p[0] for p in pointings
            )


def test_the_start_of_a_name_finds_it(client, archived):
    name = max(archived, key=len)
    start = normalise(name)[: max(4, len(normalise(name)) // 2)]
    body = client.get("/api/resolve", query_string={"name": start.upper()}).get_json()
    assert body["source"] == "archive"
    assert name in [m["object"] for m in body["matches"]]
    for match in body["matches"]:
        assert normalise(match["object"]).startswith(start) or start in normalise(match["object"])


def name_table(folder, rows) -> NameTable:
    """A NameTable of an index database holding ``rows`` (mission, obsid, camera, object, ra,
    dec) in the index's layout."""
    db = sqlite3.connect(folder / "index.db")
    db.execute(
        "CREATE TABLE exposures (id INTEGER PRIMARY KEY, mission TEXT, obsid TEXT, camera TEXT, "
        "object TEXT, ra_pnt REAL, dec_pnt REAL)"
    )
    db.executemany(
        "INSERT INTO exposures (mission, obsid, camera, object, ra_pnt, dec_pnt) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    db.close()
    (folder / "manifest.json").write_text('{"database": "index.db"}')
    return NameTable.load(folder)


def test_names_matching_rules(tmp_path):
    rows = [
        ("XMM", "1", "EPN", "RXCJ0958.3-1103", 149.6, -11.06),
        ("XMM", "2", "EPN", "RXCJ 0958.3-1103", 149.7, -11.07),
        ("XMM", "3", "EPN", "PKS J0000+0213", 359.998, 2.22),
        ("CHANDRA", "4", "ACIS-S", "PKS J0000+0213", 0.005, 2.22),
        ("XMM", "5", "EPN", "Abell 2029", 227.73, 5.74),
        ("XMM", "6", "EPN", "NGC 1275 offset", 49.95, 41.5),
        ("XMM", "7", "EPN", "NGC 1275", 49.95, 41.51),
        ("XMM", "8", "EPN", "", 10.0, 10.0),
        ("XMM", "9", "EPN", "no position", None, None),
    ]
    table = name_table(tmp_path, rows)
    found = table.find("rxcj0958")
    assert [n.object for n in found] == ["RXCJ0958.3-1103"]  # two spellings, one name
    assert len(found[0].exposures) == 2
    pks = table.find("pks j0000+0213")[0]
    assert abs(pks.dec - 2.22) < 1e-6 and (pks.ra > 359.9 or pks.ra < 0.1)  # across RA 0
    assert [n.object for n in table.find("ngc1275")] == ["NGC 1275", "NGC 1275 offset"]
    assert [n.object for n in table.find("2029")] == ["Abell 2029"]  # inside a name
    assert table.find("20") == []  # too short to be looked for inside names
    assert table.find("no position") == [] and table.find("   ") == []
    # a new build (the manifest changes) is read again
    db = sqlite3.connect(tmp_path / "index.db")
    db.execute("UPDATE exposures SET object = 'Abell 2142' WHERE obsid = '5'")
    db.commit()
    db.close()
    assert NameTable.load(tmp_path) is table
    (tmp_path / "manifest.json").write_text('{"database": "index.db", "generation": 2}')
    assert [n.object for n in NameTable.load(tmp_path).find("abell")] == ["Abell 2142"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "give an object name"),
        ("   ", "give an object name"),
        ("x" * 101, "too long: 101 characters (max 100)"),
        ("M31\x00", "control character U+0000"),
        ("M31\nfoo", "control character U+000A"),
    ],
)
def test_bad_names_are_refused(client, name, message):
    response = client.get("/api/resolve", query_string={"name": name})
    assert response.status_code == 400
    assert message in response.get_json()["message"]
    assert client.get("/api/resolve").status_code == 400  # no name at all


def test_an_unknown_name_is_404_and_sesame_is_off_by_default(client, sesame):
    response = client.get("/api/resolve", query_string={"name": "M31"})
    assert response.status_code == 404
    assert "no archived observation" in response.get_json()["message"]
    assert sesame.asked == []  # REGIO_SESAME_URL is empty: nobody is asked


def test_sesame_answers_when_the_archive_does_not(
    tmp_path, sample_index, redis_url, sesame, archived
):
    settings = app_settings(tmp_path, sample_index, redis_url, SCRIPTS) | {"SESAME_URL": sesame.url}
    client = create_app(settings).test_client()
    body = client.get("/api/resolve", query_string={"name": "M31"}).get_json()
    assert body["source"] == "sesame" and body["name"] == "M 31"
    assert body["ra"] == pytest.approx(10.684708333) and body["dec"] == pytest.approx(41.26875)
    assert sesame.asked == ["M31"]
    # an archived name never goes to Sesame
    name = next(iter(archived))
    assert client.get("/api/resolve", query_string={"name": name}).get_json()["source"] == "archive"
    assert sesame.asked == ["M31"]
    # Sesame knows nothing
    response = client.get("/api/resolve", query_string={"name": "Nowhere 12"})
    assert (
        response.status_code == 404
        and "neither the archive nor Sesame" in response.get_json()["message"]
    )


def test_a_slow_sesame_is_given_up(tmp_path, sample_index, redis_url, sesame, monkeypatch):
    monkeypatch.setattr(app_names, "SESAME_TIMEOUT", 0.3)
    sesame.delay = 2.0
    settings = app_settings(tmp_path, sample_index, redis_url, SCRIPTS) | {"SESAME_URL": sesame.url}
    client = create_app(settings).test_client()
    response = client.get("/api/resolve", query_string={"name": "M31"})
    assert response.status_code == 404
    assert "did not answer" in response.get_json()["message"]


def test_an_unreachable_sesame_is_a_404_with_the_reason(tmp_path, sample_index, redis_url):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cgi-bin/nph-sesame/-oxp/SNV"
    settings = app_settings(tmp_path, sample_index, redis_url, SCRIPTS) | {"SESAME_URL": url}
    client = create_app(settings).test_client()
    response = client.get("/api/resolve", query_string={"name": "M31"})
    assert response.status_code == 404 and "did not answer" in response.get_json()["message"]


def test_a_sesame_url_must_be_http():
    from app import settings

    with pytest.raises(settings.SettingError, match="REGIO_SESAME_URL must start with http"):
        settings.load({"SESAME_URL": "file:///etc/passwd"}, environ={})
