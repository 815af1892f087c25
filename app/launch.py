"""Launching a run: from a request (script name, parameters) on a session to a queued job.

The steps, each owned by its module: the script and its parameters (``app.catalog``), the data it
accepts against the session's selection (``Script.mismatch``), the script's input
(``app.inputs``), the run record and folder (``app.runs``) and the queue (``app.jobs``). Any
refusal is a :class:`LaunchError` whose message is for the user (the API answers 400), raised
before anything is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app import catalog, inputs, jobs, runs
from app.sessions import SessionStore


class LaunchError(ValueError):
    """The run cannot be launched as asked; ``str(exc)`` says why, for the user."""


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
) -> runs.Run:
    """Check and queue a run of script ``name`` with ``params`` on the session's selection.

    Parameters not given take the saved defaults of the session's owner (``owner``), then the
    site's (``app.automation.saved_defaults``), then the manifest's. ``exposures`` (ids of
    exposures covering the session) replaces the selection: a standing request runs on the new
    data only. ``trigger`` and ``trigger_detail`` go to the run record (``runs.create``).

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
        regions, observations = inputs.for_session(store, session_id, rows=rows)
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
    )
    jobs.enqueue(run, script, redis_conn, db_path)
    return run
