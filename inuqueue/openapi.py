"""The OpenAPI 3 document of inuqueue's own API, served at /inuqueue/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from inuqueue import __version__
from inuqueue.http import API_PREFIX, json_response

routes = web.RouteTableDef()

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_STATUS: Schema = {
    "type": "string",
    "enum": ["pending", "running", "done", "failed", "interrupted", "cancelled"],
}

_SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": _STR, "message": _STR},
    },
    "Image": {
        "type": "object",
        "required": ["digest", "url", "content_type", "bytes"],
        "properties": {
            "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "url": _STR,
            "content_type": _STR,
            "bytes": _INT,
            "infotext": _nullable(_STR),
            "seed": _nullable(_INT),
            "base64": _STR,
        },
    },
    "Progress": {
        "type": "object",
        "properties": {
            "fraction": {"type": "number"},
            "eta_s": {"type": "number"},
            "step": _nullable(_INT),
            "steps": _nullable(_INT),
            "job_no": _nullable(_INT),
            "job_count": _nullable(_INT),
            "preview_url": _STR,
        },
    },
    "Task": {
        "type": "object",
        "required": ["task_id", "type", "status", "priority", "attempts", "images"],
        "properties": {
            "task_id": _STR,
            "type": {"type": "string", "enum": ["txt2img", "img2img"]},
            "status": _STATUS,
            "name": _nullable(_STR),
            "priority": _INT,
            "position": _nullable(_INT),
            "attempts": _INT,
            "created_at": _STR,
            "started_at": _nullable(_STR),
            "finished_at": _nullable(_STR),
            "images": {"type": "array", "items": _ref("Image")},
            "info": {},
            "error": _nullable({"type": "object"}),
            "requeued_from": _nullable(_STR),
            "requeued_as": _nullable(_STR),
            "bookmarked": {"type": "boolean"},
            "updated_at": _nullable(_STR),
            "callback": _nullable(_ref("Callback")),
            "progress": _nullable(_ref("Progress")),
            "interrupt_requested": {"type": "boolean"},
            "request": {"type": "object"},
        },
    },
    "Callback": {
        "type": "object",
        "required": ["url", "format", "delivery", "tries", "attempts"],
        "properties": {
            "url": _STR,
            "format": {"type": "string", "enum": ["native", "agent-scheduler"]},
            "delivery": _nullable(
                {"enum": ["pending", "delivered", "rejected", "gave_up", "cancelled"]}
            ),
            "tries": _INT,
            "attempts": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Enqueued": {
        "type": "object",
        "required": ["task_id", "status", "position"],
        "properties": {
            "task_id": _STR,
            "status": _STATUS,
            "position": _nullable(_INT),
            "requeued_from": _STR,
        },
    },
    "GenerationRequest": {
        "type": "object",
        "description": "The webui's own /sdapi/v1 body, plus inuqueue's five fields.",
        "additionalProperties": True,
        "properties": {
            "name": _nullable(_STR),
            "priority": _nullable(_INT),
            "checkpoint": _nullable(_STR),
            "vae": _nullable(_STR),
            "callback_url": _nullable(_STR),
            "prompt": _STR,
            "steps": _INT,
            "init_images": {"type": "array", "items": _STR},
        },
    },
}


def _json(schema: Schema, description: str) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(code): _json(_ref("Error"), "an error") for code in statuses}


_WRITE_ERRORS = (401, 503, 507)
_TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": _STR}
_PAGE = [
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": 500},
    },
]
_TASK_ANSWER = {"200": _json(_ref("Task"), "the task"), **_errors(401, 404)}


def _enqueue(kind: str) -> Schema:
    return {
        "summary": f"Queue a {kind} request; answered once it is durable",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": _STR}],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("GenerationRequest")}},
        },
        "responses": {
            "202": _json(_ref("Enqueued"), "queued"),
            "200": _json(_ref("Enqueued"), "queued before, with this Idempotency-Key"),
            **_errors(400, 413, 422, *_WRITE_ERRORS),
        },
    }


def _action(summary: str, answer: Schema, *errors: int) -> Schema:
    return {
        "summary": summary,
        "responses": {"200": _json(answer, "done"), **_errors(*errors)},
    }


_LIST = {"type": "array", "items": _STR}
_PATHS: dict[str, Schema] = {
    "/queue/txt2img": {"post": _enqueue("txt2img")},
    "/queue/img2img": {"post": _enqueue("img2img")},
    "/queue": {
        "get": {
            "summary": "What runs now and what waits, in order",
            "parameters": _PAGE,
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["paused", "running", "pending", "total_pending"],
                        "properties": {
                            "paused": {"type": "boolean"},
                            "running": {"type": "array", "items": _ref("Task")},
                            "pending": {"type": "array", "items": _ref("Task")},
                            "total_pending": _INT,
                        },
                    },
                    "the queue",
                ),
                **_errors(400, 401),
            },
        }
    },
    "/queue/pause": {
        "post": _action("Start nothing new", {"type": "object"}, 401, 503, 507)
    },
    "/queue/resume": {
        "post": _action("Start tasks again", {"type": "object"}, 401, 503, 507)
    },
    "/queue/clear": {
        "post": _action("Cancel every pending task", {"type": "object"}, 401, 503, 507)
    },
    "/queue/requeue-failed": {
        "post": _action("Requeue the failed tasks", {"type": "object"}, 401, 503, 507)
    },
    "/task/{task_id}": {
        "parameters": [_TASK_ID],
        "get": {"summary": "One task", "responses": _TASK_ANSWER},
        "delete": {
            "summary": "Cancel a pending task, interrupt a running one",
            "responses": {
                **_TASK_ANSWER,
                "202": _json(_ref("Task"), "interrupt sent; not stopped yet"),
                **_errors(409, *_WRITE_ERRORS),
            },
        },
        "patch": {
            "summary": "Rename or bookmark a task, or change a pending one's priority",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "name": _nullable(_STR),
                                "priority": _INT,
                                "bookmarked": {"type": "boolean"},
                            },
                        }
                    }
                },
            },
            "responses": {**_TASK_ANSWER, **_errors(400, 409, 413, 422, 503, 507)},
        },
    },
    "/task/{task_id}/results": {
        "parameters": [_TASK_ID],
        "get": {
            "summary": "A task's images with infotexts and seeds",
            "parameters": [
                {"name": "inline", "in": "query", "schema": {"enum": ["base64"]}}
            ],
            "responses": {
                "200": _json({"type": "object"}, "the results"),
                **_errors(400, 401, 404, 500),
            },
        },
    },
    "/task/{task_id}/callback": {
        "parameters": [_TASK_ID],
        "delete": {
            "summary": "Stop trying to deliver a task's callback",
            "responses": {**_TASK_ANSWER, **_errors(409, *_WRITE_ERRORS)},
        },
    },
    "/task/{task_id}/preview": {
        "parameters": [_TASK_ID],
        "get": {
            "summary": "The live preview of a running task",
            "responses": {
                "200": {"description": "an image", "content": {"image/*": {}}},
                **_errors(401, 404),
            },
        },
    },
    "/task/{task_id}/move": {
        "parameters": [_TASK_ID],
        "post": {
            "summary": "Move a pending task",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {**_TASK_ANSWER, **_errors(400, 409, 413, 422, 503, 507)},
        },
    },
    "/task/{task_id}/requeue": {
        "parameters": [_TASK_ID],
        "post": {
            "summary": "Queue a finished task's request again",
            "responses": {
                "202": _json(_ref("Enqueued"), "queued"),
                **_errors(401, 404, 409, 503, 507),
            },
        },
    },
    "/history": {
        "get": {
            "summary": "Finished tasks, newest first",
            "parameters": [
                *_PAGE,
                {"name": "status", "in": "query", "schema": _STR},
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["tasks", "total"],
                        "properties": {
                            "tasks": {"type": "array", "items": _ref("Task")},
                            "total": _INT,
                        },
                    },
                    "a page of the history",
                ),
                **_errors(400, 401),
            },
        },
        "delete": {
            "summary": "Forget finished tasks",
            "parameters": [{"name": "status", "in": "query", "schema": _STR}],
            "responses": {
                "200": _json({"type": "object"}, "forgotten"),
                **_errors(400, 401, 503, 507),
            },
        },
    },
    "/images/{digest}": {
        "get": {
            "summary": "An image by its SHA-256",
            "parameters": [
                {"name": "digest", "in": "path", "required": True, "schema": _STR}
            ],
            "responses": {
                "200": {"description": "the image", "content": {"image/*": {}}},
                "304": {"description": "not modified"},
                **_errors(400, 401, 404, 500),
            },
        }
    },
    "/health": {
        "get": _action("Daemon, journal and webui health", {"type": "object"}, 401)
    },
    "/events": {
        "get": {
            "summary": "Task transitions as Server-Sent Events",
            "parameters": [
                {"name": "Last-Event-ID", "in": "header", "schema": _STR},
                {"name": "last_event_id", "in": "query", "schema": _STR},
                {"name": "task_id", "in": "query", "schema": _STR},
                {"name": "access_token", "in": "query", "schema": _STR},
            ],
            "responses": {
                "200": {
                    "description": "a stream",
                    "content": {"text/event-stream": {}},
                },
                **_errors(400, 401),
            },
        }
    },
    "/openapi.json": {
        "get": _action("This document", {"type": "object"}, 401),
    },
}


def document() -> Schema:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "inuqueue",
            "version": __version__,
            "description": "A durable queue in front of a Stable Diffusion webui.",
        },
        "servers": [{"url": API_PREFIX}],
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Only when the daemon runs with --token.",
                }
            },
        },
    }


@routes.get(API_PREFIX + "/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI document of these routes."""
    return json_response(document())
