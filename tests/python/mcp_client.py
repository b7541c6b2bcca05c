"""Drives `tracecov mcp` with the official MCP Python SDK, as a coding agent's client would.

Usage: mcp_client.py TRACECOV_BINARY ARG...   (the server's arguments, e.g. `mcp --data DIR`)

Starts the server over stdio, lists its tools, then calls `run_summary`, `failures` (a first page
of one and the rest), `bug_report` of the first failure (JSON and Markdown), `untested`, `trace`
of the first failure (and of MCP_SECRET_TRACE when set), `failures` of a run that does not
exist, `bug_report` of a malformed trace id, then `list_runs`, `diff` from the oldest run to
the latest, and `flaky`. Prints one JSON object with
what each call answered, for the Rust test to check against the JSON report.
"""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def answer(result):
    """The text of a tool result and whether it is a tool error."""
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return {"is_error": bool(result.is_error), "text": "\n".join(texts)}


def parsed(result):
    a = answer(result)
    if a["is_error"]:
        raise SystemExit(f"tool error: {a['text']}")
    return json.loads(a["text"])


async def main(binary, args):
    params = StdioServerParameters(command=binary, args=args)
    out = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["server"] = init.server_info.name
            tools = await session.list_tools()
            out["tools"] = {t.name: t.description for t in tools.tools}
            out["summary"] = parsed(await session.call_tool("run_summary", {}))
            first = parsed(await session.call_tool("failures", {"run": "latest", "limit": 1}))
            out["failures_first_page"] = first
            rest = parsed(
                await session.call_tool("failures", {"run": "latest", "offset": 1, "limit": 200})
            )
            out["failures"] = first["failures"] + rest["failures"]
            f = first["failures"][0]
            out["bug_json"] = parsed(
                await session.call_tool(
                    "bug_report",
                    {"trace_id": f["trace_id"], "span_id": f["span_id"], "format": "json"},
                )
            )
            out["bug_markdown"] = answer(
                await session.call_tool("bug_report", {"trace_id": f["trace_id"]})
            )
            out["untested"] = parsed(await session.call_tool("untested", {"limit": 200}))
            out["trace"] = parsed(
                await session.call_tool("trace", {"trace_id": f["trace_id"], "limit": 200})
            )
            out["unknown_run"] = answer(
                await session.call_tool("failures", {"run": "no-such-run"})
            )
            out["bad_trace"] = answer(
                await session.call_tool("bug_report", {"trace_id": "not-hex"})
            )
            secret = os.environ.get("MCP_SECRET_TRACE")
            if secret:
                out["secret_trace"] = parsed(await session.call_tool("trace", {"trace_id": secret}))
            # The server still answers after the errors.
            out["runs"] = parsed(await session.call_tool("list_runs", {}))
            oldest = out["runs"]["runs"][-1]["id"]
            out["diff"] = parsed(await session.call_tool("diff", {"base": oldest}))
            out["flaky"] = parsed(await session.call_tool("flaky", {}))
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
