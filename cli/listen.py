"""`saas-llm webhooks listen`: receive webhooks locally, verify them and print them (like
`stripe listen`)."""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from saas_llm_client import WebhookVerificationError, verify_webhook


def summary(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    usage = data.get("usage") or {}
    return (
        f"{event.get('type')} {data.get('id', '')} status={data.get('status', '')} "
        f"tokens={usage.get('total_tokens', '')} cost_usd={data.get('cost_usd', '')}"
    )


def serve(host: str, port: int, secret: str, *, full: bool = False) -> None:
    """Answer 204 to verified webhooks (printing them), 400 to anything else."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                event = verify_webhook(body, dict(self.headers.items()), secret)
            except (WebhookVerificationError, ValueError) as exc:
                print(f"rejected: {exc}", flush=True)
                self.send_response(400)
                self.end_headers()
                return
            msg_id = self.headers.get("webhook-id", "")
            print(f"verified {msg_id} {summary(event)}", flush=True)
            if full:
                print(json.dumps(event, indent=2), flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"listening on http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print("stopped", file=sys.stderr)
