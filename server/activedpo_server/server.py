"""Building and running the gRPC server: health, reflection, bearer-token auth, TLS, limits.

``build_server(config, engine)`` returns a started-ready ``(server, port)``; tests call it with
port 0. ``serve(config)`` runs until SIGTERM/SIGINT, then stops accepting, lets in-flight RPCs
finish for ``grace`` seconds and closes the state database.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from activedpo.v1 import selector_pb2
from activedpo_server.engine import Engine
from activedpo_server.errors import status_for
from activedpo_server.service import SelectorService, add_to_server

log = logging.getLogger(__name__)

SERVICE_NAME = selector_pb2.DESCRIPTOR.services_by_name["Selector"].full_name  # "activedpo.v1.Selector"
MAX_MESSAGE_BYTES = 64 << 20  # one AddCandidates item or one SelectBatch reply; streams are unbounded


@dataclass(frozen=True)
class ServerConfig:
    """Where and how the server listens."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 50051  # 0 picks a free port
    token: str | None = None  # bearer token required on every RPC but health
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # also require client certificates signed by this CA
    max_message_bytes: int = MAX_MESSAGE_BYTES
    grace: float = 10.0  # seconds in-flight RPCs get on shutdown

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        for p in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if p is not None and not Path(p).is_file():
                raise ValueError(f"TLS file not found: {p}")


def _reject(code: grpc.StatusCode, message: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as ``handler`` that aborts with ``code``."""

    async def unary(request, context):
        await context.abort(code, message)

    async def streaming(request, context):
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming)
    return grpc.unary_unary_rpc_method_handler(unary)


class ErrorMapping(grpc.aio.ServerInterceptor):
    """The one error path: whatever a Selector handler raises becomes a status code and one line.

    Domain errors carry their code (:mod:`activedpo_server.errors`); a full disk is
    RESOURCE_EXHAUSTED; anything unforeseen is INTERNAL with its type only (the traceback goes to
    the log), so no bad input can make the server answer UNKNOWN or echo a traceback.
    """

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not details.method.startswith(f"/{SERVICE_NAME}/"):
            return handler

        async def fail(context, e: BaseException):
            code, message = status_for(e)
            if code == "INTERNAL":
                log.error("%s failed", details.method, exc_info=e)
            await context.abort(getattr(grpc.StatusCode, code), message)

        def wrap_unary(fn):
            async def call(request, context):
                try:
                    return await fn(request, context)
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as e:
                    await fail(context, e)

            return call

        def wrap_streaming(fn):
            async def call(request, context):
                try:
                    async for item in fn(request, context):
                        yield item
                except (grpc.aio.AbortError, asyncio.CancelledError):
                    raise
                except Exception as e:
                    await fail(context, e)

            return call

        kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(wrap_streaming(handler.stream_stream), **kw)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary), **kw)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(wrap_streaming(handler.unary_stream), **kw)
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), **kw)


class TokenAuth(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every RPC except gRPC health checks."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.v1.Health/"):
            return await continuation(details)
        got = dict(details.invocation_metadata or ()).get("authorization", "")
        got = got.encode() if isinstance(got, str) else got
        handler = await continuation(details)
        if handler is None:
            return None
        if not got:
            return _reject(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token (authorization metadata)", handler)
        if not hmac.compare_digest(got, self._expected):
            return _reject(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token", handler)
        return handler


def build_server(config: ServerConfig, engine: Engine) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """The server with the Selector, health and reflection services, bound but not started."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    interceptors = ([TokenAuth(config.token)] if config.token else []) + [ErrorMapping()]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    add_to_server(SelectorService(engine), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    address = f"{config.host}:{config.port}"
    if config.tls_cert is not None:
        creds = grpc.ssl_server_credentials(
            [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())],
            root_certificates=Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None,
            require_client_auth=config.tls_client_ca is not None,
        )
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port, health_servicer


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop when the parent process is gone (an embedded server must not outlive its client)."""
    import os

    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("parent process %d is gone; shutting down", parent)
            stop.set()
        await asyncio.sleep(0.5)


async def serve(config: ServerConfig, engine: Engine, ready=None, exit_with_parent: bool = False) -> None:
    """Run until SIGTERM or SIGINT; ``ready(port)`` is called once the server accepts calls."""
    import os

    parent = os.getppid()
    server, port, health_servicer = build_server(config, engine)
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("activedpo-server listening on %s:%d", config.host, port)
    if ready:
        ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.ensure_future(_watch_parent(parent, stop)) if exit_with_parent else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    log.info("shutting down: finishing in-flight calls (up to %.0f s)", config.grace)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(config.grace)
    engine.store.close()
