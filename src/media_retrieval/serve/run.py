"""``media-retrieval serve``: read the config, build the app, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging

from omegaconf import DictConfig, OmegaConf

from media_retrieval.errors import ConfigError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg: DictConfig) -> None:
    import uvicorn

    from media_retrieval.serve.app import ServiceSettings, create_app

    if not cfg.get("index_dir"):
        raise ConfigError("index_dir=... is required (an index written by `media-retrieval index`)")
    host = str(cfg.host)
    if not is_loopback(host) and not cfg.get("token") and not cfg.get("allow_unauthenticated"):
        raise ConfigError(f"host={host} exposes the service beyond this machine: set token=... (or "
                          "MEDIA_RETRIEVAL_TOKEN), or allow_unauthenticated=true if the network is trusted")
    settings = ServiceSettings(index_dir=str(cfg.index_dir), workers=int(cfg.workers), queue=int(cfg.queue),
                               queue_timeout_s=float(cfg.queue_timeout_s), max_upload_mb=float(cfg.max_upload_mb),
                               max_k=int(cfg.max_k), token=cfg.get("token") or None,
                               trusted=OmegaConf.select(cfg, "index.trusted", default="auto"), decoder=str(cfg.decoder))
    app = create_app(settings)
    log.info("serving %s (%d items) on http://%s:%d", cfg.index_dir, len(app.state.index.segments), host, cfg.port)
    uvicorn.run(app, host=host, port=int(cfg.port), log_level=str(cfg.log_level))
