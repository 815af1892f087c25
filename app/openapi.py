"""The OpenAPI 3.1 document of the JSON API, served at ``/api/openapi.json``.

Operations are declared here as data next to the schemas they use; a test checks that every
``/api`` route of the app is documented and that nothing documented is missing from the app.
"""

from __future__ import annotations

import re
from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message", "status"],
        "properties": {
            "error": {"type": "string", "description": "HTTP reason, e.g. 'Bad Request'"},
            "message": {"type": "string", "description": "what is wrong, in words"},
            "status": {"type": "integer"},
        },
    },
    "Region": {
        "description": 'A DS9 region string in sky coordinates (e.g. `icrs;circle(149.59,-11.06,60")`) '
        "or a list of viewer shapes in ICRS degrees.",
        "oneOf": [
            {"type": "string", "maxLength": 100000},
            {"type": "array", "maxItems": 100, "items": {"$ref": "#/components/schemas/Shape"}},
        ],
    },
    "Shape": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"enum": ["circle", "annulus", "ellipse", "box", "polygon"]},
            "ra": {"type": "number", "description": "centre RA [deg]"},
            "dec": {"type": "number", "description": "centre Dec [deg]"},
            "radius": {"type": "number", "description": "circle radius [deg]"},
            "inner": {"type": "number", "description": "annulus inner radius [deg]"},
            "outer": {"type": "number", "description": "annulus outer radius [deg]"},
            "width": {"type": "number", "description": "ellipse/box full width [deg]"},
            "height": {"type": "number", "description": "ellipse/box full height [deg]"},
            "angle": {"type": "number", "description": "DS9 angle [deg]"},
            "vertices": {
                "type": "array",
                "minItems": 3,
                "items": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 2,
                    "maxItems": 2,
                },
                "description": "polygon vertices [[ra, dec], ...] [deg]",
            },
            "exclude": {"type": "boolean", "description": "a DS9 exclusion (-shape)"},
        },
    },
    "Observation": {
        "type": "object",
        "description": "One exposure (an observation's camera) of the index, with its metadata.",
        "properties": {
            "exposure_id": {
                "type": "string",
                "description": "stable name of the exposure: MISSION:OBSID:CAMERA",
            },
            "mission": {
                "type": "string",
                "description": "e.g. XMM, CHANDRA (see /api/instruments)",
            },
            "instrument": {"type": "string", "description": "e.g. EPIC, ACIS"},
            "camera": {
                "type": "string",
                "description": "camera or detector (see /api/instruments)",
            },
            "kind": {"type": "string", "description": "data kind: events, exposure-map, ..."},
            "obsid": {"type": "string"},
            "object": {"type": "string"},
            "observer": {"type": "string"},
            "date_obs": {"type": "string"},
            "date_end": {"type": "string"},
            "exposure": {"type": "number", "description": "live time [s]"},
            "ra_pnt": {"type": "number", "description": "[deg]"},
            "dec_pnt": {"type": "number", "description": "[deg]"},
            "pa_pnt": {"type": "number", "description": "[deg]"},
            "filter": {"type": "string"},
            "submode": {"type": "string"},
            "n_events": {"type": ["integer", "null"]},
            "coverage": {
                "type": "number",
                "description": "fraction of the region covered (queries)",
            },
            "offaxis_arcmin": {
                "type": "number",
                "description": "region centre to pointing [arcmin]",
            },
        },
    },
    "SessionIn": {
        "type": "object",
        "required": ["source"],
        "properties": {
            "source": {"$ref": "#/components/schemas/Region"},
            "background": {"$ref": "#/components/schemas/Region"},
            "title": {"type": "string", "maxLength": 200},
            "frame": {
                "enum": ["icrs", "fk5", "fk4", "galactic", "ecliptic"],
                "description": "the DS9 frame the user works in (the page shows and exports the "
                "regions in it); default: the DS9 text's frame, else the session's, else icrs",
            },
        },
    },
    "Session": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "owner": {"type": ["string", "null"]},
            "title": {"type": "string"},
            "created": {"type": "string"},
            "updated": {"type": "string"},
            "regions": {"type": "object"},
            "coverage": {"type": "array", "items": {"$ref": "#/components/schemas/Observation"}},
            "selection": {"$ref": "#/components/schemas/Selection"},
        },
    },
    "SessionPatch": {
        "type": "object",
        "required": ["title"],
        "additionalProperties": False,
        "properties": {
            "title": {
                "type": "string",
                "maxLength": 200,
                "description": "one line of text, no control characters",
            },
        },
    },
    "Selection": {
        "type": "object",
        "description": "The selected exposures by exposure_id. PUT also takes the older form "
        '{"observations": [{"obsid", "camera"}]} when each pair is unambiguous.',
        "required": ["exposures"],
        "properties": {
            "exposures": {"type": "array", "items": {"type": "string"}, "maxItems": 10000},
        },
    },
    "Instrument": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "mission": {"type": "string"},
            "instrument": {"type": "string"},
            "title": {"type": "string"},
            "kinds": {"type": "array", "items": {"type": "string"}},
            "cameras": {
                "type": "array",
                "description": "in display order",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "label": {"type": "string"},
                        "colour": {"type": "string", "description": "CSS colour"},
                    },
                },
            },
        },
    },
    "View": {
        "type": "object",
        "required": ["ra", "dec", "fov"],
        "properties": {
            "ra": {"type": "number", "description": "[deg]"},
            "dec": {"type": "number", "description": "[deg]"},
            "fov": {"type": "number", "description": "field of view [deg]"},
        },
    },
    "MOC": {
        "type": "object",
        "description": "MOC JSON: HEALPix order -> NESTED cell numbers (Aladin Lite A.MOCFromJSON)",
        "additionalProperties": {"type": "array", "items": {"type": "integer"}},
    },
}


def _op(summary: str, ok: str | None = "200", schema: Any = None, body: str | None = None,
        errors: tuple[int, ...] = ()) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"summary": summary, "responses": {}}
    if ok:
        content = {"application/json": {"schema": schema}} if schema else None
        op["responses"][ok] = {
            "description": "success",
            **({"content": content} if content else {}),
        }
    for code in errors:
        op["responses"][str(code)] = {
            "description": "error",
            "content": {"application/json": {"schema": ERROR}},
        }
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    return op


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


OBS_LIST = {"type": "array", "items": ref("Observation")}

_LAUNCH = _op("Queue a run of a script on the session's regions and selection (202). With a "
              "client_key, the same key and request answer the run they made (200) and make no "
              "second one; the key with another request is refused (422)", ok="202",
              schema=ref("Run"), body="RunIn", errors=(400, 404, 413, 415, 422))  # fmt: skip
_LAUNCH["responses"]["200"] = {
    "description": "the run this client_key made before: nothing new is queued",
    "content": {"application/json": {"schema": ref("Run")}},
}

_OBSERVATIONS = _op("Indexed exposures by (mission, obsid, camera), a page at a time: the "
                    "Link header's rel=\"next\" URL gives the next page",
                    schema=OBS_LIST, errors=(400, 503))  # fmt: skip
_OBSERVATIONS["parameters"] = [
    {"name": "limit", "in": "query", "description": "exposures per page",
     "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}},
    {"name": "after", "in": "query", "description": "the page starts after this exposure id "
     "(MISSION:OBSID:CAMERA; the next page's is in the Link header)", "schema": {"type": "string"}},
    {"name": "mission", "in": "query", "description": "only this mission's exposures",
     "schema": {"type": "string"}},
]  # fmt: skip
_OBSERVATIONS["responses"]["200"]["headers"] = {
    "Link": {"description": 'RFC 8288 <URL>; rel="next" when more exposures follow',
             "schema": {"type": "string"}},
    "X-Total-Count": {"description": "exposures matching (all pages)",
                      "schema": {"type": "integer"}},
}  # fmt: skip

PATHS: dict[str, dict[str, Any]] = {
    "/api/health": {"get": _op("Service status: Redis, workers, index", schema={"type": "object"})},
    "/api/openapi.json": {"get": _op("This document", schema={"type": "object"})},
    "/api/instruments": {"get": _op("Instruments: mission, data kinds, cameras (order, colours)",
                                     schema={"type": "array", "items": ref("Instrument")})},
    "/api/observations": {"get": _OBSERVATIONS},
    "/api/coverage": {"get": _op("Union of the archive coverage (MOC JSON, < 1.5 MB)", schema=ref("MOC"), errors=(503,))},
    "/api/exposures/{exposure_id}/moc": {
        "get": _op("One exposure's footprint (MOC JSON)", schema=ref("MOC"), errors=(404, 503))
    },
    "/api/sessions": {
        "get": _op("Sessions, newest first", schema={"type": "array", "items": ref("Session")}),
        "post": _op("Create a session from regions; finds the covering observations", ok="201",
                    schema=ref("Session"), body="SessionIn", errors=(400, 413, 415, 503)),
    },
    "/api/regions/convert": {
        "post": {
            **_op("Check a region (DS9 text in any sky frame, or viewer shapes) and write it in a "
                  "DS9 frame: ICRS shapes, DS9 text, centre, size across; nothing stored",
                  schema={"type": "object"}, errors=(400, 415)),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["region"],
                "properties": {"region": ref("Region"),
                               "frame": {"enum": ["icrs", "fk5", "fk4", "galactic", "ecliptic"]}},
            }}}},
        }
    },
    "/api/resolve": {
        "get": {
            **_op("Where an object name is: the archive's OBJECT names (case and spaces "
                  "ignored, whole, start, inside), then CDS Sesame if REGIO_SESAME_URL is set",
                  schema={"type": "object"}, errors=(400, 404, 503)),
            "parameters": [{"name": "name", "in": "query", "required": True,
                            "schema": {"type": "string", "maxLength": 100}}],
        }
    },
    "/api/sessions/{session_id}": {
        "get": _op("A session", schema=ref("Session"), errors=(404,)),
        "patch": _op("Change the session's title (write access)", schema=ref("Session"),
                     body="SessionPatch", errors=(400, 403, 404, 415)),
        "delete": _op("Delete the session, its run folders and run records (owner or staff); "
                      "409 while a run is queued or running or a standing request or schedule "
                      "uses it", ok="204", errors=(403, 404, 409)),
    },
    "/api/sessions/{session_id}/regions": {
        "put": _op("Replace the regions (coverage found again, selection pruned)", schema=ref("Session"),
                   body="SessionIn", errors=(400, 404, 413, 415, 503))
    },
    "/api/sessions/{session_id}/selection": {
        "put": _op("Replace the selected exposures", schema=ref("Session"),
                   body="Selection", errors=(400, 404, 415))
    },
    "/api/sessions/{session_id}/view": {
        "put": _op("Remember the viewer position", schema=ref("Session"), body="View",
                   errors=(400, 404, 415))
    },
    "/api/scripts": {
        "get": {
            **_op("Scripts: name, title, documentation, parameters, products, accepted data; with "
                  "?session=ID only those accepting every exposure the session selects",
                  schema={"type": "array", "items": ref("Script")}, errors=(404,)),
            "parameters": [{"name": "session", "in": "query", "schema": {"type": "string"}}],
        }
    },
    "/api/sessions/{session_id}/runs": {
        "get": _op("Runs of a session, newest first", schema={"type": "array", "items": ref("Run")},
                   errors=(404,)),
        "post": _LAUNCH,
    },
    "/api/runs/{run_id}": {"get": _op("A run", schema=ref("Run"), errors=(404,))},
    "/api/runs/{run_id}/cancel": {
        "post": _op("Cancel a queued or running run (200 when ended, 202 while stopping)",
                    schema=ref("Run"), errors=(404, 409))
    },
    "/api/runs/{run_id}/log": {
        "get": {
            **_op("The log as text from a byte offset; X-Next-Offset tells where to go on",
                  ok=None, errors=(400, 404)),
            "parameters": [{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": {"description": "log text", "content": {"text/plain": {}}},
                          "400": {"description": "bad offset"}, "404": {"description": "no such run"}},
        }
    },
    "/api/runs/{run_id}/events": {
        "get": {
            "summary": "Server-sent events: 'log' lines (id = byte offset), 'state' changes, 'end'. "
                       "Resumes after the Last-Event-ID header (or ?offset=).",
            "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {}}},
                          "400": {"description": "bad offset"}, "404": {"description": "no such run"}},
        }
    },
    "/api/runs/{run_id}/products": {
        "get": _op("The run's products manifest", schema={"type": "array", "items": ref("Product")},
                   errors=(404,))
    },
    "/api/runs/{run_id}/products/{name}": {
        "get": {"summary": "Download a product file (?inline=1 to show it in the browser)",
                "responses": {"200": {"description": "the file"}, "400": {"description": "bad name"},
                              "404": {"description": "no such run or product"}}}
    },
    "/api/runs/{run_id}/bundle.zip": {
        "get": {"summary": "Zip of products, log, input, provenance and the session's regions",
                "responses": {"200": {"description": "zip", "content": {"application/zip": {}}},
                              "404": {"description": "no such run"},
                              "409": {"description": "the run has not ended yet"}}}
    },
}  # fmt: skip

PATHS |= {
    "/api/sessions/{session_id}/collaborators": {
        "get": _op("Collaborators of a session (owner only; accounts mode)",
                   schema={"type": "array", "items": ref("Collaborator")}, errors=(401, 404)),
        "post": _op("Share with a user by e-mail, role read or write (owner only)", ok="201",
                    schema=ref("Collaborator"), body="CollaboratorIn", errors=(400, 401, 404)),
    },
    "/api/sessions/{session_id}/collaborators/{user_id}": {
        "delete": _op("Stop sharing with a user (owner only)", ok="204", errors=(401, 404))
    },
    "/api/sessions/{session_id}/share-links": {
        "get": _op("Read-only links of a session (owner only)", schema={"type": "array"},
                   errors=(401, 404)),
        "post": _op("Make a read-only link usable without an account (owner only)", ok="201",
                    schema={"type": "object", "properties": {"url": {"type": "string"},
                                                             "secret": {"type": "string"}}},
                    errors=(401, 404)),
    },
    "/api/sessions/{session_id}/share-links/{link_id}": {
        "delete": _op("Revoke a read-only link (owner only)", ok="204", errors=(401, 404))
    },
}  # fmt: skip

_RUN_FILTERS = [
    {"name": name, "in": "query", "schema": schema, "description": text}
    for name, schema, text in (
        ("session", {"type": "string"}, "runs of one session"),
        ("script", {"type": "string"}, "runs of one script"),
        ("phase", {"enum": ["QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED"]}, "phase"),
        (
            "trigger",
            {"type": "string"},
            "manual, standing, schedule, or one of them: standing:<id>, schedule:<id>",
        ),
        ("since", {"type": "string"}, "created on or after this date (YYYY-MM-DD) or time"),
        ("until", {"type": "string"}, "created on or before this date (YYYY-MM-DD) or time"),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size (50)"),
        ("offset", {"type": "integer", "minimum": 0}, "runs to skip"),
    )
]

PATHS |= {
    "/api/runs": {
        "get": {
            **_op("Runs across the sessions the user may see, newest first, with product counts "
                  "(and marks), duration and links; filtered", schema=ref("RunPage"),
                  errors=(400, 404)),
            "parameters": _RUN_FILTERS,
        }
    },
    "/api/runs/{run_id}/review": {
        "get": _op("The run's products with their marks (valid / rejected, who, when) and "
                   "comments; the run's own comments", schema=ref("Review"), errors=(404,))
    },
    "/api/runs/{run_id}/review/marks": {
        "put": _op("Mark a product of an ended run valid or rejected, or clear its mark (write "
                   "access; the bundle is made again with review.json)", schema={"type": "object"},
                   body="MarkIn", errors=(400, 403, 404, 409, 415))
    },
    "/api/runs/{run_id}/review/comments": {
        "post": _op("Comment on a product of an ended run, or on the run (product null; write "
                    "access)", ok="201", schema=ref("Comment"), body="CommentIn",
                    errors=(400, 403, 404, 409, 415))
    },
    "/api/runs/{run_id}/review/comments/{comment_id}": {
        "delete": _op("Remove a comment (its author, or the session's owner)", ok="204",
                      errors=(403, 404, 409))
    },
    "/api/standing-requests": {
        "get": _op("Standing requests of every session the user may see",
                   schema={"type": "array", "items": ref("StandingRequest")})
    },
    "/api/sessions/{session_id}/standing-requests": {
        "get": _op("Standing requests of a session",
                   schema={"type": "array", "items": ref("StandingRequest")}, errors=(404,)),
        "post": _op("Make the session a standing request: whenever new data of these instruments "
                    "cover its source region, run these scripts (owner or staff)", ok="201",
                    schema=ref("StandingRequest"), body="StandingRequestIn",
                    errors=(400, 403, 404, 415)),
    },
    "/api/standing-requests/{request_id}": {
        "get": _op("A standing request", schema=ref("StandingRequest"), errors=(404,)),
        "patch": _op("Change a standing request (enabled: false pauses it)",
                     schema=ref("StandingRequest"), body="StandingRequestIn",
                     errors=(400, 403, 404, 415)),
        "delete": _op("Delete a standing request", ok="204", errors=(403, 404)),
    },
    "/api/schedules": {
        "get": _op("Schedules of every session the user may see",
                   schema={"type": "array", "items": ref("Schedule")})
    },
    "/api/sessions/{session_id}/schedules": {
        "get": _op("Schedules of a session", schema={"type": "array", "items": ref("Schedule")},
                   errors=(404,)),
        "post": _op("Run a script periodically on the session's selection: a cron expression "
                    "or an interval (owner or staff)", ok="201", schema=ref("Schedule"),
                    body="ScheduleIn", errors=(400, 403, 404, 415)),
    },
    "/api/schedules/{schedule_id}": {
        "get": _op("A schedule, with its next firing", schema=ref("Schedule"), errors=(404,)),
        "patch": _op("Change a schedule (a new timing starts from now)", schema=ref("Schedule"),
                     body="ScheduleIn", errors=(400, 403, 404, 415)),
        "delete": _op("Delete a schedule", ok="204", errors=(403, 404)),
    },
    "/api/defaults": {
        "get": _op("Saved default parameters per script: the site's and the user's own",
                   schema=ref("Defaults"))
    },
    "/api/defaults/{script_name}": {
        "put": _op("Save default values for some parameters of a script (scope user, or site "
                   "for staff); the launch form, schedules and standing requests use them",
                   schema={"type": "object"}, body="DefaultsIn", errors=(400, 403, 404, 415)),
        "delete": {
            **_op("Forget the saved defaults of a script", ok="204", errors=(400, 403, 404)),
            "parameters": [{"name": "scope", "in": "query", "schema": {"enum": ["user", "site"]}}],
        },
    },
}  # fmt: skip

_REGION_FILES = {
    "schema": {
        "type": "object",
        "required": ["source"],
        "properties": {
            "source": {"type": "string", "format": "binary", "description": "DS9 region file"},
            "background": {"type": "string", "format": "binary", "description": "DS9 region file"},
            "title": {"type": "string"},
        },
    }
}
for _path, _method in (("/api/sessions", "post"), ("/api/sessions/{session_id}/regions", "put")):
    PATHS[_path][_method]["requestBody"]["content"]["multipart/form-data"] = _REGION_FILES

SCHEMAS |= {
    "Collaborator": {
        "type": "object",
        "properties": {
            "user_id": {"type": "string"},
            "email": {"type": "string"},
            "name": {"type": "string"},
            "role": {"enum": ["read", "write"]},
        },
    },
    "CollaboratorIn": {
        "type": "object",
        "required": ["email", "role"],
        "properties": {"email": {"type": "string"}, "role": {"enum": ["read", "write"]}},
    },
    "Script": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "title": {"type": "string"},
            "version": {"type": "string"},
            "documentation": {"type": "string"},
            "time_limit": {"type": "integer", "description": "[s]"},
            "parameters": {"type": "array", "items": {"type": "object"}},
            "products": {"type": "array", "items": {"type": "object"}},
            "accepts": {
                "type": "object",
                "description": "data the script processes: kinds and MISSION/INSTRUMENT names "
                "(an empty list means any)",
                "properties": {
                    "kinds": {"type": "array", "items": {"type": "string"}},
                    "instruments": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    "RunIn": {
        "type": "object",
        "required": ["script"],
        "properties": {
            "script": {"type": "string", "description": "a name from GET /api/scripts"},
            "params": {"type": "object", "description": "checked against the script's parameters"},
            "client_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "idempotent launch: a fresh random string (a UUID) per intended "
                "run. It names one run of the session: sent again with the same script and "
                "params (a retry, a double click) it answers that run with 200 and queues "
                "nothing, also when the requests arrive at once; with another script or params "
                "it is refused with 422. Printable ASCII.",
            },
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "session_id": {"type": "string"},
            "script": {"type": "string"},
            "phase": {"enum": ["QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED"]},
            "stage": {"type": ["string", "null"]},
            "progress_done": {"type": ["integer", "null"]},
            "progress_total": {"type": ["integer", "null"]},
            "stage_count": {
                "type": ["integer", "null"],
                "description": "stages announced up front (manifest or [STAGES] n): stage k of n",
            },
            "queue_position": {"type": ["integer", "null"]},
            "created": {"type": "string"},
            "started": {"type": ["string", "null"]},
            "ended": {"type": ["string", "null"]},
            "exit_code": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]},
            "failing_stage": {"type": ["string", "null"]},
            "log_tail": {"type": ["string", "null"]},
            "log_dropped": {
                "type": ["integer", "null"],
                "description": "bytes of the script's output beyond REGIO_LOG_MAX_BYTES, "
                "not kept in the log (null: the script never started)",
            },
            "exposures": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "in GET /api/sessions/{session_id}/runs only: the exposure ids the "
                "run was given (null when its input file cannot be read)",
            },
            "client_key": {
                "type": ["string", "null"],
                "description": "the client_key of the launch that made it (null: none)",
            },
            "links": {"type": "object"},
        },
    },
    "Product": {
        "type": "object",
        "properties": {
            "file": {"type": "string"},
            "kind": {"enum": ["spectrum", "lightcurve", "image", "table", "plot", "other"]},
            "description": {"type": "string"},
            "obsid": {"type": ["string", "null"]},
            "camera": {"type": ["string", "null"]},
            "size": {"type": "integer", "description": "[bytes]"},
            "url": {"type": "string"},
        },
    },
}


_TRIGGER = {
    "type": "string",
    "description": "what started the run: manual, standing:<request id> or schedule:<id>",
}
SCHEMAS["Run"]["properties"] |= {
    "trigger": _TRIGGER,
    "trigger_detail": {
        "type": ["object", "null"],
        "description": "what the trigger saw: a standing request's new exposures and when they "
        "were seen, a schedule's tick",
    },
}
_MARK = {
    "type": ["object", "null"],
    "properties": {
        "mark": {"enum": ["valid", "rejected"]},
        "by": {"type": "string", "description": "user id"},
        "by_name": {"type": "string"},
        "at": {"type": "string"},
    },
}
SCHEMAS |= {
    "RunPage": {
        "type": "object",
        "properties": {
            "runs": {
                "type": "array",
                "items": {
                    "allOf": [ref("Run")],
                    "properties": {
                        "session_title": {"type": "string"},
                        "duration": {"type": ["number", "null"], "description": "[s]"},
                        "products": {
                            "type": "object",
                            "properties": {
                                "count": {"type": "integer"},
                                "valid": {"type": "integer"},
                                "rejected": {"type": "integer"},
                                "comments": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "sessions": {"type": "array", "items": {"type": "object"}},
            "scripts": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Comment": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "product": {"type": ["string", "null"]},
            "author": {"type": "string", "description": "user id ('' without accounts)"},
            "author_name": {"type": "string"},
            "at": {"type": "string"},
            "text": {"type": "string"},
        },
    },
    "Review": {
        "type": "object",
        "properties": {
            "run_id": {"type": "string"},
            "products": {
                "type": "array",
                "items": {
                    "allOf": [ref("Product")],
                    "properties": {
                        "mark": _MARK,
                        "comments": {"type": "array", "items": ref("Comment")},
                    },
                },
            },
            "comments": {"type": "array", "items": ref("Comment")},
            "orphans": {"type": "array", "items": {"type": "object"}},
            "can_review": {"type": "boolean"},
        },
    },
    "MarkIn": {
        "type": "object",
        "required": ["product", "mark"],
        "properties": {
            "product": {"type": "string", "description": "a product's file"},
            "mark": {"enum": ["valid", "rejected", None]},
        },
    },
    "CommentIn": {
        "type": "object",
        "required": ["text"],
        "properties": {
            "product": {"type": ["string", "null"]},
            "text": {"type": "string", "maxLength": 4000},
        },
    },
    "ScriptRun": {
        "type": "object",
        "required": ["script"],
        "properties": {"script": {"type": "string"}, "params": {"type": "object"}},
    },
    "StandingRequestIn": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 200},
            "instruments": {
                "type": "array",
                "items": {"type": "string"},
                "description": "MISSION/INSTRUMENT names (GET /api/instruments); empty: any",
            },
            "scripts": {"type": "array", "items": ref("ScriptRun"), "minItems": 1},
            "scope": {"enum": ["new", "all"], "description": "run on the new data only, or all"},
            "min_coverage": {"type": "number", "minimum": 0, "maximum": 1},
            "enabled": {"type": "boolean"},
        },
    },
    "StandingRequest": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "session_id": {"type": "string"},
            "owner": {"type": "string"},
            "title": {"type": "string"},
            "instruments": {"type": "array", "items": {"type": "string"}},
            "scripts": {"type": "array", "items": ref("ScriptRun")},
            "scope": {"enum": ["new", "all"]},
            "min_coverage": {"type": "number"},
            "enabled": {"type": "boolean"},
            "created": {"type": "string"},
            "last_triggered": {"type": ["string", "null"]},
            "last_runs": {"type": "array", "items": {"type": "string"}},
            "last_error": {"type": ["string", "null"]},
        },
    },
    "ScheduleIn": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 200},
            "script": {"type": "string"},
            "params": {"type": "object"},
            "cron": {"type": "string", "description": "5 fields or @daily...; e.g. '0 2 * * *'"},
            "interval": {"type": "integer", "description": "[s], instead of cron"},
            "timezone": {"type": "string", "description": "IANA name of the cron's zone (UTC)"},
            "enabled": {"type": "boolean"},
        },
    },
    "Schedule": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "session_id": {"type": "string"},
            "script": {"type": "string"},
            "params": {"type": "object"},
            "cron": {"type": ["string", "null"]},
            "interval": {"type": ["integer", "null"]},
            "timezone": {"type": "string"},
            "enabled": {"type": "boolean"},
            "next_fire": {"type": ["string", "null"]},
            "last_fired": {"type": ["string", "null"]},
            "last_run_id": {"type": ["string", "null"]},
            "last_error": {"type": ["string", "null"]},
        },
    },
    "DefaultsIn": {
        "type": "object",
        "required": ["params"],
        "properties": {"params": {"type": "object"}, "scope": {"enum": ["user", "site"]}},
    },
    "Defaults": {
        "type": "object",
        "properties": {
            "site": {"type": "object", "description": "script -> {params, updated, updated_by}"},
            "user": {"type": ["object", "null"]},
            "can_edit_site": {"type": "boolean"},
        },
    },
}


def _with_path_parameters(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Declare every ``{name}`` of a path as a required string path parameter."""
    out = {}
    for path, item in paths.items():
        names = re.findall(r"{(\w+)}", path)
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
        out[path] = {"parameters": params, **item} if params else item
    return out


def document(version: str, extra_paths: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The OpenAPI document for this version of the service."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Regio API",
            "version": version,
            "description": "Region-based processing of X-ray observations: sessions, regions, "
            "covering observations, script runs, logs and products. Errors are JSON objects "
            "with a message; every response carries the X-Regio-Version header. With "
            "REGIO_AUTH=accounts every call needs a user: send an API token (made on the "
            "account page or with `python -m app create-token EMAIL`) as "
            "`Authorization: Token <token>` (or `Bearer <token>`); sessions of other users "
            "answer 404. In single-user mode (REGIO_AUTH=none) no token is needed.",
        },
        "security": [{"token": []}, {}],
        "paths": _with_path_parameters(PATHS | (extra_paths or {})),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "API token; `Authorization: Token <token>` works too",
                }
            },
        },
    }
