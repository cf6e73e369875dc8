//! The OpenAPI 3.1 document of HTTP API v1, served at `GET /v1/openapi.json`.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// A 503 of a job publish: `Retry-After` says when trying again may work.
fn unavailable_response(description: &str) -> Value {
    let mut response = error_response(description);
    response["headers"] = json!({
        "Retry-After": {
            "description": "Seconds to wait before trying again (no quorum, or a full queue).",
            "schema": { "type": "integer" }
        }
    });
    response
}

fn name_param() -> Value {
    json!({
        "name": "name", "in": "path", "required": true,
        "description": "Function name: 1 to 64 ASCII letters, digits, '-' or '_'.",
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" }
    })
}

fn time_param(name: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "query", "description": description,
        "schema": { "type": "string" }
    })
}

fn id_param() -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": "Invocation id (UUIDv7).",
        "schema": { "type": "string", "format": "uuid" }
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut doc = base_document();
    for more in [
        query_paths(),
        event_paths(),
        security_paths(),
        batch_paths(),
    ] {
        if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), more) {
            paths.extend(more);
        }
    }
    if let (Some(schemas), Value::Object(more)) = (
        doc["components"]["schemas"].as_object_mut(),
        event_schemas(),
    ) {
        schemas.extend(more);
    }
    // Every route needs a key when keys are configured, but for the probes, metrics and this
    // document, which stay open.
    doc["components"]["securitySchemes"] = json!({
        "bearer": { "type": "http", "scheme": "bearer", "description": "An API key: SQUALL_ADMIN_KEY or one made by POST /v1/keys. Required only when the dispatcher has an admin key." }
    });
    doc["security"] = json!([{ "bearer": [] }]);
    const OPEN: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"];
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if method == "parameters" {
                    continue;
                }
                if let Some(responses) = operation["responses"].as_object_mut() {
                    // Every operation can meet the header limits.
                    responses.insert(
                        "431".into(),
                        error_response("Too many or too large request headers."),
                    );
                    if !OPEN.contains(&path.as_str()) {
                        responses.insert(
                            "401".into(),
                            error_response("No valid API key (only when the dispatcher has keys)."),
                        );
                        responses.insert(
                            "403".into(),
                            error_response("The key lacks the scope this route needs."),
                        );
                    }
                }
                if OPEN.contains(&path.as_str()) {
                    operation["security"] = json!([]);
                }
            }
        }
    }
    doc
}

fn json_body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn json_ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn named_param(what: &str) -> Value {
    json!({
        "name": "name", "in": "path", "required": true,
        "description": format!("{what} name: 1 to 64 ASCII letters, digits, '-' or '_'."),
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" }
    })
}

/// Schedules, triggers and the fleet.
fn event_paths() -> Value {
    let schedule = json!({ "$ref": "#/components/schemas/Schedule" });
    let trigger = json!({ "$ref": "#/components/schemas/Trigger" });
    json!({
        "/v1/schedules": { "get": {
            "summary": "List schedules",
            "responses": { "200": json_ok("All schedules, by name.", json!({
                "type": "object", "required": ["schedules"],
                "properties": { "schedules": { "type": "array", "items": schedule } }
            })) }
        }},
        "/v1/schedules/{name}": {
            "parameters": [named_param("Schedule")],
            "put": {
                "summary": "Create or replace a schedule; the broker fires its ticks on cron.<name>, each one invocation of the function",
                "requestBody": json_body("ScheduleRequest"),
                "responses": {
                    "200": json_ok("The schedule with its next five fire times.", schedule.clone()),
                    "400": error_response("Invalid name, body, cron expression or time zone."),
                    "404": error_response("Unknown function.")
                }
            },
            "get": {
                "summary": "Show a schedule and its next five fire times",
                "responses": {
                    "200": json_ok("The schedule.", schedule),
                    "400": error_response("Invalid name."),
                    "404": error_response("Unknown schedule.")
                }
            },
            "delete": {
                "summary": "Delete a schedule: its ticks stop",
                "responses": {
                    "204": { "description": "Deleted." },
                    "400": error_response("Invalid name."),
                    "404": error_response("Unknown schedule.")
                }
            }
        },
        "/v1/triggers": { "get": {
            "summary": "List triggers",
            "responses": { "200": json_ok("All triggers, by name.", json!({
                "type": "object", "required": ["triggers"],
                "properties": { "triggers": { "type": "array", "items": trigger } }
            })) }
        }},
        "/v1/triggers/{name}": {
            "parameters": [named_param("Trigger")],
            "put": {
                "summary": "Bind a NATS subject pattern, or a key-value bucket's keys, to a function: every message or change becomes an invocation",
                "requestBody": json_body("TriggerRequest"),
                "responses": {
                    "200": json_ok("The trigger.", trigger.clone()),
                    "400": error_response("Invalid name, body, subject or key pattern."),
                    "404": error_response("Unknown function or bucket."),
                    "409": error_response("The pattern overlaps another trigger's, or another stream's subjects.")
                }
            },
            "get": {
                "summary": "Show a trigger",
                "responses": {
                    "200": json_ok("The trigger.", trigger),
                    "400": error_response("Invalid name."),
                    "404": error_response("Unknown trigger.")
                }
            },
            "delete": {
                "summary": "Delete a trigger",
                "responses": {
                    "204": { "description": "Deleted." },
                    "400": error_response("Invalid name."),
                    "404": error_response("Unknown trigger.")
                }
            }
        },
        "/v1/fleet": { "get": {
            "summary": "Fleet supervisors and their workers, live worker processes, and per-function backlog and in-flight jobs",
            "responses": { "200": json_ok("The fleet.", json!({ "$ref": "#/components/schemas/Fleet" })) }
        }}
    })
}

/// API keys and function secrets.
fn security_paths() -> Value {
    let key = json!({
        "type": "object", "required": ["name", "scopes", "created_at"],
        "properties": {
            "name": { "type": "string" },
            "scopes": { "type": "array", "items": { "type": "string", "enum": ["admin", "invoke", "read"] } },
            "created_at": { "type": "string", "format": "date-time" }
        }
    });
    let secrets = json!({
        "type": "object", "required": ["function", "secrets"],
        "properties": {
            "function": { "type": "string" },
            "secrets": { "type": "object", "description": "Names; every value reads [redacted].",
                "additionalProperties": { "type": "string", "const": "[redacted]" } }
        }
    });
    json!({
        "/v1/keys": {
            "post": {
                "summary": "Create an API key with scopes (admin, invoke, read); the key is answered once, only its hash is kept",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["name", "scopes"], "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" },
                        "scopes": { "type": "array", "minItems": 1, "items": { "type": "string", "enum": ["admin", "invoke", "read"] } }
                    }
                }}}},
                "responses": {
                    "201": json_ok("The key, shown this once.", json!({
                        "type": "object", "required": ["name", "scopes", "key", "created_at"],
                        "properties": {
                            "name": { "type": "string" }, "key": { "type": "string" },
                            "scopes": { "type": "array", "items": { "type": "string" } },
                            "created_at": { "type": "string", "format": "date-time" }
                        }
                    })),
                    "400": error_response("Invalid name, body or scope."),
                    "409": error_response("A key with this name exists.")
                }
            },
            "get": {
                "summary": "List keys: names and scopes, never the keys",
                "responses": { "200": json_ok("The keys.", json!({
                    "type": "object", "required": ["keys"],
                    "properties": { "keys": { "type": "array", "items": key } }
                })) }
            }
        },
        "/v1/keys/{name}": {
            "parameters": [named_param("Key")],
            "delete": {
                "summary": "Revoke a key, on every dispatcher",
                "responses": {
                    "204": { "description": "Revoked." },
                    "400": error_response("Invalid name."),
                    "404": error_response("Unknown key.")
                }
            }
        },
        "/v1/functions/{name}/secrets": {
            "parameters": [name_param()],
            "put": {
                "summary": "Replace a function's secrets; the function reads them in ctx.config.secrets",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "maxProperties": 64,
                    "additionalProperties": { "type": "string", "maxLength": 16384 }
                }}}},
                "responses": {
                    "200": json_ok("The secrets' names.", secrets.clone()),
                    "400": error_response("Invalid name or secrets."),
                    "404": error_response("Unknown function.")
                }
            },
            "get": {
                "summary": "A function's secret names (values are never shown)",
                "responses": {
                    "200": json_ok("The secrets' names.", secrets),
                    "400": error_response("Invalid name."),
                    "404": error_response("Unknown function.")
                }
            },
            "delete": {
                "summary": "Remove all of a function's secrets",
                "responses": {
                    "204": { "description": "Removed." },
                    "400": error_response("Invalid name."),
                    "404": error_response("Unknown function.")
                }
            }
        }
    })
}

fn event_schemas() -> Value {
    json!({
        "ScheduleRequest": {
            "type": "object", "required": ["function", "cron"], "additionalProperties": false,
            "properties": {
                "function": { "type": "string" },
                "cron": { "type": "string", "description": "5 fields, or 6 with seconds first; or @hourly, @daily, @weekly, @monthly, @yearly." },
                "timezone": { "type": ["string", "null"], "description": "IANA name; UTC by default." },
                "payload": { "description": "Input of each invocation, sent as JSON; none when absent." }
            }
        },
        "Schedule": {
            "type": "object", "required": ["name", "function", "cron", "timezone", "subject", "next"],
            "properties": {
                "name": { "type": "string" },
                "function": { "type": "string" },
                "cron": { "type": "string", "description": "The 6-field expression the broker fires." },
                "timezone": { "type": "string" },
                "payload": {},
                "subject": { "type": "string", "description": "Where ticks are stored: cron.<name>." },
                "next": { "type": "array", "items": { "type": "string", "format": "date-time" } }
            }
        },
        "TriggerRequest": {
            "type": "object", "required": ["function"], "additionalProperties": false,
            "description": "Either subject, or bucket with an optional key pattern (default '>').",
            "properties": {
                "function": { "type": "string" },
                "subject": { "type": "string" },
                "bucket": { "type": "string" },
                "key": { "type": "string" }
            }
        },
        "Trigger": {
            "type": "object", "required": ["name", "function", "kind", "created_at"],
            "properties": {
                "name": { "type": "string" },
                "function": { "type": "string" },
                "kind": { "type": "string", "enum": ["subject", "kv"] },
                "subject": { "type": "string" },
                "bucket": { "type": "string" },
                "key": { "type": "string" },
                "created_at": { "type": "string", "format": "date-time" }
            }
        },
        "Fleet": {
            "type": "object", "required": ["supervisors", "workers", "functions", "allocation"],
            "properties": {
                "supervisors": { "type": "array", "items": { "type": "object", "properties": {
                    "id": { "type": "string" }, "host": { "type": "string" }, "pid": { "type": "integer" },
                    "functions": { "type": "array", "items": { "type": "string" } },
                    "min": { "type": "integer" }, "max": { "type": "integer" },
                    "desired": { "type": "integer" },
                    "workers": { "type": "array", "items": { "type": "integer" } },
                    "updated_at": { "type": "string", "format": "date-time" }
                }}},
                "workers": { "type": "array", "items": { "type": "object", "properties": {
                    "id": { "type": "string" }, "host": { "type": "string" }, "pid": { "type": "integer" },
                    "in_flight": { "type": "integer" },
                    "updated_at": { "type": "string", "format": "date-time" }
                }}},
                "functions": { "type": "array", "items": { "type": "object", "properties": {
                    "name": { "type": "string" }, "backlog": { "type": "integer" }, "in_flight": { "type": "integer" }
                }}},
                "allocation": { "type": "object", "additionalProperties": { "type": "integer" } }
            }
        }
    })
}

/// Batch submission.
fn batch_paths() -> Value {
    // The body is NDJSON; any content type is read the same way, and fuzzers that cannot write
    // NDJSON may send it as octet-stream.
    let lines = json!({ "type": "string", "description": "One JSON value per line; lines end in \\n or \\r\\n." });
    json!({
        "/v1/functions/{name}/batch": {
            "parameters": [name_param()],
            "post": {
                "summary": "Submit many asynchronous invocations at once: one JSON input per line",
                "description": "The body is NDJSON: each line is one invocation's input, passed to the function exactly as written (without its line ending); a final line ending is optional. The whole body is checked before anything is published: a blank line, a line that is not JSON or a line over the payload limit refuses the batch, naming the line, and no invocation is created. Jobs are published with pipelined acknowledgements. Ids come back in line order. With an Idempotency-Key the batch maps to the same ids for the idempotency window: a repeat publishes the same jobs again and JetStream drops the duplicates, so after a 503 (the broker failed part-way) the client retries with the same key safely.",
                "parameters": [
                    { "name": "traceparent", "in": "header", "schema": { "type": "string" }, "description": "W3C trace context to continue." },
                    { "name": "Idempotency-Key", "in": "header", "schema": { "type": "string", "minLength": 1, "maxLength": 256 }, "description": "The same key, function and body within the idempotency window answer the same ids, and each line runs once." }
                ],
                "requestBody": { "required": true, "content": {
                    "application/x-ndjson": { "schema": lines },
                    "application/octet-stream": { "schema": { "type": "string", "format": "binary" } }
                }},
                "responses": {
                    "202": json_ok("Accepted: every line is one queued invocation.", json!({
                        "type": "object", "required": ["invocation_ids", "count"],
                        "properties": {
                            "invocation_ids": { "type": "array", "items": { "type": "string", "format": "uuid" }, "description": "One id per line, in line order." },
                            "count": { "type": "integer" }
                        }
                    })),
                    "400": error_response("Invalid name or Idempotency-Key; an empty batch (empty_batch); a blank line or a line that is not JSON (invalid_line, with its 1-based `line`)."),
                    "404": error_response("Unknown function."),
                    "413": error_response("The body is larger than the batch limit (default 16 MiB); more lines than the line limit (too_many_lines, default 10000); or a line larger than the payload limit (line_too_large, with its `line`)."),
                    "422": error_response("The Idempotency-Key was used for a different batch of this function."),
                    "503": unavailable_response("The broker did not accept every job; retry with the same Idempotency-Key.")
                }
            }
        }
    })
}

/// The routes over the query index: listing, stats and usage.
fn query_paths() -> Value {
    json!({
            "/v1/invocations": { "get": {
                "summary": "Invocations that have a result (retrying or terminal), newest first by creation time, from this dispatcher's query index",
                "parameters": [
                    { "name": "function", "in": "query", "schema": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" } },
                    { "name": "status", "in": "query", "schema": { "type": "string", "enum": ["retrying", "succeeded", "failed", "timed_out", "dead_lettered"] } },
                    time_param("since", "Created at or after: RFC 3339 or Unix milliseconds."),
                    time_param("until", "Created before: RFC 3339 or Unix milliseconds."),
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } },
                    { "name": "cursor", "in": "query", "description": "next_cursor of the previous page.", "schema": { "type": "string", "pattern": "^([0-9a-f]{2}){9,}$" } }
                ],
                "responses": {
                    "200": { "description": "One page.", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["items", "next_cursor"],
                        "properties": {
                            "items": { "type": "array", "items": { "$ref": "#/components/schemas/InvocationSummary" } },
                            "next_cursor": { "type": ["string", "null"], "description": "Pass as cursor for the next page; null on the last page." }
                        }
                    }}}},
                    "400": error_response("An invalid parameter.")
                }
            }},
            "/v1/functions/{name}/stats": {
                "parameters": [name_param()],
                "get": {
                    "summary": "Count, error rate and latest-attempt duration percentiles of a function's invocations created in a window",
                    "parameters": [
                        { "name": "window", "in": "query", "description": "Seconds back from now (default 3600); not with since.", "schema": { "type": "integer", "minimum": 1, "maximum": 31622400 } },
                        time_param("since", "Window start: RFC 3339 or Unix milliseconds."),
                        time_param("until", "Window end: RFC 3339 or Unix milliseconds.")
                    ],
                    "responses": {
                        "200": { "description": "The stats.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["function", "since", "until", "count", "succeeded", "errors", "error_rate", "in_progress", "p50_ms", "p95_ms", "p99_ms"],
                            "properties": {
                                "function": { "type": "string" },
                                "since": { "type": "string", "format": "date-time" },
                                "until": { "type": "string", "format": "date-time" },
                                "count": { "type": "integer", "description": "Terminal invocations." },
                                "succeeded": { "type": "integer" },
                                "errors": { "type": "integer", "description": "Failed, timed out or dead-lettered." },
                                "error_rate": { "type": "number" },
                                "in_progress": { "type": "integer", "description": "Still retrying." },
                                "p50_ms": { "type": ["number", "null"] },
                                "p95_ms": { "type": ["number", "null"] },
                                "p99_ms": { "type": ["number", "null"] }
                            }
                        }}}},
                        "400": error_response("An invalid parameter."),
                        "404": error_response("Unknown function.")
                    }
                }
            },
            "/v1/usage": { "get": {
                "summary": "Metered usage of invocations created in a window: invocations, attempts, CPU-ms and wall-ms summed over every executed attempt",
                "parameters": [
                    time_param("since", "Created at or after: RFC 3339 or Unix milliseconds."),
                    time_param("until", "Created before: RFC 3339 or Unix milliseconds."),
                    { "name": "group_by", "in": "query", "schema": { "type": "string", "enum": ["function", "hour"], "default": "function" } }
                ],
                "responses": {
                    "200": { "description": "Usage per group and in total.", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["group_by", "since", "until", "groups", "total"],
                        "properties": {
                            "group_by": { "type": "string", "enum": ["function", "hour"] },
                            "since": { "type": "string", "format": "date-time" },
                            "until": { "type": "string", "format": "date-time" },
                            "groups": { "type": "array", "items": { "allOf": [{ "$ref": "#/components/schemas/Usage" }], "properties": {
                                "function": { "type": "string" },
                                "hour": { "type": "string", "format": "date-time" }
                            }}},
                            "total": { "$ref": "#/components/schemas/Usage" }
                        }
                    }}}},
                    "400": error_response("An invalid parameter.")
                }
            }}
    })
}

fn base_document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Squall HTTP API",
            "version": "1",
            "description": "Deploy native function libraries and invoke them through NATS JetStream."
        },
        "paths": {
            "/healthz": { "get": {
                "summary": "Liveness",
                "responses": { "200": { "description": "The process is up." } }
            }},
            "/readyz": { "get": {
                "summary": "Readiness: connected to NATS with the topology ensured",
                "responses": { "200": { "description": "Ready." }, "503": error_response("Not connected to NATS.") }
            }},
            "/metrics": { "get": {
                "summary": "Prometheus metrics of this dispatcher, and per-function backlog and in-flight jobs (open, like the probes)",
                "responses": { "200": { "description": "Prometheus text format.", "content": { "text/plain": { "schema": { "type": "string" } } } } }
            }},
            "/v1/openapi.json": { "get": {
                "summary": "This document",
                "responses": { "200": { "description": "The OpenAPI document." } }
            }},
            "/v1/functions": { "get": {
                "summary": "List deployed functions",
                "responses": {
                    "200": { "description": "All functions, by name.", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["functions"],
                        "properties": { "functions": { "type": "array", "items": { "$ref": "#/components/schemas/Function" } } }
                    }}}},
                    "503": error_response("The broker is unavailable.")
                }
            }},
            "/v1/functions/{name}": {
                "parameters": [name_param()],
                "put": {
                    "summary": "Deploy (create or update) a function",
                    "description": "Either multipart/form-data with part `artifact` (the ELF shared library) and optional part `config` (a JSON FunctionSpec), or the raw library as application/octet-stream with the default spec. The artifact is validated without being loaded: an ELF shared object for this platform exporting squall_abi_version (= 1), squall_invoke and squall_free.",
                    "requestBody": { "required": true, "content": {
                        "multipart/form-data": { "schema": { "type": "object", "required": ["artifact"], "properties": {
                            "artifact": { "type": "string", "format": "binary" },
                            "config": { "$ref": "#/components/schemas/FunctionSpec" }
                        }}},
                        "application/octet-stream": { "schema": { "type": "string", "format": "binary" } }
                    }},
                    "responses": {
                        "201": { "description": "Deployed.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Function" } } } },
                        "400": error_response("Invalid name, or not a loadable artifact (not ELF, truncated, wrong architecture, missing symbols, wrong ABI version)."),
                        "413": error_response("The artifact is larger than the limit."),
                        "422": error_response("Invalid spec (unknown field, value out of range)."),
                        "503": error_response("The broker is unavailable.")
                    }
                },
                "get": {
                    "summary": "Show a function",
                    "responses": {
                        "200": { "description": "The function.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Function" } } } },
                        "400": error_response("Invalid name."),
                        "404": error_response("Not deployed.")
                    }
                },
                "delete": {
                    "summary": "Remove a function",
                    "responses": {
                        "204": { "description": "Removed." },
                        "400": error_response("Invalid name."),
                        "404": error_response("Not deployed.")
                    }
                }
            },
            "/v1/functions/{name}/invocations": {
                "parameters": [name_param()],
                "post": {
                    "summary": "Invoke a function",
                    "description": "The body is the input bytes. Waits for the terminal outcome up to `wait` seconds (default: the function's timeout times its attempts plus backoff, capped by the dispatcher), unless `Prefer: respond-async` or `async=true` asks for an immediate 202.",
                    "parameters": [
                        { "name": "wait", "in": "query", "schema": { "type": "number", "minimum": 0 }, "description": "Seconds to wait for the outcome." },
                        { "name": "async", "in": "query", "schema": { "type": "boolean" }, "description": "Return 202 at once." },
                        { "name": "Prefer", "in": "header", "schema": { "type": "string" }, "description": "`respond-async` returns 202 at once." },
                        { "name": "traceparent", "in": "header", "schema": { "type": "string" }, "description": "W3C trace context to continue." },
                        { "name": "Idempotency-Key", "in": "header", "schema": { "type": "string", "minLength": 1, "maxLength": 256 }, "description": "Requests with the same key for the same function within the idempotency window map to one invocation: the same id and the same result, and the function runs once." }
                    ],
                    "requestBody": { "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                    "responses": {
                        "200": {
                            "description": "Succeeded; the body is the function's output.",
                            "headers": { "Squall-Invocation-Id": { "schema": { "type": "string" } } },
                            "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }
                        },
                        "202": {
                            "description": "Accepted and not finished yet (async, or the wait ran out).",
                            "headers": { "Location": { "schema": { "type": "string" } } },
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Accepted" } } }
                        },
                        "400": error_response("Invalid name, query or Idempotency-Key."),
                        "404": error_response("Unknown function."),
                        "413": error_response("The payload is larger than the limit (default 1 MiB)."),
                        "500": error_response("The function failed terminally; `kind` says how."),
                        "503": unavailable_response("The broker did not acknowledge the job within the publish budget (code `broker_unavailable`: no quorum), or the queue is full (`queue_full`). The invocation was not accepted."),
                        "504": error_response("The function timed out terminally.")
                    }
                }
            },
            "/v1/invocations/{id}": {
                "parameters": [id_param()],
                "get": {
                    "summary": "Invocation status",
                    "responses": {
                        "200": { "description": "The invocation.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Invocation" } } } },
                        "400": error_response("Not a UUID."),
                        "404": error_response("Unknown invocation.")
                    }
                }
            },
            "/v1/invocations/{id}/output": {
                "parameters": [id_param()],
                "get": {
                    "summary": "Raw output bytes of a succeeded invocation",
                    "responses": {
                        "200": { "description": "The output.", "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                        "400": error_response("Not a UUID."),
                        "404": error_response("Unknown invocation."),
                        "409": error_response("Not finished, or ended without output.")
                    }
                }
            },
            "/v1/invocations/{id}/logs": {
                "parameters": [id_param()],
                "get": {
                    "summary": "The log lines the function wrote through the host during its latest attempt (at most 16 KiB per attempt)",
                    "responses": {
                        "200": { "description": "The lines, oldest first.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["invocation_id", "status", "logs"],
                            "properties": {
                                "invocation_id": { "type": "string" },
                                "status": { "type": "string" },
                                "logs": { "type": "array", "items": { "type": "object", "properties": {
                                    "level": { "type": "string" }, "message": { "type": "string" }
                                }}}
                            }
                        }}}},
                        "400": error_response("Not a UUID."),
                        "404": error_response("Unknown invocation.")
                    }
                }
            },
            "/v1/dlq": { "get": {
                "summary": "List dead letters (at most 1000, oldest first)",
                "parameters": [{ "name": "function", "in": "query", "schema": { "type": "string" } }],
                "responses": {
                    "200": { "description": "Dead letters.", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["dead_letters"],
                        "properties": { "dead_letters": { "type": "array", "items": { "$ref": "#/components/schemas/DeadLetterSummary" } } }
                    }}}},
                    "400": error_response("Invalid function name.")
                }
            }},
            "/v1/dlq/replay": { "post": {
                "summary": "Replay every dead letter of a function as new invocations",
                "parameters": [{ "name": "function", "in": "query", "required": true, "schema": { "type": "string" } }],
                "responses": {
                    "202": { "description": "Replayed.", "content": { "application/json": { "schema": {
                        "type": "object", "required": ["replayed"],
                        "properties": { "replayed": { "type": "array", "items": { "type": "object", "properties": {
                            "replay_of": { "type": "string" }, "invocation_id": { "type": "string" }
                        }}}}
                    }}}},
                    "400": error_response("Missing or invalid function."),
                    "404": error_response("Unknown function.")
                }
            }},
            "/v1/dlq/{id}": {
                "parameters": [id_param()],
                "get": {
                    "summary": "Show a dead letter: payload, headers and every attempt's error and timing",
                    "responses": {
                        "200": { "description": "The dead letter.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/DeadLetter" } } } },
                        "400": error_response("Not a UUID."),
                        "404": error_response("No dead letter for this invocation.")
                    }
                },
                "delete": {
                    "summary": "Remove a dead letter",
                    "responses": {
                        "204": { "description": "Removed." },
                        "400": error_response("Not a UUID."),
                        "404": error_response("No dead letter for this invocation.")
                    }
                }
            },
            "/v1/dlq/{id}/replay": {
                "parameters": [id_param()],
                "post": {
                    "summary": "Replay a dead letter as a new invocation linked to the original (header Squall-Replay-Of); the dead letter leaves the queue",
                    "responses": {
                        "202": { "description": "The new invocation.", "content": { "application/json": { "schema": {
                            "type": "object", "required": ["invocation_id", "replay_of"],
                            "properties": { "invocation_id": { "type": "string" }, "replay_of": { "type": "string" }, "status": { "type": "string" }, "location": { "type": "string" } }
                        }}}},
                        "400": error_response("Not a UUID."),
                        "404": error_response("No dead letter, or its function is no longer deployed.")
                    }
                }
            }
        },
        "components": { "schemas": {
            "InvocationSummary": {
                "type": "object",
                "required": ["invocation_id", "function", "version", "status", "attempts", "created_at", "duration_ms", "cpu_ms", "wall_ms"],
                "properties": {
                    "invocation_id": { "type": "string" },
                    "function": { "type": "string" },
                    "version": { "type": "string" },
                    "status": { "type": "string" },
                    "attempts": { "type": "integer" },
                    "error_kind": { "type": ["string", "null"] },
                    "created_at": { "type": "string", "format": "date-time" },
                    "finished_at": { "type": ["string", "null"], "format": "date-time" },
                    "duration_ms": { "type": "number", "description": "Wall time of the latest attempt." },
                    "cpu_ms": { "type": "number", "description": "CPU time summed over every executed attempt." },
                    "wall_ms": { "type": "number", "description": "Wall time summed over every executed attempt." }
                }
            },
            "Usage": {
                "type": "object", "required": ["invocations", "attempts", "cpu_ms", "wall_ms"],
                "properties": {
                    "invocations": { "type": "integer" },
                    "attempts": { "type": "integer" },
                    "cpu_ms": { "type": "number" },
                    "wall_ms": { "type": "number" }
                }
            },
            "DeadLetterSummary": {
                "type": "object", "required": ["id", "function", "status", "attempts"],
                "properties": {
                    "id": { "type": "string" },
                    "invocation_id": { "type": "string" },
                    "function": { "type": "string" },
                    "version": { "type": "string" },
                    "status": { "type": "string", "enum": ["dead_lettered", "timed_out"] },
                    "kind": { "type": ["string", "null"] },
                    "attempts": { "type": "integer" },
                    "created_at": { "type": "string", "format": "date-time" },
                    "dead_lettered_at": { "type": "string", "format": "date-time" }
                }
            },
            "DeadLetter": {
                "allOf": [{ "$ref": "#/components/schemas/DeadLetterSummary" }, { "type": "object", "properties": {
                    "payload": { "type": ["string", "null"] },
                    "payload_base64": { "type": ["string", "null"] },
                    "headers": { "type": "object", "additionalProperties": { "type": "string" } },
                    "attempt_history": { "type": "array", "items": { "type": "object", "properties": {
                        "attempt": { "type": "integer" },
                        "kind": { "type": ["string", "null"] },
                        "message": { "type": "string" },
                        "started_at": { "type": ["string", "null"] },
                        "finished_at": { "type": ["string", "null"] },
                        "duration_ms": { "type": "number" },
                        "worker": { "type": "string" }
                    }}}
                }}]
            },
            "Error": {
                "type": "object", "required": ["error"],
                "properties": { "error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string" },
                        "message": { "type": "string" },
                        "kind": { "type": "string", "enum": ["error", "retry", "panic", "timeout", "crash", "load"] },
                        "status": { "type": "string" },
                        "invocation_id": { "type": "string" },
                        "attempts": { "type": "integer" },
                        "line": { "type": "integer", "description": "The 1-based line of a batch the error is about." },
                        "limit": { "type": "integer", "description": "The limit that was exceeded." }
                    }
                }}
            },
            "Backoff": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "initial_ms": { "type": "integer", "minimum": 0, "default": 1000 },
                    "multiplier": { "type": "number", "minimum": 1, "default": 2.0 },
                    "max_ms": { "type": "integer", "minimum": 0, "default": 60000 },
                    "jitter": { "type": "boolean", "default": true }
                }
            },
            "FunctionSpec": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "timeout_ms": { "type": "integer", "minimum": 1, "maximum": 3600000, "default": 30000 },
                    "max_attempts": { "type": "integer", "minimum": 1, "maximum": 100, "default": 3 },
                    "backoff": { "$ref": "#/components/schemas/Backoff" },
                    "concurrency": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 64, "description": "Attempts one worker runs at once." },
                    "max_concurrency": { "type": ["integer", "null"], "minimum": 1, "maximum": 10000, "description": "Attempts running at once across the fleet; unlimited when absent." },
                    "config": { "type": "object", "description": "Values passed to the function as ctx.config." }
                }
            },
            "Function": {
                "type": "object", "required": ["name", "version", "sha256", "artifact_size", "deployed_at", "config"],
                "properties": {
                    "name": { "type": "string" },
                    "version": { "type": "string", "description": "sha256:<hex> of the artifact" },
                    "sha256": { "type": "string" },
                    "artifact_size": { "type": "integer" },
                    "deployed_at": { "type": "string", "format": "date-time" },
                    "config": { "$ref": "#/components/schemas/FunctionSpec" },
                    "secrets": { "type": "array", "items": { "type": "string" }, "description": "Names of its secrets; values are never shown." }
                }
            },
            "Accepted": {
                "type": "object", "required": ["invocation_id", "status", "location"],
                "properties": {
                    "invocation_id": { "type": "string" },
                    "status": { "type": "string" },
                    "location": { "type": "string" }
                }
            },
            "Invocation": {
                "type": "object", "required": ["invocation_id", "function", "status", "attempts", "created_at"],
                "properties": {
                    "invocation_id": { "type": "string" },
                    "function": { "type": "string" },
                    "version": { "type": ["string", "null"] },
                    "status": { "type": "string", "enum": ["queued", "running", "retrying", "succeeded", "failed", "timed_out", "dead_lettered"] },
                    "attempts": { "type": "integer" },
                    "output": { "type": ["string", "null"], "description": "The output when it is UTF-8." },
                    "output_base64": { "type": ["string", "null"], "description": "The output when it is not UTF-8." },
                    "error": { "type": ["object", "null"], "properties": {
                        "kind": { "type": "string" }, "message": { "type": "string" }
                    }},
                    "created_at": { "type": "string", "format": "date-time" },
                    "finished_at": { "type": ["string", "null"], "format": "date-time" },
                    "duration_ms": { "type": ["number", "null"] },
                    "cpu_ms": { "type": ["number", "null"], "description": "CPU time of the call on its thread." },
                    "logs": { "type": "array", "items": { "type": "object", "properties": {
                        "level": { "type": "string" }, "message": { "type": "string" }
                    }}},
                    "worker": { "type": "string", "description": "The worker process that produced the result." }
                }
            }
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths `lib.rs` gives to `.route(…)`: the router as written.
    fn router_paths() -> Vec<String> {
        let source = include_str!("lib.rs");
        source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn secured_operations_document_401_and_403_and_open_ones_need_no_key() {
        let doc = document();
        let fleet = &doc["paths"]["/v1/fleet"]["get"];
        assert!(fleet["responses"]["401"].is_object() && fleet["responses"]["403"].is_object());
        let health = &doc["paths"]["/healthz"]["get"];
        assert_eq!(health["security"], json!([]));
        assert!(health["responses"]["401"].is_null());
    }

    #[test]
    fn document_names_every_route_of_the_router() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let routes = router_paths();
        assert!(routes.len() > 10, "cannot read the routes: {routes:?}");
        for route in &routes {
            assert!(
                paths.contains_key(route),
                "{route} missing from the OpenAPI document"
            );
        }
        for path in paths.keys() {
            assert!(
                routes.contains(path),
                "the document lists {path}, which the router does not serve"
            );
        }
    }
}
