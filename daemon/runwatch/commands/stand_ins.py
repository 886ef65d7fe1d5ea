"""Credentials only the service can read, as a command typed on the host meets them.

Under the unit, systemd decrypts each ``LoadCredentialEncrypted=`` into ``$CREDENTIALS_DIRECTORY`` for
the service's own processes (``ExecStart=``, ``ExecReload=``). ``runwatch check`` or ``runwatch reload``
typed on the host has no such directory, so a channel whose URL or secret is a credential (``ops: {}``
with ``ops_apprise_url``) cannot be built there, and a check would refuse a config the service runs.

By hand, such a channel is built once more with a valid example value in place of the credential it
could not read (each kind's ``credential_example``, never sent anywhere): if that builds, the rest of
the block is right, and ``check`` says which credential it did not see, as a warning. The service,
which has the real value, checks it when it starts and on every reload. Under the service
(``$CREDENTIALS_DIRECTORY`` set) nothing stands in: a missing credential is the error it always was.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from runwatch.config import Config
from runwatch.credentials import read_credential
from runwatch.delivery.channel import ChannelSetupError
from runwatch.delivery.registry import KINDS, build_channel
from runwatch.yamlfile import Problem


def under_service() -> bool:
    """True when systemd handed this process the service's credentials."""
    return bool(os.environ.get("CREDENTIALS_DIRECTORY"))


@dataclass
class StandIns:
    """Reads credentials as :func:`runwatch.credentials.read_credential` does, with an example value
    for each one only the service can read."""

    examples: dict[str, str] = field(default_factory=dict)

    def __call__(self, name: str) -> str | None:
        found = read_credential(name)
        return found if found is not None else self.examples.get(name)


def stand_ins(config: Config, warnings: list[Problem]) -> StandIns:
    """What ``check`` and ``reload`` typed on the host read credentials with; one warning per channel
    checked without its credential is appended to ``warnings``."""
    out = StandIns()
    if under_service():
        return out
    for name, block in config.settings.channels.items():
        if _builds(name, block, config.base_dir, out):
            continue
        for kind in KINDS:
            credential = f"{name}_{kind.credential}"
            trial = StandIns({**out.examples, credential: kind.credential_example})
            if _builds(name, block, config.base_dir, trial):
                out.examples[credential] = kind.credential_example
                warnings.append(
                    Problem(
                        config.shown,
                        config.line_of("channels", name),
                        f"channels.{name}",
                        f"uses the credential {credential}, which only the service can read: the rest of"
                        " the channel is checked here; the service checks the credential when it starts"
                        " and on each reload",
                    )
                )
                break
    return out


def _builds(name: str, block: BaseModel, base_dir: Path, credentials: StandIns) -> bool:
    with contextlib.suppress(ChannelSetupError):
        build_channel(name, block, base_dir=base_dir, credentials=credentials).close()
        return True
    return False
