"""Paged reads of the index: ``Index.exposures_page`` / ``observations_page`` (keyset on the
unique (mission, obsid, camera) index), ``GET /api/observations`` (``limit``, ``after``,
``mission``, ``Link`` and ``X-Total-Count`` headers) and the ``/archive`` page, on a synthetic
index of 1,100 exposures (330 XMM observations x 3 cameras and 110 Chandra ones)."""

from __future__ import annotations

import hashlib
import html
import json
import re
import sqlite3
from itertools import groupby

import pytest

from app.archive import public_rows
from demo import synth
from indexer import store
from indexer.index import Index
from tests.conftest import TEST_SCRIPTS, app_settings

OBSERVATIONS = 330  # x 3 EPIC cameras + 110 ACIS-I: more exposures than one default API page
SEED = 5


def key(row: dict) -> tuple[str, str, str]:
    return row["mission"], row["obsid"], row["camera"]


@pytest.fixture(scope="module")
def paged_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paging") / "index"
    synth.synth_catalog(folder, observations=OBSERVATIONS, seed=SEED)
    return folder


@pytest.fixture(scope="module")
def everything(paged_index) -> list[dict]:
    """Every exposure row as ``Index.observations()`` gives it, in (mission, obsid, camera)
    order: what the pages, put end to end, must equal."""
    rows = sorted(Index.load(paged_index).observations(), key=key)
    assert len(rows) == 3 * OBSERVATIONS + OBSERVATIONS // 3
    assert len({r["mission"] for r in rows}) == 2
    return rows


@pytest.fixture
def client(tmp_path, paged_index, redis_url):
    from app import create_app

    return create_app(app_settings(tmp_path, paged_index, redis_url, TEST_SCRIPTS)).test_client()


def rows_of(response) -> list[dict]:
    """A response's JSON rows (the test client's ``get_json`` goes through the app's input
    limits, which a page of thousands of rows exceeds)."""
    return json.loads(response.get_data())


def next_link(response) -> str | None:
    """The URL of the RFC 8288 ``rel="next"`` link of a response, if any."""
    header = response.headers.get("Link")
    if header is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', header)
    assert match, header
    return match.group(1)


def walk_api(client, url: str) -> tuple[list[list[dict]], list]:
    """Follow the next links from ``url``: the pages and the responses."""
    pages, responses = [], []
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        pages.append(rows_of(response))
        responses.append(response)
        url = next_link(response)
        assert len(pages) < 10_000
    return pages, responses


# ------------------------------------------------------------------------------- Index methods


@pytest.mark.parametrize("limit", [1, 7, 100, 1100, 5000])
def test_exposure_pages_hold_every_exposure_once_in_order(paged_index, everything, limit):
    index = Index.load(paged_index)
    seen, after = [], None
    while True:
        rows, following = index.exposures_page(after, limit)
        assert 0 < len(rows) <= limit
        seen.extend(rows)
        if following is None:
            break
        assert following == rows[-1]["exposure_id"]
        after = following
    assert seen == everything  # same rows, same fields, nothing twice, nothing left out


def test_a_cursor_need_not_name_an_indexed_exposure(paged_index, everything):
    index = Index.load(paged_index)
    first = everything[0]
    between = f"{first['mission']}:{first['obsid']}:{first['camera']}~"  # after it, before next
    rows, _ = index.exposures_page(between, 5)
    assert rows == everything[1:6]
    rows, following = index.exposures_page("ZZZ:9:9", 5)
    assert (rows, following) == ([], None)
    rows, _ = index.exposures_page("A:0:0", 3)
    assert rows == everything[:3]


def test_mission_pages_hold_that_mission_only(paged_index, everything):
    index = Index.load(paged_index)
    for mission in ("XMM", "CHANDRA"):
        wanted = [r for r in everything if r["mission"] == mission]
        seen, after = [], None
        while True:
            rows, after = index.exposures_page(after, 50, mission)
            seen.extend(rows)
            if after is None:
                break
        assert seen == wanted
        assert index.count_exposures(mission) == len(wanted)
        # a cursor in another mission: before it, the mission from its start; after it, nothing
        assert index.exposures_page("AAA:1:1", 4, mission)[0] == wanted[:4]
        assert index.exposures_page("ZZZ:1:1", 4, mission) == ([], None)
    assert index.exposures_page(None, 10, "NOSUCH") == ([], None)
    assert index.count_exposures() == len(everything)


def test_observation_pages_hold_every_observation_once_with_all_its_cameras(
    paged_index, everything
):
    index = Index.load(paged_index)
    observations = [k for k, _ in groupby(everything, key=lambda r: (r["mission"], r["obsid"]))]
    seen, pages, after = [], 0, None
    while True:
        rows, following = index.observations_page(after, 37)
        keys = [k for k, _ in groupby(rows, key=lambda r: (r["mission"], r["obsid"]))]
        assert 0 < len(keys) <= 37
        assert len(keys) == 37 or following is None
        seen.extend(rows)
        pages += 1
        if following is None:
            break
        assert following == f"{keys[-1][0]}:{keys[-1][1]}"
        after = following
    assert seen == everything  # every camera row of every observation, each once
    assert pages == -(-len(observations) // 37)


@pytest.mark.parametrize(
    "after", ["", "XMM", "XMM:", ":0001", "XMM:0001:", ":0001:EPN", "XMM::EPN", "XMM:1:EPN\n"]
)
def test_malformed_exposure_cursors_are_refused(paged_index, after):
    with pytest.raises(ValueError, match="not an exposure id"):
        Index.load(paged_index).exposures_page(after, 10)


@pytest.mark.parametrize("after", ["", "XMM", "XMM:", ":0001", "XMM:1\t"])
def test_malformed_observation_cursors_are_refused(paged_index, after):
    with pytest.raises(ValueError, match="not an observation"):
        Index.load(paged_index).observations_page(after, 10)


@pytest.mark.parametrize("limit", [0, -3])
def test_page_sizes_below_one_are_refused(paged_index, limit):
    index = Index.load(paged_index)
    with pytest.raises(ValueError, match="at least 1"):
        index.exposures_page(None, limit)
    with pytest.raises(ValueError, match="at least 1"):
        index.observations_page(None, limit)


@pytest.mark.parametrize(
    "query",
    [
        store.exposures_page_sql(None, 10),
        store.exposures_page_sql(("XMM", "0000000005", "EMOS1"), 10),
        store.exposures_page_sql(("XMM", "0000000005", "EMOS1"), 10, "XMM"),
        store.exposures_page_sql(("CHANDRA", "1", "ACIS-I"), 10, "XMM"),
        store.observation_keys_page_sql(None, 10),
        store.observation_keys_page_sql(("XMM", "0000000005"), 10),
    ],
)
def test_pages_are_read_through_the_unique_index_without_sorting(paged_index, query):
    conn = sqlite3.connect(paged_index / "index.db")
    try:
        plan = " | ".join(
            row[3] for row in conn.execute("explain query plan " + query[0], query[1])
        )
    finally:
        conn.close()
    assert "INDEX idx_exposures_mission_obsid_camera" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


# ------------------------------------------------------------------------- GET /api/observations


def test_the_default_page_is_one_of_several_with_a_working_next_link(client, everything):
    response = client.get("/api/observations")
    assert response.status_code == 200
    assert rows_of(response) == public_rows(everything[:1000])
    assert response.headers["X-Total-Count"] == str(len(everything))
    url = next_link(response)
    assert url is not None and url.startswith("/api/observations?")
    rest = client.get(url)
    assert rows_of(rest) == public_rows(everything[1000:])
    assert next_link(rest) is None


def test_walking_the_api_pages_gives_every_exposure_once_in_order(client, everything):
    pages, responses = walk_api(client, "/api/observations?limit=97")
    assert [len(p) for p in pages[:-1]] == [97] * (len(pages) - 1)
    assert [r for page in pages for r in page] == public_rows(everything)
    assert {r.headers["X-Total-Count"] for r in responses} == {str(len(everything))}
    assert all("path" not in r and "moc_file" not in r for r in pages[0])


@pytest.mark.parametrize("mission", ["XMM", "CHANDRA"])
def test_the_mission_filter_pages_through_that_mission(client, everything, mission):
    wanted = [r for r in everything if r["mission"] == mission]
    pages, responses = walk_api(client, f"/api/observations?limit=100&mission={mission}")
    assert [r for page in pages for r in page] == public_rows(wanted)
    assert {r.headers["X-Total-Count"] for r in responses} == {str(len(wanted))}
    assert all(f"mission={mission}" in r.headers["Link"] for r in responses[:-1])
    empty = client.get("/api/observations?mission=NOSUCH")
    assert rows_of(empty) == [] and empty.headers["X-Total-Count"] == "0"
    assert "Link" not in empty.headers


def test_the_largest_page_is_allowed(client, everything):
    response = client.get("/api/observations?limit=10000")
    assert rows_of(response) == public_rows(everything)
    assert "Link" not in response.headers


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("limit=0", "'limit' must be an integer from 1 to 10000"),
        ("limit=-1", "'limit' must be an integer from 1 to 10000"),
        ("limit=10001", "'limit' must be an integer from 1 to 10000"),
        ("limit=ten", "'limit' must be an integer"),
        ("limit=1.5", "'limit' must be an integer"),
        ("limit=", "'limit' must be an integer"),
        ("limit=%EF%BC%95", "'limit' must be an integer"),  # a full-width digit 5
        ("after=XMM", "not an exposure id"),
        ("after=XMM:0000000001", "not an exposure id"),
        ("after=", "not an exposure id"),
        ("after=XMM::EPN", "not an exposure id"),
        ("after=XMM:1:EPN%00", "not an exposure id"),
    ],
)
def test_bad_parameters_are_a_json_400_that_changes_nothing(client, paged_index, query, fragment):
    database = paged_index / "index.db"
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    response = client.get(f"/api/observations?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["status"] == 400 and body["error"]
    assert fragment in body["message"]
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before


# -------------------------------------------------------------------------------- /archive page

ROW = re.compile(r'data-testid="archive-row"[^>]*data-exposure-id="([^"]+)"')
NEXT = re.compile(r'<a href="([^"]+)" rel="next" data-testid="archive-next">Next page</a>')
FIRST = re.compile(r'<a href="([^"]+)" rel="first" data-testid="archive-first">First page</a>')


def archive_pages(client, url: str) -> list[str]:
    """Follow the archive's Next page links from ``url``: the pages' HTML."""
    pages = []
    while url is not None:
        response = client.get(url)
        assert response.status_code == 200
        page = response.get_data(as_text=True)
        pages.append(page)
        found = NEXT.search(page)
        url = html.unescape(found.group(1)) if found else None
        assert len(pages) < 1000
    return pages


def test_the_archive_page_pages_through_every_observation_once(client, everything):
    pages = archive_pages(client, "/archive?per_page=23")
    n_observations = len({(r["mission"], r["obsid"]) for r in everything})
    assert len(pages) == -(-n_observations // 23)
    shown = [ROW.findall(page) for page in pages]
    # every camera row once; observations in (mission, obsid) order across the pages
    flat = [exposure for page in shown for exposure in page]
    assert sorted(flat) == sorted(r["exposure_id"] for r in everything)
    assert len(flat) == len(set(flat))
    observations = [tuple(e.split(":")[:2]) for e in flat]
    assert [k for k, _ in groupby(observations)] == sorted(set(observations))
    for k, page in enumerate(pages):
        assert 'data-testid="archive-summary"' in page
        assert f"{n_observations} observations, {len(everything)} camera footprints" in page
        assert (FIRST.search(page) is not None) == (k > 0)
        assert "per_page=23" in (NEXT.search(page) or FIRST.search(page)).group(1)
    first = html.unescape(FIRST.search(pages[-1]).group(1))
    assert ROW.findall(client.get(first).get_data(as_text=True)) == shown[0]


def test_the_default_archive_page_shows_200_observations_and_a_next_link(client, everything):
    page = client.get("/archive").get_data(as_text=True)
    keys = [k for k, _ in groupby(everything, key=lambda r: (r["mission"], r["obsid"]))]
    shown = [tuple(e.split(":")[:2]) for e in ROW.findall(page)]
    assert [k for k, _ in groupby(shown)] == keys[:200]
    assert NEXT.search(page) and not FIRST.search(page)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("after=XMM", "is not an observation MISSION:OBSID"),
        ("after=", "is not an observation MISSION:OBSID"),
        ("per_page=0", "per_page must be an integer from 1 to 1000"),
        ("per_page=1001", "per_page must be an integer from 1 to 1000"),
        ("per_page=many", "per_page must be an integer from 1 to 1000"),
    ],
)
def test_bad_archive_parameters_are_a_readable_400(client, query, fragment):
    response = client.get(f"/archive?{query}")
    assert response.status_code == 400
    page = html.unescape(response.get_data(as_text=True))
    assert 'data-testid="index-problem"' in page
    assert fragment in page
    assert 'data-testid="archive-row"' not in page
