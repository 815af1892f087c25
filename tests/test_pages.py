"""The home page and the JSON API list the archive's observations from the real index."""

import json

import pytest

from app import create_app


@pytest.fixture
def client(sample_index, redis_url, tmp_path):
    app = create_app(
        {"INDEX": sample_index, "REDIS_URL": redis_url, "INSTANCE": tmp_path / "instance"}
    )
    return app.test_client()


def test_home_page_lists_every_observation_and_camera(client, sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    response = client.get("/archive")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    chandra = truth["chandra"]["observations"]
    for obs in truth["observations"] + chandra:
        assert obs["obsid"] in page
        assert obs["object"] in page
    assert page.count('data-testid="archive-row"') == 3 * len(truth["observations"]) + len(chandra)
    for obs in chandra:
        assert f'data-exposure-id="CHANDRA:{obs["obsid"]}:{obs["camera"]}"' in page


def test_api_observations_match_the_archive(client, sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    response = client.get("/api/observations")
    assert response.status_code == 200
    rows = response.get_json()
    assert {(r["obsid"], r["camera"]) for r in rows if r["mission"] == "XMM"} == {
        (o["obsid"], cam) for o in truth["observations"] for cam in ("EMOS1", "EMOS2", "EPN")
    }
    assert response.headers["X-Regio-Version"]


def test_health_reports_redis_and_index(client):
    body = client.get("/api/health").get_json()
    assert body["redis"] is True
    assert body["index"]["observations"] > 0
    assert body["workers"] == []  # no worker runs in this test
    assert body["ok"] is True


def test_missing_index_is_explained(redis_url, tmp_path):
    app = create_app(
        {"INDEX": tmp_path / "no-index", "REDIS_URL": redis_url, "INSTANCE": tmp_path / "i"}
    )
    client = app.test_client()
    response = client.get("/archive")
    assert response.status_code == 503
    assert "python -m indexer build" in response.get_data(as_text=True)
    api = client.get("/api/observations")
    assert api.status_code == 503
    assert "no index in" in api.get_json()["message"]


def test_unknown_api_path_is_a_json_404(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["status"] == 404


def test_create_app_without_redis_url_says_what_to_do(tmp_path):
    from app.settings import SettingError

    with pytest.raises(SettingError, match="REGIO_REDIS_URL is not set"):
        create_app({"INSTANCE": tmp_path, "REDIS_URL": ""})
