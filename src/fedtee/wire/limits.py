"""Every size a peer can make the other side read, bounded in one place.

Models are streamed in chunks, so no gRPC message ever needs to hold a whole model: the gRPC
message limit only has to fit one chunk plus its envelope, and the model limit is enforced by
counting bytes as they arrive. Both channel and server get their options from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedtee.attest.model import MAX_AUX_BYTES, MAX_EVIDENCE_BYTES
from fedtee.errors import ProtocolError, Reason

MiB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class WireLimits:
    chunk_bytes: int = 1 * MiB  # data bytes in one ModelChunk / UpdateChunk
    max_model_bytes: int = 1 << 32  # one model or update, counted as it streams in
    max_evidence_bytes: int = MAX_EVIDENCE_BYTES + MAX_AUX_BYTES  # blob plus aux together
    max_metadata_bytes: int = 8 * 1024  # credential + proof of possession + timestamp
    max_challenge_aux_bytes: int = 64 * 1024  # TPM EK certificate and AK public
    max_id_len: int = 256  # client and federation ids
    max_config_entries: int = 64  # trainer hyper-parameters in a Task

    def __post_init__(self) -> None:
        if not 4096 <= self.chunk_bytes <= 4 * MiB:
            raise ValueError("chunk_bytes must be 4 KiB..4 MiB")

    @property
    def max_message_bytes(self) -> int:
        """Largest single gRPC message: the evidence request or one chunk, plus envelope."""
        return max(self.chunk_bytes, self.max_evidence_bytes) + 64 * 1024

    def grpc_options(self) -> list[tuple[str, int]]:
        """Options for both ``grpc.server`` and ``grpc.secure_channel``."""
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]


DEFAULT_LIMITS = WireLimits()


def check_size(what: str, size: int, limit: int) -> None:
    """MESSAGE_TOO_LARGE unless ``size <= limit``; call it before reading or allocating."""
    if size > limit:
        raise ProtocolError(
            f"{what} is {size} bytes; the limit is {limit}", reason=Reason.MESSAGE_TOO_LARGE
        )


__all__ = ["DEFAULT_LIMITS", "MiB", "WireLimits", "check_size"]
