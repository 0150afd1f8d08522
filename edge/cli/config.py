"""``edge config``: check, show and describe (JSON Schema) the configuration."""

from __future__ import annotations

import json

import click

from edge.cli.common import config_option, emit, json_option, load
from edge.config.schema import SCHEMA_DIALECT, SCHEMA_TITLE, config_schema_text
from edge.pairing.store import redact_url
from edge.serialize import camel_keys


@click.group("config")
def config_group() -> None:
    """Inspect the configuration.

    \b
    Example:
      edge config check -c /etc/edge/edge.yaml
      edge config schema > edge.schema.json
    """


@config_group.command("check")
@config_option
@json_option
def check(config_path: str | None, as_json: bool) -> None:
    """Validate the configuration; print one line per problem (exit 2) or a summary.

    \b
    Example:
      edge config check -c /etc/edge/edge.yaml
    """
    settings = load(config_path)
    store = redact_url(settings.store.url) if settings.store.url else "sqlite in data_dir"
    if as_json:
        emit(
            {
                "ok": True,
                "source": settings.source,
                "bind": {
                    "host": settings.server.host,
                    "port": settings.server.port,
                    "workers": settings.server.workers,
                },
                "dataDir": str(settings.data_dir),
                "trustedProxies": list(settings.proxy.trusted_proxies),
                "clientIpHeaders": list(settings.proxy.client_ip_headers),
                "localNetworks": list(settings.local.networks),
                "store": store,
                "upstreams": [u.host or u.path_prefix for u in settings.upstreams],
            }
        )
        return
    click.echo(f"configuration OK: {settings.source or 'built-in defaults'}")
    click.echo(
        f"  bind        {settings.server.host}:{settings.server.port} x{settings.server.workers}"
    )
    click.echo(f"  data_dir    {settings.data_dir}")
    click.echo(f"  trusted     {', '.join(settings.proxy.trusted_proxies) or 'none'}")
    click.echo(f"  headers     {', '.join(settings.proxy.client_ip_headers)}")
    click.echo(f"  local nets  {', '.join(settings.local.networks) or 'none'}")
    click.echo(f"  store       {store}")
    upstreams = ", ".join(u.host or u.path_prefix for u in settings.upstreams)
    click.echo(f"  upstreams   {upstreams or 'none'}")


@config_group.command("show")
@config_option
@json_option
def show(config_path: str | None, as_json: bool) -> None:
    """Print the effective configuration (secrets masked).

    Without --json it is the configuration under its own names (proxy.trusted_proxies),
    which is also valid YAML for a configuration file; --json gives the same
    settings with camelCase keys (proxy.trustedProxies), like every other --json.

    \b
    Example:
      edge config show -c /etc/edge/edge.yaml > effective.yaml
    """
    settings = load(config_path)
    data = settings.model_dump(mode="json")
    if data["auth"].get("token"):
        data["auth"]["token"] = "***"
    if data["metrics"].get("bearer_token"):
        data["metrics"]["bearer_token"] = "***"
    for hook in data.get("notify", {}).get("webhooks", []):
        hook["secret"] = "***"
    if data["store"].get("url"):
        data["store"]["url"] = redact_url(data["store"]["url"])
    if as_json:
        emit({"source": settings.source, "settings": camel_keys(data)})
    else:
        click.echo(json.dumps(data, indent=2))


@config_group.command("schema")
@json_option
def schema(as_json: bool) -> None:
    """Print the JSON Schema of a configuration file.

    The schema is JSON already, under the file's own key names; point an editor or
    a CI check at it to validate a file before a gateway reads it
    (docs/edge.schema.json is the same text). The rules across keys are checked by
    `edge config check`. With --json, like every --json, the document has camelCase
    keys only, so the schema is in it as text: `edge config schema --json | jq -r .schema`.

    \b
    Example:
      edge config schema > edge.schema.json
    """
    text = config_schema_text()
    if as_json:
        emit({"dialect": SCHEMA_DIALECT, "title": SCHEMA_TITLE, "schema": text})
    else:
        click.echo(text, nl=False)


__all__ = ["config_group"]
