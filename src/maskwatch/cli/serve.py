"""``maskwatch serve``: the HTTP API and the web page, hooked into the main command by ``add_command``."""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from maskwatch.cli.common import add_model_options, build_detector

API_KEY_ENV = "MASKWATCH_API_KEY"


def add_command(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve", help="run the HTTP API and the web page",
        description="Serve POST /v1/detect, the web page at /, /docs, /healthz, /readyz and /metrics.",
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="requests analysed at once (default: the number of CPU cores)")
    serve.add_argument("--threads-per-worker", type=int, default=1, metavar="N",
                       help="CPU threads per analysis (default 1: the workers already fill the cores)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, metavar="MB",
                       help="refuse uploads larger than this (default 20)")
    serve.add_argument("--read-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="answer 408 to a client whose upload takes longer than this (default 30)")
    serve.add_argument("--header-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="close a connection that sends no complete request headers within this long of "
                            "opening or of its last answer, idle keep-alive ones included (default 10)")
    serve.add_argument("--max-connections", type=int, default=200, metavar="N",
                       help="open connections at most; past it, the one waiting longest without a complete "
                            "request is closed (default 200)")
    serve.add_argument("--queue-limit", type=int, default=32, metavar="N",
                       help="requests that may wait for a worker before new ones get 503 (default 32)")
    serve.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None,
                       help=f"require this key for /v1/* (default: ${API_KEY_ENV}; prefer the variable, "
                            "as arguments show in process lists)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="let pages from this origin call the API, e.g. https://example.org "
                            "(repeatable; default: no cross-origin access)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"])
    add_model_options(serve)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    problem = _check_args(args)
    if problem:
        print(f"maskwatch serve: {problem}", file=sys.stderr)
        return 2
    try:
        import uvicorn

        from maskwatch.web.app import MB, ServerConfig, create_app
    except ImportError as exc:
        print(f"maskwatch serve: {exc.name} is missing; install the web extra: pip install 'maskwatch[web]'",
              file=sys.stderr)
        return 2
    from maskwatch.model_files import describe_load_error, model_load_errors
    from maskwatch.web.connections import guarded_protocol

    try:
        detector = build_server_detector(args)  # once, before the port opens: a bad model fails here
    except model_load_errors() as exc:
        print(f"maskwatch serve: cannot load the models: {describe_load_error(exc)}", file=sys.stderr)
        return 2
    config = ServerConfig(
        max_upload_bytes=int(args.max_upload_mb * MB), api_key=args.api_key,
        cors_origins=tuple(args.cors_origin), workers=args.workers, queue_limit=args.queue_limit,
        read_timeout=args.read_timeout,
    )
    app = create_app(detector, config)
    # The app answers 408 at --read-timeout; the protocol closes a body still open 5 s later (a route
    # that never reads its body), and guards the headers and the number of connections (web/connections.py).
    protocol = guarded_protocol(args.header_timeout, args.read_timeout + 5.0, args.max_connections)
    settings = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, server_header=False,
                              http=protocol, ws="none", timeout_keep_alive=5)

    def announce(port: int) -> None:  # once the port is ours: --port 0 gives the one the system chose
        print(f"maskwatch: serving on http://{_url_host(args.host)}:{port}/ with {args.workers} inference "
              f"worker(s){', API key required' if args.api_key else ''}", file=sys.stderr, flush=True)

    if not _run_server(settings, announce):
        print(f"maskwatch serve: cannot listen on {_url_host(args.host)}:{args.port} (the reason is above)",
              file=sys.stderr)
        return 2
    return 0


def _run_server(settings: Any, announce: Callable[[int], None]) -> bool:  # (uvicorn.Config, ...)
    """Serve until stopped (Ctrl-C or SIGTERM: a clean end, no traceback); False if the port could not be had.

    uvicorn binds every address the host resolves to (IPv4 and IPv6); ``announce`` gets the port after that.
    """
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                announce(next(s.getsockname()[1] for server in self.servers for s in server.sockets or ()))

    server = AnnouncingServer(settings)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises the signal again after its graceful shutdown (as uvicorn.run)
        pass
    except SystemExit:  # uvicorn's own exit when it cannot bind; it has logged why
        if server.started:
            raise
        return False
    return True


def build_server_detector(args: argparse.Namespace):  # -> MaskDetector
    """The CLI's detector, but with each request's inference on ``--threads-per-worker`` threads.

    The pool already runs one request per core; letting OpenCV and onnxruntime also spread each
    request over every core oversubscribes the CPU. Measured with benchmarks/load.py on 2 cores,
    4 clients: 14 requests/s with one thread per request against 9 with the libraries' defaults.
    """
    import cv2

    cv2.setNumThreads(args.threads_per_worker)  # process-wide, and this process only serves
    return build_detector(args)  # options_from_args passes --threads-per-worker to the classifier


def _check_args(args: argparse.Namespace) -> str | None:
    if not 0 <= args.port <= 65535:
        return f"--port {args.port} is not a port number"
    if args.workers < 1 or args.threads_per_worker < 1:
        return "--workers and --threads-per-worker must be at least 1"
    if args.queue_limit < 0:
        return "--queue-limit cannot be negative"
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):
        return "--max-upload-mb must be a finite positive number"
    if not (math.isfinite(args.read_timeout) and args.read_timeout > 0):
        return "--read-timeout must be a finite positive number of seconds"
    if not (math.isfinite(args.header_timeout) and args.header_timeout > 0):
        return "--header-timeout must be a finite positive number of seconds"
    if args.max_connections < 1:
        return "--max-connections must be at least 1"
    if args.api_key is not None and not args.api_key.strip():
        return "--api-key is empty"
    return None


def _url_host(host: str) -> str:
    """``host`` as a URL writes it: IPv6 in brackets; "" (every interface) as 0.0.0.0, as uvicorn says it."""
    return f"[{host}]" if ":" in host else host or "0.0.0.0"
