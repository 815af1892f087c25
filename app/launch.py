"""Launching a run: from a request (script name, parameters) on a session to a queued job.

The steps, each owned by its module: the script and its parameters (``app.catalog``), the data it
accepts against the session's selection (``Script.mismatch``), the script's input
(``app.inputs``), the run record and folder (``app.runs``) and the queue (``app.jobs``). Any
refusal is a :class:`LaunchError` whose message is for the user (the API answers 400), raised
before anything is stored.

A launch reads no data file: the exposure rows come from the session (the index's rows), and the
pixel WCS that puts the regions in each file's pixels from the index (``app.inputs``).

Idempotent launch (:func:`launch_once`): a client key names at most one run per session. The
same key with the same request (script, parameters) gives the run it made, whatever happened
since; with another request it is refused (:class:`ClientKeyReused`). The run database's unique
index on (session, key) decides between concurrent launches with one key, across processes and
hosts: the loser keeps nothing and answers with the winner's run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app import catalog, inputs, jobs, runs
from app.sessions import SessionStore

#: Longest client key accepted (printable ASCII).
MAX_CLIENT_KEY = 200


class LaunchError(ValueError):
    """The run cannot be launched as asked; ``str(exc)`` says why, for the user."""


class ClientKeyReused(ValueError):
    """The client key already launched a different request in this session (the API: 422)."""


def check_client_key(key: Any) -> str:
    """A client key as given, or :class:`LaunchError`: 1 to ``MAX_CLIENT_KEY`` printable ASCII
    characters (a UUID is the usual choice)."""
    if (
        not isinstance(key, str)
        or not 1 <= len(key) <= MAX_CLIENT_KEY
        or not all(" " <= c <= "~" for c in key)
    ):
        raise LaunchError(
            f"'client_key' must be 1 to {MAX_CLIENT_KEY} printable ASCII characters "
            "(a UUID, for example)"
        )
    return key


def request_digest(name: Any, params: Any) -> str:
    """sha256 of what a launch asks (script name and parameters as sent), key order ignored."""
    text = json.dumps(
        {"script": name, "params": params or {}}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def fitting_scripts(
    scripts: Mapping[str, catalog.Script], rows: list[Mapping[str, Any]]
) -> list[catalog.Script]:
    """The scripts that accept every one of the exposure rows, by name."""
    return [scripts[n] for n in sorted(scripts) if scripts[n].mismatch(rows) is None]


def launch(
    store: SessionStore,
    db_path: Path | str,
    redis_conn: Any,
    scripts: Mapping[str, catalog.Script],
    session_id: str,
    name: Any,
    params: Any,
    owner: str = "",
    *,
    trigger: str = "manual",
    trigger_detail: Mapping[str, Any] | None = None,
    exposures: list[str] | None = None,
    index: inputs.PixelWcsSource | None = None,
    client_key: str | None = None,
) -> runs.Run:
    """Check and queue a run of script ``name`` with ``params`` on the session's selection.

    Parameters not given take the saved defaults of the session's owner (``owner``), then the
    site's (``app.automation.saved_defaults``), then the manifest's. ``exposures`` (ids of
    exposures covering the session) replaces the selection: a standing request runs on the new
    data only. ``trigger`` and ``trigger_detail`` go to the run record (``runs.create``).
    ``index`` (``indexer.index.Index``) gives the files' pixel WCS; without it the files are read.
    ``client_key`` is recorded with the request's digest (``runs.ClientKeyTaken`` when another
    run of the session holds it; :func:`launch_once` deals with that).

    Raises :class:`LaunchError` (unknown script, bad parameters, data the script does not
    accept, nothing to process) before anything is written.
    """
    from app import automation  # automation launches runs: imported here, not at the top

    if not isinstance(name, str) or name not in scripts:
        raise LaunchError(f"unknown script {name!r:.60}; see GET /api/scripts")
    script = scripts[name]
    if params is not None and not isinstance(params, Mapping):
        raise LaunchError("'params' must be an object of parameter values")
    saved = automation.saved_defaults(automation.db_path(Path(db_path).parent), owner, script)
    try:
        checked = catalog.validate_params(script, {**saved, **(params or {})})
    except catalog.ParamError as exc:
        raise LaunchError(str(exc)) from None
    if exposures is None:
        rows = store.selected_rows(session_id)
    else:
        covering = {r["exposure_id"]: r for r in store.get(session_id)["coverage"]}
        missing = [e for e in exposures if e not in covering]
        if missing:
            raise LaunchError(
                f"exposure {missing[0]!s:.60} does not cover the session's source region"
            )
        rows = [covering[e] for e in exposures]
    problem = script.mismatch(rows)
    if problem:
        raise LaunchError(problem + "; change the selection or choose another script")
    try:
        regions, observations = inputs.for_session(store, session_id, rows=rows, index=index)
    except inputs.InputError as exc:
        raise LaunchError(str(exc)) from None
    run_id = runs.new_run_id()
    run = runs.create(
        db_path,
        store.run_dir(session_id, run_id),
        session_id=session_id,
        script=script,
        params=checked,
        owner=owner,
        regions=regions,
        observations=observations,
        run_id=run_id,
        trigger=trigger,
        trigger_detail=trigger_detail,
        client_key=client_key,
        request_digest=request_digest(name, params) if client_key is not None else None,
    )
    jobs.enqueue(run, script, redis_conn, db_path)
    return run


def _same_request(run: runs.Run, name: Any, params: Any) -> runs.Run:
    if run.request_digest != request_digest(name, params):
        raise ClientKeyReused(
            f"this client_key already launched run {run.id} with another request "
            "(script or parameters): use a new key for a new run"
        )
    return run


def launch_once(
    store: SessionStore,
    db_path: Path | str,
    redis_conn: Any,
    scripts: Mapping[str, catalog.Script],
    session_id: str,
    name: Any,
    params: Any,
    owner: str = "",
    *,
    client_key: str,
    index: inputs.PixelWcsSource | None = None,
) -> tuple[runs.Run, bool]:
    """:func:`launch` at most once per ``client_key`` in the session: ``(run, created)``.

    A key seen before with the same script and parameters gives its run (``created`` False),
    even when another launch with that key is still being made in another process: the run
    database's unique index lets one of them record its run, the other removes what it made
    and answers with that run. A key seen with another request raises
    :class:`ClientKeyReused`; refusals of :func:`launch` (:class:`LaunchError`) record nothing.
    """
    client_key = check_client_key(client_key)
    earlier = runs.find_by_client_key(db_path, session_id, client_key)
    if earlier is not None:
        return _same_request(earlier, name, params), False
    try:
        run = launch(
            store, db_path, redis_conn, scripts, session_id, name, params, owner,
            index=index, client_key=client_key,
        )  # fmt: skip
    except runs.ClientKeyTaken as taken:
        return _same_request(runs.get(db_path, taken.run_id), name, params), False
    return run, True
