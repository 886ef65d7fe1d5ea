"""Every channel kind runwatch knows, in one place: adding a kind is its module plus one line here.

The config's channel block is built from the kinds' own keys (:func:`channel_fields`), and
:func:`build_channel` picks the kind a block uses (or the one a credential file stands in for).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from runwatch.credentials import read_credential
from runwatch.delivery.apprise import AppriseKind
from runwatch.delivery.channel import Channel, ChannelKind, ChannelSetupError
from runwatch.delivery.webhook import WebhookKind

KINDS: tuple[ChannelKind, ...] = (AppriseKind(), WebhookKind())


def channel_fields() -> dict[str, tuple[Any, Any]]:
    """The keys every kind adds to a channel block, for the config model."""
    out: dict[str, tuple[Any, Any]] = {}
    for kind in KINDS:
        out.update(kind.config_fields())
    return out


def build_channel(
    name: str,
    block: BaseModel,
    *,
    base_dir: Path,
    credentials: Callable[[str], str | None] = read_credential,
) -> Channel:
    """The channel a config block describes; ChannelSetupError(field, message) if it cannot work.

    ``credentials`` reads ``<channel>_<kind credential>`` (``runwatch check`` by hand passes one that
    stands in for what only the service can read: :mod:`runwatch.commands.stand_ins`).
    """
    used = [k for k in KINDS if k.configured(block)]
    if len(used) > 1:
        raise ChannelSetupError(
            used[1].name, f"a channel has one kind; this one gives {' and '.join(k.name for k in used)}"
        )
    if used:
        kind = used[0]
        return kind.build(name, block, base_dir=base_dir, credential=credentials(f"{name}_{kind.credential}"))
    for kind in KINDS:
        if not kind.credential_alone:
            continue
        credential = credentials(f"{name}_{kind.credential}")
        if credential is not None:
            return kind.build(name, block, base_dir=base_dir, credential=credential)
    keys = ", ".join(f"{k.name}:" for k in KINDS)
    files = ", ".join(f"{name}_{k.credential}" for k in KINDS)
    raise ChannelSetupError(
        KINDS[0].name, f"no channel kind given: set one of {keys} (or a credential file {files})"
    )
