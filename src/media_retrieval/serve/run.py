"""``media-retrieval serve``: read the config, build the app, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging

from omegaconf import DictConfig, OmegaConf

from media_retrieval.errors import ConfigError
from media_retrieval.utils.limits import limits

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from_config(cfg: DictConfig):  # noqa: ANN201 - ServiceSettings (imported late: fastapi)
    from media_retrieval.serve.app import ServiceSettings  # noqa: PLC0415 - serve.app (and what it loads) stays unloaded until used

    hosts = cfg.get("allowed_hosts") or []
    if isinstance(hosts, str):
        hosts = [hosts]
    host = str(cfg.host)
    return ServiceSettings(
        index_dir=str(cfg.index_dir),
        workers=int(cfg.workers),
        queue=int(cfg.queue),
        queue_timeout_s=float(cfg.queue_timeout_s),
        max_upload_mb=float(cfg.max_upload_mb),
        max_k=int(cfg.max_k),
        token=cfg.get("token") or None,
        trusted=OmegaConf.select(cfg, "index.trusted", default="auto"),
        decoder=cfg.get("decoder"),
        max_uploads=int(cfg.get("max_uploads", 4)),
        max_spool_mb=float(cfg.get("max_spool_mb", 400)),
        upload_timeout_s=float(cfg.get("upload_timeout_s", 120)),
        allowed_hosts=tuple(str(h) for h in hosts)
        + ((host,) if host not in ("0.0.0.0", "::") else ()),
        milvus_uri=OmegaConf.select(cfg, "index.options.milvus_uri", default=None),
        rankings=tuple(str(r) for r in cfg.rankings),
    )


def serve(cfg: DictConfig) -> None:
    import uvicorn  # noqa: PLC0415 - uvicorn stays unloaded until used

    from media_retrieval.serve.app import create_app  # noqa: PLC0415 - serve.app (and what it loads) stays unloaded until used
    from media_retrieval.serve.connections import (  # noqa: PLC0415 - serve.connections (and what it loads) stays unloaded until used
        accept_backlog,
        guarded_protocol,
        usable_connections,
    )

    if not cfg.get("index_dir"):
        raise ConfigError("index_dir=... is required (an index written by `media-retrieval index`)")
    host = str(cfg.host)
    if not is_loopback(host) and not cfg.get("token") and not cfg.get("allow_unauthenticated"):
        raise ConfigError(
            f"host={host} exposes the service beyond this machine: set token=... (or "
            "MEDIA_RETRIEVAL_TOKEN), or allow_unauthenticated=true if the network is trusted"
        )
    port = cfg.port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"port={port!r} must be an integer in 0..65535")
    max_connections = int(cfg.get("max_connections") or limits().max_connections)
    header_timeout_s = float(cfg.get("header_timeout_s") or limits().header_timeout_s)
    if max_connections < 1 or header_timeout_s <= 0:
        raise ConfigError("serve: max_connections >= 1 and header_timeout_s > 0 are required")
    app = create_app(settings_from_config(cfg))
    log.info(
        "serving %s (%d items) on http://%s:%d",
        cfg.index_dir,
        len(app.state.index.segments),
        host,
        port,
    )
    connections = usable_connections(max_connections)
    # log_config=None: uvicorn's dictConfig would close Hydra's handlers (serve.log), see
    # connections.py
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=str(cfg.log_level),
        log_config=None,
        backlog=accept_backlog(connections),
        http=guarded_protocol(connections, header_timeout_s),
        limit_concurrency=connections,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
    )
