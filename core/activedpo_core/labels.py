"""What both programs say about a submitted label: the server's store returns it, the gRPC service sends it as
``activedpo.v1.LabelResult``, and the client reads it back as the same type (one name on both sides of the wire)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelResult:
    """One submitted label's outcome: accepted (new, a replay of one held, or a revision) or refused, and why."""

    pair_id: str
    accepted: bool
    reason: str = ""  # why it was refused
    label_id: int = 0
    late: bool = False  # its pair's lease had expired (kept: paid work is never dropped)
    replayed: bool = False  # the server held this answer under its key already: nothing new written
    revised: bool = False  # replaced (or withdrew) the answer recorded under its key
