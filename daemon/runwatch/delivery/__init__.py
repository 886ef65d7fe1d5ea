"""Delivery: the outbox's senders, one worker per channel, behind one channel seam.

``channel.py`` is the seam (``send(alert) -> Delivered | Retry | Permanent``), ``registry.py`` lists the
kinds (``apprise.py``, ``webhook.py``), ``worker.py`` sends one channel's queue, ``deliverer.py`` runs
them all, ``policy.py`` holds per-channel rate, retries and TTL.

May import: the basics, ``store`` (the outbox it drains) and ``pipeline`` (the silences' muter, checked
again at send time). Only ``service``, ``config`` and ``commands`` import it.
"""

from runwatch.delivery.channel import Channel, Delivered, Outcome, Permanent, Retry
from runwatch.delivery.deliverer import Deliverer

__all__ = ["Channel", "Delivered", "Deliverer", "Outcome", "Permanent", "Retry"]
