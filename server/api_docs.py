"""The API reference at /docs, rendered on the server from our own OpenAPI document.

FastAPI's default /docs page loads Swagger UI from a CDN, which shows a blank page offline; this
one is plain HTML with no script and no outside asset.
"""

from __future__ import annotations

import html
import json

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{margin-top:2.2rem;border-bottom:1px solid #ddd}code,pre{background:#f5f5f5;border-radius:4px;padding:0 .25rem}
pre{padding:.6rem;overflow-x:auto}.m{font-weight:700;display:inline-block;min-width:4.5rem}
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}
.req{color:#a00}
"""


def _resolve(schema: dict, document: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/components/schemas/"):
        return document["components"]["schemas"].get(ref.rsplit("/", 1)[1], {})
    return schema


def _type_of(schema: dict, document: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "anyOf" in schema:
        return " | ".join(_type_of(s, document) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_type_of(schema.get('items', {}), document)}"
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    return str(schema.get("type", "any"))


def _fields(schema: dict, document: dict) -> str:
    schema = _resolve(schema, document)
    props = schema.get("properties")
    if not props:
        return f"<p><code>{html.escape(_type_of(schema, document))}</code></p>"
    required = set(schema.get("required", []))
    rows = "".join(
        f"<tr><td><code>{html.escape(name)}</code>{' <span class=req>required</span>' if name in required else ''}</td>"
        f"<td><code>{html.escape(_type_of(prop, document))}</code></td>"
        f"<td>{html.escape(prop.get('description', ''))}</td></tr>"
        for name, prop in props.items()
    )
    return f"<table><tr><th>field</th><th>type</th><th>meaning</th></tr>{rows}</table>"


def render_docs(document: dict) -> str:
    """One HTML page: every operation with its summary, parameters, body fields and responses."""
    parts = [
        "<!doctype html><html><head><meta charset=utf-8><title>",
        html.escape(document["info"]["title"]),
        " API</title><style>",
        _STYLE,
        "</style></head><body><h1>",
        html.escape(f"{document['info']['title']} {document['info'].get('version', '')} API"),
        "</h1><p>",
        html.escape(document["info"].get("description", "")),
        ' The machine-readable document is <a href="/openapi.json">/openapi.json</a>.</p>',
    ]
    for path, operations in document.get("paths", {}).items():
        for method, op in operations.items():
            parts.append(f"<h2><span class=m>{method.upper()}</span> <code>{html.escape(path)}</code></h2>")
            if op.get("summary"):
                parts.append(f"<p><b>{html.escape(op['summary'])}</b></p>")
            if op.get("description"):
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<p>Parameters:</p><table><tr><th>name</th><th>in</th><th>type</th></tr>")
                parts += [
                    f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{html.escape(p.get('in', ''))}</td>"
                    f"<td><code>{html.escape(_type_of(p.get('schema', {}), document))}</code></td></tr>"
                    for p in params
                ]
                parts.append("</table>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                parts.append("<p>JSON body:</p>" + _fields(body, document))
            codes = ", ".join(
                f"<code>{html.escape(code)}</code> {html.escape(r.get('description', ''))}" for code, r in op.get("responses", {}).items()
            )
            parts.append(f"<p>Responses: {codes}</p>")
    parts.append("</body></html>")
    return "".join(parts)
