"""Delivery: the outbox's senders, one worker per channel, each send in a bounded worker thread."""

from runwatch.delivery.apprise_channel import AppriseChannel, Channel, SendFailed
from runwatch.delivery.sender import Deliverer

__all__ = ["AppriseChannel", "Channel", "Deliverer", "SendFailed"]
